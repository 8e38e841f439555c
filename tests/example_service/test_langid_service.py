"""Tests for the example circle's language identifier: trainer, pure model and HTTP service.

Everything runs for real: train.py and the service are started as subprocesses with the same
interpreter, and the service is called over a loopback socket. Every wait has a timeout and
every process is killed in a ``finally``, so a hung service fails the test instead of hanging.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
MODEL_DIR = REPO / "example-circle-repo" / "src" / "model"
INFERENCE_DIR = REPO / "example-circle-repo" / "src" / "inference"
TRAIN_SCRIPT = MODEL_DIR / "train.py"
CORPUS_DIR = MODEL_DIR / "corpus"
COMMITTED_MODEL = MODEL_DIR / "langid-model.json"
RETRAIN_COMMAND = f"python {TRAIN_SCRIPT.relative_to(REPO)}"

PROCESS_TIMEOUT_S = 60.0
STARTUP_TIMEOUT_S = 20.0
HTTP_TIMEOUT_S = 10.0


def _import_quietly(name: str, path: Path) -> ModuleType:
    # The example circle's sources are build inputs; the tests must not leave __pycache__
    # folders in them.
    previous = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        spec = importlib.util.spec_from_file_location(
            name, path, submodule_search_locations=[] if path.name == "__init__.py" else None
        )
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        if name == "langid_service":
            importlib.import_module("langid_service.model")
        return module
    finally:
        sys.dont_write_bytecode = previous


if str(INFERENCE_DIR) not in sys.path:
    sys.path.insert(0, str(INFERENCE_DIR))
_import_quietly("langid_service", INFERENCE_DIR / "langid_service" / "__init__.py")
train = _import_quietly("langid_train", TRAIN_SCRIPT)

from langid_service.model import (  # noqa: E402 - importable only once the path is set
    UNDETERMINED,
    LangidModel,
    load_model,
    ngrams,
)

LANGUAGES = ("de", "en", "es", "fr", "it", "nl")

# Sentences written for these tests only; test_held_out_sentences_are_not_in_corpus keeps
# them out of the training text.
HELD_OUT: dict[str, tuple[str, ...]] = {
    "en": (
        "The kitchen window looks out over a quiet street.",
        "Tomorrow we are going to the cinema with our cousins.",
        "Why did nobody tell me that the shop was closed?",
        "She carried the heavy box up to the third floor.",
        "My friends prefer walking in the forest to sitting in a café.",
        "The engine made a strange noise, so we stopped at a garage.",
        "Which of these two jackets do you like better?",
        "Grandfather told us funny stories every evening by the fire.",
    ),
    "de": (
        "Das Küchenfenster geht auf eine ruhige Straße hinaus.",
        "Morgen gehen wir mit unseren Cousins ins Kino.",
        "Warum hat mir niemand gesagt, dass der Laden geschlossen war?",
        "Sie trug die schwere Kiste bis in den dritten Stock.",
        "Meine Freunde gehen lieber im Wald spazieren, als im Café zu sitzen.",
        "Der Motor machte ein seltsames Geräusch, also hielten wir an einer Werkstatt.",
        "Welche von diesen beiden Jacken gefällt dir besser?",
        "Großvater erzählte uns jeden Abend am Feuer lustige Geschichten.",
    ),
    "fr": (
        "La fenêtre de la cuisine donne sur une rue tranquille.",
        "Demain nous allons au cinéma avec nos cousins.",
        "Pourquoi personne ne m'a dit que le magasin était fermé ?",
        "Elle a porté la lourde caisse jusqu'au troisième étage.",
        "Mes amis préfèrent se promener en forêt plutôt que de rester assis au café.",
        "Le moteur faisait un bruit étrange, alors nous nous sommes arrêtés dans un garage.",
        "Laquelle de ces deux vestes préfères-tu ?",
        "Grand-père nous racontait des histoires drôles chaque soir au coin du feu.",
    ),
    "es": (
        "La ventana de la cocina da a una calle tranquila.",
        "Mañana vamos al cine con nuestros primos.",
        "¿Por qué nadie me dijo que la tienda estaba cerrada?",
        "Ella subió la caja pesada hasta el tercer piso.",
        "Mis amigos prefieren pasear por el bosque a quedarse sentados en un café.",
        "El motor hacía un ruido extraño, así que paramos en un taller.",
        "¿Cuál de estas dos chaquetas te gusta más?",
        "El abuelo nos contaba historias divertidas cada noche junto al fuego.",
    ),
    "nl": (
        "Het keukenraam kijkt uit op een rustige straat.",
        "Morgen gaan we met onze neven naar de bioscoop.",
        "Waarom heeft niemand me verteld dat de winkel dicht was?",
        "Ze droeg de zware doos naar de derde verdieping.",
        "Mijn vrienden wandelen liever in het bos dan dat ze in een café zitten.",
        "De motor maakte een vreemd geluid, dus stopten we bij een garage.",
        "Welke van deze twee jassen vind jij mooier?",
        "Opa vertelde ons elke avond bij het vuur grappige verhalen.",
    ),
    "it": (
        "La finestra della cucina dà su una strada tranquilla.",
        "Domani andiamo al cinema con i nostri cugini.",
        "Perché nessuno mi ha detto che il negozio era chiuso?",
        "Ha portato la scatola pesante fino al terzo piano.",
        "I miei amici preferiscono passeggiare nel bosco piuttosto che stare seduti al bar.",
        "Il motore faceva un rumore strano, così ci siamo fermati da un meccanico.",
        "Quale di queste due giacche ti piace di più?",
        "Il nonno ci raccontava storie divertenti ogni sera accanto al fuoco.",
    ),
}
HELD_OUT_CASES = [
    pytest.param(language, sentence, id=f"{language}-{index}")
    for language, sentences in HELD_OUT.items()
    for index, sentence in enumerate(sentences)
]


def _subprocess_env(**overrides: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"MODEL_PATH", "HOST", "PORT", "API_KEY_FILE", "PYTHONPATH"}
    }
    env["PYTHONPATH"] = str(INFERENCE_DIR)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(overrides)
    return env


@pytest.fixture(scope="module")
def model() -> LangidModel:
    return load_model(COMMITTED_MODEL.read_bytes())


# --- trainer ---------------------------------------------------------------------------------

TRAINING_ENVIRONMENTS = [
    pytest.param({"PYTHONHASHSEED": "0", "TZ": "UTC", "LC_ALL": "C"}, id="hashseed0-utc-c"),
    pytest.param(
        {"PYTHONHASHSEED": "2718", "TZ": "Pacific/Chatham", "LC_ALL": "tr_TR.UTF-8"},
        id="hashseed2718-chatham-tr",
    ),
    pytest.param(
        {"PYTHONHASHSEED": "random", "TZ": "America/St_Johns", "LC_ALL": "C.UTF-8"},
        id="random-stjohns-cutf8",
    ),
]


def _run_trainer(out: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TRAIN_SCRIPT), "--out", str(out), *extra],
        env=_subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
        check=False,
    )


@pytest.mark.parametrize("env", TRAINING_ENVIRONMENTS)
def test_trainer_output_is_byte_identical_to_committed_model(
    tmp_path: Path, env: dict[str, str]
) -> None:
    outputs = []
    for attempt in ("first", "second"):
        out = tmp_path / f"{attempt}.json"
        result = _run_trainer(out, env)
        assert result.returncode == 0, result.stderr
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1], "two runs of train.py gave different bytes"
    assert outputs[0] == COMMITTED_MODEL.read_bytes(), (
        f"{COMMITTED_MODEL.name} is stale; regenerate it with: {RETRAIN_COMMAND}"
    )
    assert not list(tmp_path.glob(".*")), "train.py left a temporary file behind"


def test_trainer_defaults_are_relative_to_its_folder(tmp_path: Path) -> None:
    copy = tmp_path / "model"
    (copy / "corpus").mkdir(parents=True)
    for source in CORPUS_DIR.glob("*.txt"):
        (copy / "corpus" / source.name).write_bytes(source.read_bytes())
    (copy / "train.py").write_bytes(TRAIN_SCRIPT.read_bytes())
    result = subprocess.run(
        [sys.executable, "model/train.py"],
        cwd=tmp_path,
        env=_subprocess_env(),
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (copy / "langid-model.json").read_bytes() == COMMITTED_MODEL.read_bytes()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        pytest.param({"english.txt": "Hello there.\n"}, "language code", id="bad-file-name"),
        pytest.param({"en.txt": "# only a comment\n\n"}, "no sentences", id="empty-language"),
        pytest.param({"en.txt": "Hello there.\n"}, "at least 2 languages", id="one-language"),
    ],
)
def test_trainer_refuses_bad_corpus(tmp_path: Path, files: dict[str, str], message: str) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name, text in files.items():
        (corpus / name).write_text(text, encoding="utf-8")
    out = tmp_path / "model.json"
    result = _run_trainer(out, {}, "--corpus", str(corpus))
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert not out.exists()


def test_trainer_and_service_extract_the_same_ngrams() -> None:
    texts = [
        line
        for path in sorted(CORPUS_DIR.glob("*.txt"))
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
    texts += [sentence for sentences in HELD_OUT.values() for sentence in sentences]
    texts += ["", "  42 -- !!", "İSTANBUL Straße ÉTÉ", "e\u0301te\u0301", "snake_case words"]
    for text in texts:
        assert train.ngrams(text, 1, 3) == ngrams(text, 1, 3), text


def test_model_file_is_small_and_canonical() -> None:
    data = COMMITTED_MODEL.read_bytes()
    assert len(data) < 300 * 1024
    document = json.loads(data)
    assert data.endswith(b"}\n")
    assert document["format"] == "langid-nb/1"
    assert document["languages"] == list(LANGUAGES)
    assert document["ngram"] == [1, 3]


def test_held_out_sentences_are_not_in_corpus() -> None:
    corpus_lines = {
        line.strip()
        for path in CORPUS_DIR.glob("*.txt")
        for line in path.read_text(encoding="utf-8").splitlines()
    }
    leaked = [s for sentences in HELD_OUT.values() for s in sentences if s in corpus_lines]
    assert leaked == []
    assert all(len(sentences) >= 3 for sentences in HELD_OUT.values())


# --- pure model ------------------------------------------------------------------------------


def test_ngrams_are_lowercased_padded_and_skip_non_letters() -> None:
    assert ngrams("Ab 12!", 1, 3) == {"a": 1, "b": 1, " a": 1, "ab": 1, "b ": 1, " ab": 1, "ab ": 1}
    # Composed and decomposed accents must give the same features.
    assert ngrams("\u00e9t\u00e9", 1, 3) == ngrams("e\u0301te\u0301", 1, 3)


@pytest.mark.parametrize(("language", "sentence"), HELD_OUT_CASES)
def test_model_predicts_held_out_sentence(model: LangidModel, language: str, sentence: str) -> None:
    prediction = model.predict(sentence)
    assert prediction.language == language, prediction.scores


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("Hallo", id="one-word"),
        pytest.param("The cat sleeps.", id="short"),
        pytest.param("la " * 5000, id="long-repetitive"),
        pytest.param("xqzvk", id="odd-letters"),
        pytest.param("English und Deutsch et français", id="mixed"),
    ],
)
def test_scores_are_probabilities_summing_to_one(model: LangidModel, text: str) -> None:
    prediction = model.predict(text)
    assert list(prediction.scores) == list(LANGUAGES)
    assert all(0.0 <= value <= 1.0 for value in prediction.scores.values())
    assert math.fsum(prediction.scores.values()) == pytest.approx(1.0, abs=1e-9)
    assert prediction.language == max(prediction.scores, key=prediction.scores.__getitem__)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("   \n\t", id="whitespace"),
        pytest.param("12345 !?", id="digits-punctuation"),
        pytest.param("日本語", id="unknown-script"),
    ],
)
def test_text_without_known_ngrams_is_undetermined_with_prior_scores(
    model: LangidModel, text: str
) -> None:
    prediction = model.predict(text)
    assert prediction.language == UNDETERMINED
    assert prediction.scores == dict.fromkeys(LANGUAGES, pytest.approx(1 / len(LANGUAGES)))
    assert model.predict(text) == prediction


def test_model_records_digest_and_size(model: LangidModel) -> None:
    data = COMMITTED_MODEL.read_bytes()
    assert model.sha256 == hashlib.sha256(data).hexdigest()
    assert model.size_bytes == len(data)


def _minimal_model(**changes: Any) -> bytes:
    document: dict[str, Any] = {
        "format": "langid-nb/1",
        "languages": ["de", "en"],
        "ngram": [1, 3],
        "priors": {"de": math.log(0.5), "en": math.log(0.5)},
        "logprob": {"de": {"ch": -1.0}, "en": {"th": -1.0}},
        "unseen": {"de": -5.0, "en": -5.0},
    }
    document.update(changes)
    return json.dumps(document).encode("utf-8")


def test_minimal_model_loads_and_predicts() -> None:
    assert load_model(_minimal_model()).predict("the").language == "en"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"\xff\xfe", "not UTF-8", id="not-utf8"),
        pytest.param(b'{"format": ', "not valid JSON", id="truncated"),
        pytest.param(b"[]", "must be a JSON object", id="array"),
        pytest.param(b'{"format": 1, "format": 2}', "repeats the key", id="duplicate-key"),
        pytest.param(_minimal_model(format="langid-nb/2"), "expected 'langid-nb/1'", id="format"),
        pytest.param(_minimal_model(extra=1), "unknown ['extra']", id="unknown-key"),
        pytest.param(_minimal_model(languages=["en", "de"]), "sorted", id="unsorted-languages"),
        pytest.param(_minimal_model(languages=["de", "EN"]), "2-3 letter", id="bad-code"),
        pytest.param(_minimal_model(ngram=[3, 1]), "'ngram'", id="bad-ngram"),
        pytest.param(_minimal_model(ngram=[True, 3]), "'ngram'", id="bool-ngram"),
        pytest.param(_minimal_model(priors={"de": -0.1}), "'priors' must map", id="priors-keys"),
        pytest.param(_minimal_model(priors={"de": -5.0, "en": -5.0}), "sum to 1", id="prior-sum"),
        pytest.param(
            _minimal_model(unseen={"de": 0.5, "en": -5.0}), "log-probability", id="positive"
        ),
        pytest.param(
            _minimal_model(unseen={"de": True, "en": -5.0}), "expected a number", id="bool-value"
        ),
        pytest.param(
            _minimal_model(logprob={"de": {"long": -1.0}, "en": {}}), "n-gram 'long'", id="long"
        ),
        pytest.param(_minimal_model(logprob={"de": {}, "en": {}}), "no n-grams", id="empty-table"),
        pytest.param(_minimal_model().replace(b"-5.0", b"NaN"), "not a finite number", id="nan"),
    ],
)
def test_load_model_refuses_invalid_files(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match="model") as raised:
        load_model(data)
    assert message in str(raised.value)


# --- HTTP service ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Service:
    """A running service subprocess and the URL it listens on."""

    process: subprocess.Popen[bytes]
    base_url: str
    listening_line: str


def _first_line(process: subprocess.Popen[bytes]) -> str:
    stdout = process.stdout
    assert stdout is not None
    lines: queue.Queue[bytes] = queue.Queue()
    # readline() cannot time out by itself; the thread lets a silent service fail the test.
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=STARTUP_TIMEOUT_S)
    except queue.Empty:
        pytest.fail(f"service printed nothing within {STARTUP_TIMEOUT_S} s")
    return line.decode("utf-8")


@contextmanager
def running_service(
    log_dir: Path, args: list[str], env: dict[str, str] | None = None
) -> Iterator[Service]:
    stderr_path = log_dir / "service-stderr.log"
    with stderr_path.open("wb") as stderr_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "langid_service", *args],
            cwd=log_dir,
            env=_subprocess_env(**(env or {})),
            stdout=subprocess.PIPE,
            stderr=stderr_file,
        )
    try:
        line = _first_line(process)
        assert line.startswith("listening on 127.0.0.1:"), (line, stderr_path.read_text())
        port = int(line.rsplit(":", 1)[1])
        yield Service(process, f"http://127.0.0.1:{port}", line)
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    try:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=HTTP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=HTTP_TIMEOUT_S)
    finally:
        if process.stdout is not None:
            process.stdout.close()


# A proxy from the environment must never see loopback test traffic.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(
    service: Service,
    path: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], str]:
    """Return status, decoded JSON body and raw body text; errors are answers, not exceptions."""
    request = urllib.request.Request(
        service.base_url + path, data=body, method=method, headers=headers or {}
    )
    try:
        with _OPENER.open(request, timeout=HTTP_TIMEOUT_S) as response:
            status, raw = response.status, response.read()
            content_type = response.headers["Content-Type"]
    except urllib.error.HTTPError as error:
        with error:
            status, raw = error.code, error.read()
            content_type = error.headers["Content-Type"]
    assert content_type == "application/json; charset=utf-8"
    text = raw.decode("utf-8")
    assert "Traceback" not in text
    return status, json.loads(text), text


def predict(service: Service, payload: object) -> tuple[int, dict[str, Any], str]:
    return call(
        service,
        "/v1/predict",
        method="POST",
        body=json.dumps(payload).encode("utf-8"),
        headers={"Content-Type": "application/json"},
    )


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    log_dir = tmp_path_factory.mktemp("langid-service")
    with running_service(log_dir, ["--model", str(COMMITTED_MODEL), "--port", "0"]) as running:
        yield running


def test_health(service: Service) -> None:
    assert call(service, "/healthz")[:2] == (200, {"status": "ok"})


def test_model_metadata_names_languages_and_digest(service: Service) -> None:
    status, document, _ = call(service, "/v1/model")
    assert status == 200
    assert document["languages"] == list(LANGUAGES)
    assert document["sha256"] == hashlib.sha256(COMMITTED_MODEL.read_bytes()).hexdigest()
    assert document["format"] == "langid-nb/1"


@pytest.mark.parametrize(("language", "sentence"), HELD_OUT_CASES)
def test_service_predicts_held_out_sentence(service: Service, language: str, sentence: str) -> None:
    status, document, _ = predict(service, {"text": sentence})
    assert status == 200
    assert document["language"] == language, document["scores"]
    assert math.fsum(document["scores"].values()) == pytest.approx(1.0, abs=1e-9)


def test_service_answers_undetermined_for_empty_text(service: Service) -> None:
    status, document, _ = predict(service, {"text": ""})
    assert (status, document["language"]) == (200, UNDETERMINED)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b"{not json", "not valid JSON", id="malformed-json"),
        pytest.param(b"\xff{}", "not UTF-8", id="not-utf8"),
        pytest.param(b"[1, 2]", "JSON object", id="array"),
        pytest.param(b"{}", '"text" field', id="missing-text"),
        pytest.param(b'{"txt": "hello"}', '"text" field', id="misspelt-text"),
        pytest.param(b'{"text": 42}', "must be a string", id="number-text"),
        pytest.param(b'{"text": null}', "must be a string", id="null-text"),
        pytest.param(b'{"text": ["a"]}', "must be a string", id="list-text"),
        pytest.param(b"[" * 30000 + b"]" * 30000, "nested too deeply", id="deeply-nested"),
    ],
)
def test_bad_predict_body_is_400(service: Service, body: bytes, message: str) -> None:
    status, document, _ = call(
        service, "/v1/predict", method="POST", body=body, headers={"Content-Type": "x"}
    )
    assert status == 400
    assert message in document["error"]


def test_body_over_64_kib_is_413(service: Service) -> None:
    body = json.dumps({"text": "a" * (100 * 1024)}).encode("utf-8")
    status, document, _ = call(service, "/v1/predict", method="POST", body=body)
    assert status == 413
    assert "limit is 65536" in document["error"]
    assert call(service, "/healthz")[0] == 200


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        pytest.param("GET", "/nowhere", 404, id="get-unknown"),
        pytest.param("POST", "/v1/predicts", 404, id="post-unknown"),
        pytest.param("GET", "/v1/predict", 405, id="get-predict"),
        pytest.param("POST", "/healthz", 405, id="post-health"),
        pytest.param("DELETE", "/v1/model", 501, id="delete"),
    ],
)
def test_wrong_route_or_method_is_json_error(
    service: Service, method: str, path: str, expected: int
) -> None:
    body = b"{}" if method == "POST" else None
    status, document, _ = call(service, path, method=method, body=body)
    assert status == expected
    assert set(document) == {"error"}


def test_metrics_count_predictions_by_language_in_prometheus_text(tmp_path: Path) -> None:
    with running_service(tmp_path, ["--model", str(COMMITTED_MODEL), "--port", "0"]) as running:

        def metrics() -> str:
            request = urllib.request.Request(running.base_url + "/metrics")
            with _OPENER.open(request, timeout=HTTP_TIMEOUT_S) as response:
                assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                return str(response.read().decode("utf-8"))

        assert "# TYPE langid_predictions_total counter" in metrics()
        assert "langid_predictions_total{" not in metrics()  # nothing answered yet
        for text in ("Guten Morgen, wie geht es dir?", "Das Haus ist alt.", "Bonjour à tous"):
            assert predict(running, {"text": text})[0] == 200
        assert predict(running, {"nope": 1})[0] == 400  # a refused request counts nothing
        lines = metrics().splitlines()
        assert 'langid_predictions_total{language="de"} 2' in lines
        assert 'langid_predictions_total{language="fr"} 1' in lines
        assert call(running, "/metrics", method="POST", body=b"{}")[0] == 405


API_KEY = "k3y-" + "9f2c41d0a7b85e63" * 4


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("how", ["option", "environment"])
def test_usage_answers_only_with_the_api_key(tmp_path: Path, how: str) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text(API_KEY + "\n")
    args = ["--model", str(COMMITTED_MODEL), "--port", "0", "--access-log"]
    env = {}
    if how == "option":
        args += ["--api-key-file", str(key_file)]
    else:
        env["API_KEY_FILE"] = str(key_file)
    with running_service(tmp_path, args, env) as running:
        for text in ("Guten Morgen, wie geht es dir?", "Das Haus ist alt.", "Bonjour à tous"):
            assert predict(running, {"text": text})[0] == 200
        assert call(running, "/v1/usage", headers=bearer(API_KEY))[:2] == (
            200,
            {"predictions": {"de": 2, "fr": 1}, "total": 3},
        )
        for headers in (
            {},
            bearer(API_KEY[:-1]),
            bearer(API_KEY + "0"),
            bearer(""),
            {"Authorization": f"Basic {API_KEY}"},
            {"Authorization": API_KEY},
            {"Authorization": "Bearer k\u00e9y"},
        ):
            status, document, text = call(running, "/v1/usage", headers=headers)
            assert (status, document) == (
                401,
                {"error": "/v1/usage needs the API key: Authorization: Bearer KEY"},
            ), headers
            assert API_KEY not in text
        assert call(running, "/v1/usage", method="POST", body=b"{}")[0] == 405
        # The open routes stay open.
        assert call(running, "/healthz")[0] == 200
        assert call(running, "/v1/model")[0] == 200
    assert API_KEY not in (tmp_path / "service-stderr.log").read_text()


def test_a_refused_usage_request_says_how_to_authenticate(tmp_path: Path) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text(API_KEY)
    args = ["--model", str(COMMITTED_MODEL), "--port", "0", "--api-key-file", str(key_file)]
    with running_service(tmp_path, args) as running:
        request = urllib.request.Request(running.base_url + "/v1/usage")
        with pytest.raises(urllib.error.HTTPError) as refused:
            _OPENER.open(request, timeout=HTTP_TIMEOUT_S)
        with refused.value as error:
            assert error.code == 401
            assert error.headers["WWW-Authenticate"] == 'Bearer realm="langid-admin"'


def test_usage_is_off_without_an_api_key(service: Service) -> None:
    status, document, _ = call(service, "/v1/usage", headers=bearer(API_KEY))
    assert status == 404
    assert document == {
        "error": "/v1/usage is off: the service was started without an API key "
        "(--api-key-file or API_KEY_FILE)"
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(None, "cannot read API key file", id="missing-file"),
        pytest.param(b"\n", "expected one key of printable ASCII", id="empty"),
        pytest.param(b"two words\n", "expected one key of printable ASCII", id="space"),
        pytest.param(b"k\xc3\xa9y", "expected one key of printable ASCII", id="not-ascii"),
        pytest.param(b"k" * 5000, "over 4096 bytes", id="too-large"),
    ],
)
def test_a_bad_api_key_file_exits_2_with_one_line_that_hides_it(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    key_file = tmp_path / "api-key"
    if content is not None:
        key_file.write_bytes(content)
    result = subprocess.run(
        [sys.executable, "-m", "langid_service", "--model", str(COMMITTED_MODEL), "--port", "0",
         "--api-key-file", str(key_file)],
        cwd=tmp_path, env=_subprocess_env(), capture_output=True, text=True,
        timeout=PROCESS_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert str(key_file) in result.stderr
    assert "two words" not in result.stderr
    assert "kkkk" not in result.stderr


def test_sigterm_shuts_down_cleanly_after_one_stdout_line(tmp_path: Path) -> None:
    with running_service(tmp_path, ["--model", str(COMMITTED_MODEL), "--port", "0"]) as running:
        assert predict(running, {"text": "Guten Morgen"})[1]["language"] == "de"
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(timeout=HTTP_TIMEOUT_S) == 0
        assert running.process.stdout is not None
        assert running.process.stdout.read() == b""
    assert (tmp_path / "service-stderr.log").read_text() == ""


def test_environment_supplies_model_and_port(tmp_path: Path) -> None:
    env = {"MODEL_PATH": str(COMMITTED_MODEL), "PORT": "0", "HOST": "127.0.0.1"}
    with running_service(tmp_path, [], env) as running:
        assert call(running, "/healthz")[0] == 200


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(COMMITTED_MODEL.read_bytes()[:5000], "not valid JSON", id="truncated"),
        pytest.param(_minimal_model(format="other/1"), "expected 'langid-nb/1'", id="format"),
        pytest.param(None, "cannot read model", id="missing-file"),
    ],
)
def test_bad_model_exits_2_with_one_line(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    model_path = tmp_path / "model.json"
    if content is not None:
        model_path.write_bytes(content)
    result = subprocess.run(
        [sys.executable, "-m", "langid_service", "--model", str(model_path), "--port", "0"],
        cwd=tmp_path,
        env=_subprocess_env(),
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert str(model_path) in result.stderr
    assert "Traceback" not in result.stderr
