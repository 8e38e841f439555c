"""Language identification: a multinomial naive Bayes over character n-grams.

Pure core of the service: bytes and text in, values or ``ValueError`` out; no files, sockets or
clock. The model file format is documented in ``example-circle-repo/src/README.md``; the trainer
(``src/model/train.py``) writes it and ``load_model`` refuses anything that does not match it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

FORMAT = "langid-nb/1"

# ISO 639-2 "undetermined": the answer when the text carries no evidence at all.
UNDETERMINED = "und"

_TOP_LEVEL_KEYS = frozenset({"format", "languages", "ngram", "priors", "logprob", "unseen"})
_LANGUAGE_CODE = re.compile(r"[a-z]{2,3}")
# Letters only: digits, punctuation and "_" say nothing about the language and would otherwise
# be glued to words by \w.
_WORD = re.compile(r"[^\W\d_]+")
# Rounded log-probabilities make exp(priors) sum to 1 only approximately.
_PRIOR_SUM_TOLERANCE = 1e-3


def ngrams(text: str, smallest: int, largest: int) -> Counter[str]:
    """Count the character n-grams of ``text`` the way the trainer does.

    Text is lowercased and NFC-normalised (so composed and decomposed accents agree), split into
    runs of letters, and each word is padded with one space on both sides so that n-grams can
    tell word starts and endings apart. The bare padding space is not a feature.
    """
    counts: Counter[str] = Counter()
    for word in _WORD.findall(unicodedata.normalize("NFC", text.lower())):
        padded = f" {word} "
        for size in range(smallest, largest + 1):
            for start in range(len(padded) - size + 1):
                gram = padded[start : start + size]
                if gram != " ":
                    counts[gram] += 1
    return counts


class Prediction(NamedTuple):
    """The most probable language and the normalised probability of every language."""

    language: str
    scores: dict[str, float]


@dataclass(frozen=True)
class LangidModel:
    """A validated model, ready to score text."""

    languages: tuple[str, ...]
    ngram: tuple[int, int]
    log_priors: tuple[float, ...]
    sha256: str
    size_bytes: int
    # gram -> log P(gram | language), one value per entry of ``languages``, in that order.
    table: Mapping[str, tuple[float, ...]] = field(repr=False)

    def predict(self, text: str) -> Prediction:
        """Score ``text``; with no known n-gram the scores are the priors and the answer "und"."""
        log_scores = list(self.log_priors)
        evidence = 0
        for gram, count in ngrams(text, *self.ngram).items():
            row = self.table.get(gram)
            if row is None:
                continue
            evidence += count
            for index, log_prob in enumerate(row):
                log_scores[index] += count * log_prob
        probabilities = _softmax(log_scores)
        scores = dict(zip(self.languages, probabilities, strict=True))
        if evidence == 0:
            return Prediction(UNDETERMINED, scores)
        # max() keeps the first of equal maxima, so ties go to the earlier (sorted) language.
        best = max(range(len(self.languages)), key=probabilities.__getitem__)
        return Prediction(self.languages[best], scores)


def load_model(data: bytes) -> LangidModel:
    """Parse and validate a ``langid-nb/1`` model file; ``ValueError`` says what is wrong."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"model is not UTF-8 (byte {exc.start}): {exc.reason}") from None
    try:
        document = json.loads(
            text, object_pairs_hook=_refuse_duplicate_keys, parse_constant=_refuse_constant
        )
    except RecursionError:
        raise ValueError("model JSON is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"model is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None

    if not isinstance(document, dict):
        raise ValueError(f"model must be a JSON object, found {type(document).__name__}")
    missing = sorted(_TOP_LEVEL_KEYS - document.keys())
    unknown = sorted(document.keys() - _TOP_LEVEL_KEYS)
    if missing or unknown:
        raise ValueError(f"model keys: missing {missing}, unknown {unknown}")
    if document["format"] != FORMAT:
        raise ValueError(f"model format is {document['format']!r}, expected {FORMAT!r}")

    languages = _parse_languages(document["languages"])
    ngram = _parse_ngram(document["ngram"])
    priors = _per_language_numbers(document["priors"], "priors", languages)
    prior_sum = math.fsum(math.exp(value) for value in priors)
    if abs(prior_sum - 1.0) > _PRIOR_SUM_TOLERANCE:
        raise ValueError(f"model priors must sum to 1 as probabilities, found {prior_sum:.6f}")
    unseen = _per_language_numbers(document["unseen"], "unseen", languages)
    table = _parse_logprob(document["logprob"], languages, ngram, unseen)
    return LangidModel(
        languages=languages,
        ngram=ngram,
        log_priors=priors,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        table=table,
    )


def _softmax(log_scores: list[float]) -> list[float]:
    # Shifting by the maximum keeps exp() in range however long the text is.
    peak = max(log_scores)
    weights = [math.exp(score - peak) for score in log_scores]
    total = math.fsum(weights)
    return [weight / total for weight in weights]


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"model JSON repeats the key {key!r}")
        result[key] = value
    return result


def _refuse_constant(name: str) -> float:
    raise ValueError(f"model JSON contains {name}, which is not a finite number")


def _parse_languages(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError("model 'languages' must be a non-empty list of language codes")
    for code in value:
        if not isinstance(code, str) or not _LANGUAGE_CODE.fullmatch(code) or code == UNDETERMINED:
            raise ValueError(
                f"model 'languages' has {code!r}, expected a 2-3 letter lowercase code"
            )
    if value != sorted(set(value)):
        raise ValueError("model 'languages' must be sorted and free of duplicates")
    return tuple(value)


def _parse_ngram(value: object) -> tuple[int, int]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(size, int) and not isinstance(size, bool) for size in value)
        or not 1 <= value[0] <= value[1] <= 8
    ):
        raise ValueError(f"model 'ngram' is {value!r}, expected [smallest, largest] in 1..8")
    return (value[0], value[1])


def _log_probability(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"model {where} is {value!r}, expected a number")
    number = float(value)
    if not math.isfinite(number) or number > 0.0:
        raise ValueError(f"model {where} is {number!r}, expected a finite log-probability <= 0")
    return number


def _per_language_numbers(
    value: object, name: str, languages: tuple[str, ...]
) -> tuple[float, ...]:
    if not isinstance(value, dict) or sorted(value) != list(languages):
        found = sorted(value) if isinstance(value, dict) else type(value).__name__
        raise ValueError(f"model {name!r} must map exactly {list(languages)}, found {found}")
    return tuple(_log_probability(value[code], f"{name}[{code!r}]") for code in languages)


def _parse_logprob(
    value: object,
    languages: tuple[str, ...],
    ngram: tuple[int, int],
    unseen: tuple[float, ...],
) -> dict[str, tuple[float, ...]]:
    if not isinstance(value, dict) or sorted(value) != list(languages):
        found = sorted(value) if isinstance(value, dict) else type(value).__name__
        raise ValueError(f"model 'logprob' must map exactly {list(languages)}, found {found}")
    smallest, largest = ngram
    rows: dict[str, list[float]] = {}
    for index, code in enumerate(languages):
        grams = value[code]
        if not isinstance(grams, dict):
            raise ValueError(f"model 'logprob'[{code!r}] must be an object of n-gram: number")
        for gram, number in grams.items():
            if not smallest <= len(gram) <= largest or gram.strip() == "":
                raise ValueError(
                    f"model 'logprob'[{code!r}] has n-gram {gram!r}, expected "
                    f"{smallest} to {largest} characters, not only spaces"
                )
            row = rows.setdefault(gram, list(unseen))
            row[index] = _log_probability(number, f"'logprob'[{code!r}][{gram!r}]")
    if not rows:
        raise ValueError("model 'logprob' holds no n-grams")
    return {gram: tuple(row) for gram, row in rows.items()}
