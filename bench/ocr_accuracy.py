"""OCR word accuracy per language: English only (the old default) against ``auto`` (each page
in its own language), on generated scans, with the time each costs.

    .venv/bin/python bench/ocr_accuracy.py [--sizes 30,24] [--json out.json]

Scans: ``fileflow.testing.samplegen.images.scan`` draws each language's paragraph (DejaVu Sans, greyscale,
slightly soft, as a 200 dpi scanner gives body text) at every font size in ``--sizes``. Each
scan goes through the ``ocr`` converter twice, ``ocr_languages=eng`` and ``auto``, in this
process (engines are opened per file, as the converter does in production).

Word accuracy: the share of the paragraph's words (punctuation at their ends stripped) found
in the OCR text, each found word counted at most as often as it occurs. "non-ASCII words":
the same over the words holding a letter outside ASCII (umlauts, accents, Cyrillic), the ones
an English model loses. Time: median seconds per page over the scans of that language.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from converters import ocr  # noqa: E402
from fileflow.testing.samplegen.images import SCAN_TEXTS, scan  # noqa: E402

MODES = ("eng", "auto")
_STRIP = ".,;:!?()\"'«»„“”"


def words(text: str) -> list[str]:
    return [w.strip(_STRIP) for w in text.split() if w.strip(_STRIP)]


def accuracy(reference: list[str], found: list[str]) -> float:
    if not reference:
        return 1.0
    hits = Counter(reference) & Counter(found)
    return sum(hits.values()) / len(reference)


def run(sizes: list[int]) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="ocr-accuracy-") as tmp:
        folder = Path(tmp)
        for language, paragraph in SCAN_TEXTS.items():
            reference = words(paragraph)
            special = [w for w in reference if not w.isascii()]
            row: dict = {"language": language, "words": len(reference), "non_ascii_words": len(special)}
            for mode in MODES:
                seconds, scores, special_scores, chosen = [], [], [], set()
                for size in sizes:
                    src = folder / f"{language}-{size}.png"
                    scan(language, font_size=size).save(src)
                    out = folder / f"{language}-{size}-{mode}"
                    started = time.perf_counter()
                    result = ocr.convert(src, out, {"ocr_languages": mode})
                    seconds.append(time.perf_counter() - started)
                    found = words((out / "text.txt").read_text(encoding="utf-8"))
                    scores.append(accuracy(reference, found))
                    special_scores.append(accuracy(special, found))
                    chosen.add(result.metadata["ocr_languages"])
                row[mode] = {
                    "accuracy": round(statistics.mean(scores), 3),
                    "non_ascii_accuracy": round(statistics.mean(special_scores), 3) if special else None,
                    "seconds_per_page": round(statistics.median(seconds), 2),
                    "languages": "/".join(sorted(chosen)),
                }
            rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| language | words (non-ASCII) | eng only: words | eng only: non-ASCII | eng only: s/page "
        "| auto: words | auto: non-ASCII | auto: s/page | auto chose |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def pct(value):
        return "-" if value is None else f"{100 * value:.0f} %"

    for row in rows:
        before, after = row["eng"], row["auto"]
        lines.append(
            f"| {row['language']} | {row['words']} ({row['non_ascii_words']}) | {pct(before['accuracy'])} "
            f"| {pct(before['non_ascii_accuracy'])} | {before['seconds_per_page']:.2f} | {pct(after['accuracy'])} "
            f"| {pct(after['non_ascii_accuracy'])} | {after['seconds_per_page']:.2f} | {after['languages']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="30,24", help="font sizes in pixels of the generated scans")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    rows = run([int(s) for s in args.sizes.split(",") if s.strip()])
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
