"""Train the language identifier: corpus/<lang>.txt in, langid-model.json out.

A multinomial naive Bayes over character 1-3-grams with add-one smoothing. The output is
canonical JSON (sorted keys, rounded log-probabilities, fixed layout), so the same corpus gives
a byte-identical model on any machine, locale, time zone or hash seed; the committed model is
checked against a fresh run by tests/example_service. Standard library only.

Usage: python train.py [--corpus DIR] [--out FILE] [--top N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import unicodedata
from collections import Counter
from pathlib import Path
from typing import TypedDict

FORMAT = "langid-nb/1"
NGRAM = (1, 3)
# Enough n-grams per language for near-perfect accuracy on sentences while keeping the model
# file under 200 KB; the vocabulary is the union of every language's top n-grams.
DEFAULT_TOP_FEATURES = 1500
# Four decimals is far finer than the differences that decide a prediction, and rounding is
# what makes the float text independent of the platform's last-bit arithmetic.
DECIMALS = 4

HERE = Path(__file__).resolve().parent
_LANGUAGE_CODE = re.compile(r"[a-z]{2,3}")
# Must stay identical to langid_service.model.ngrams; a test compares the two on the corpus.
_WORD = re.compile(r"[^\W\d_]+")


class ModelDocument(TypedDict):
    """The ``langid-nb/1`` JSON document; see ../README.md for what each field means."""

    format: str
    languages: list[str]
    ngram: list[int]
    priors: dict[str, float]
    logprob: dict[str, dict[str, float]]
    unseen: dict[str, float]


class CorpusError(Exception):
    """The corpus folder is missing, empty, or has a file that is not a language's text."""


def ngrams(text: str, smallest: int, largest: int) -> Counter[str]:
    """Count lowercased, NFC-normalised character n-grams of space-padded words."""
    counts: Counter[str] = Counter()
    for word in _WORD.findall(unicodedata.normalize("NFC", text.lower())):
        padded = f" {word} "
        for size in range(smallest, largest + 1):
            for start in range(len(padded) - size + 1):
                gram = padded[start : start + size]
                if gram != " ":
                    counts[gram] += 1
    return counts


def read_corpus(corpus: Path) -> dict[str, list[str]]:
    """Return the sentences of every ``<lang>.txt``, skipping blank lines and ``#`` comments."""
    if not corpus.is_dir():
        raise CorpusError(f"corpus folder {corpus} does not exist")
    sentences: dict[str, list[str]] = {}
    for path in sorted(corpus.glob("*.txt")):
        language = path.stem
        if not _LANGUAGE_CODE.fullmatch(language) or language == "und":
            raise CorpusError(f"{path.name}: name must be a 2-3 letter lowercase language code")
        lines = path.read_text(encoding="utf-8").splitlines()
        kept = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        if not kept:
            raise CorpusError(f"{path.name}: no sentences")
        sentences[language] = kept
    if len(sentences) < 2:
        raise CorpusError(f"{corpus}: need at least 2 languages, found {len(sentences)}")
    return sentences


def train(sentences: dict[str, list[str]], top_features: int) -> ModelDocument:
    """Build the model document from per-language sentences."""
    languages = sorted(sentences)
    counts = {code: ngrams("\n".join(sentences[code]), *NGRAM) for code in languages}
    # Ties in frequency are broken by the n-gram itself so the selection never depends on
    # dict or hash order.
    vocabulary = sorted(
        {
            gram
            for code in languages
            for gram, _ in sorted(counts[code].items(), key=lambda item: (-item[1], item[0]))[
                :top_features
            ]
        }
    )
    logprob: dict[str, dict[str, float]] = {}
    unseen: dict[str, float] = {}
    for code in languages:
        seen = {gram: counts[code][gram] for gram in vocabulary if counts[code][gram]}
        denominator = sum(seen.values()) + len(vocabulary)
        logprob[code] = {
            gram: _rounded(math.log((count + 1) / denominator)) for gram, count in seen.items()
        }
        unseen[code] = _rounded(math.log(1 / denominator))
    # Uniform priors: how much text was written per language says nothing about what users send.
    prior = _rounded(math.log(1 / len(languages)))
    return {
        "format": FORMAT,
        "languages": languages,
        "ngram": list(NGRAM),
        "priors": dict.fromkeys(languages, prior),
        "logprob": logprob,
        "unseen": unseen,
    }


def serialise(model: ModelDocument) -> bytes:
    """Canonical bytes: sorted keys, one-space indent, raw UTF-8, newline at the end."""
    text = json.dumps(model, sort_keys=True, indent=1, ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode("utf-8")


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    # The rename itself is only durable once the directory entry is on disk.
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _rounded(value: float) -> float:
    # "+ 0.0" turns a -0.0 into 0.0 so the text never depends on the sign of zero.
    return round(value, DECIMALS) + 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--corpus", type=Path, default=HERE / "corpus", help="corpus folder")
    parser.add_argument("--out", type=Path, default=HERE / "langid-model.json", help="model file")
    parser.add_argument(
        "--top",
        type=int,
        default=DEFAULT_TOP_FEATURES,
        help=f"n-grams kept per language (default {DEFAULT_TOP_FEATURES})",
    )
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error("--top must be at least 1")
    try:
        model = train(read_corpus(args.corpus), args.top)
    except (CorpusError, OSError, UnicodeDecodeError) as exc:
        print(f"train.py: error: {exc}", file=sys.stderr)
        return 2
    data = serialise(model)
    write_atomically(args.out, data)
    vocabulary = {gram for grams in model["logprob"].values() for gram in grams}
    languages = len(model["languages"])
    print(f"wrote {args.out}: {languages} languages, {len(vocabulary)} n-grams, {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
