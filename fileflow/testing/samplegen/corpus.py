"""A deterministic mixed corpus: ``n`` distinct files of every kind fileflow handles.

Every file differs in content (fileflow is content-addressed, so copies would collapse into one),
is small enough for a test on a 2-core machine, and exercises the kind's real steps: images with
drawn words (OCR), PDFs with a text layer, DOCX/XLSX/ODT (LibreOffice), DXF plans, 1-second
H.264 clips, ZIP archives of a text file and a picture, and plain text in several languages.

Used by the distributed integration test and by the benchmarks (``bench/``).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from fileflow.testing.samplegen import documents, images, media

KINDS = ("image", "pdf", "office", "drawing", "video", "archive", "text")

_WORDS = ("granite", "harbour", "lantern", "meadow", "orchard", "pillar", "quarry", "saddle", "timber", "violet",
          "walnut", "yarrow", "anchor", "beacon", "copper", "delta", "ember", "falcon", "glacier", "hollow")

_TEXTS = {
    "en": "The inspection of the north wing found the roof sound and the gutters in need of cleaning.",
    "de": "Die Prüfung des Nordflügels ergab ein dichtes Dach, aber die Regenrinnen müssen gereinigt werden.",
    "fr": "L'inspection de l'aile nord a montré une toiture saine, mais les gouttières doivent être nettoyées.",
}


def _word(i: int) -> str:
    return f"{_WORDS[i % len(_WORDS)]} {i}"


def image(path: Path, i: int) -> Path:
    picture = images.text_image(size=(640 + 8 * (i % 10), 420), words=("CORPUS", _word(i).upper()), font_size=64)
    picture.save(path, "JPEG", quality=85)
    return path


def pdf(path: Path, i: int) -> Path:
    return documents.text_pdf(path, [[f"Corpus document {i}", _TEXTS["en"], f"Reference {_word(i)}."]])


def office(path: Path, i: int) -> Path:
    return documents.docx(path, heading=f"Corpus report {i}", paragraphs=(_TEXTS["en"], f"Item {_word(i)}."))


def drawing(path: Path, i: int) -> Path:
    import ezdxf

    doc = ezdxf.new("R2010", units=4)
    msp = doc.modelspace()
    width = 100 + 10 * i
    msp.add_lwpolyline([(0, 0), (width, 0), (width, 80), (0, 80)], close=True)
    msp.add_circle((width / 2, 40), 10 + i % 20)
    msp.add_text(f"ROOM {i}", height=6).set_placement((5, 5))
    doc.saveas(path)
    return path


def video(path: Path, i: int) -> Path:
    # testsrc draws a frame counter; sizes and rates repeat every 40 clips, so the index written
    # into the container's metadata is what makes every clip distinct (one file id, one manifest)
    return media.video(path, width=160 + 16 * (i % 8), height=120, seconds=1.0, fps=10 + i % 5,
                       extra=["-metadata", f"comment=corpus clip {i}"])


def archive(path: Path, i: int) -> Path:
    picture = io.BytesIO()
    images.text_image(size=(320, 200), words=(f"ZIP {i}",), font_size=48).save(picture, "PNG")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in ((f"member-{i}/readme-{i}.txt", f"{_TEXTS['en']} Archive {i}.".encode()),
                           (f"member-{i}/label-{i}.png", picture.getvalue())):
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return path


def text(path: Path, i: int, lines: int = 3) -> Path:
    language = ("en", "de", "fr")[i % 3]
    path.write_text(f"{_TEXTS[language]} ({_word(i)})\n" * lines, encoding="utf-8")
    return path


_MAKERS = {"image": (image, "jpg"), "pdf": (pdf, "pdf"), "office": (office, "docx"), "drawing": (drawing, "dxf"),
           "video": (video, "mp4"), "archive": (archive, "zip"), "text": (text, "txt")}


def make(folder: Path, per_kind: int, kinds: tuple[str, ...] = KINDS) -> dict[str, list[Path]]:
    """``per_kind`` files of each kind under ``folder``; the paths by kind."""
    folder.mkdir(parents=True, exist_ok=True)
    made: dict[str, list[Path]] = {}
    for kind in kinds:
        maker, ext = _MAKERS[kind]
        made[kind] = [maker(folder / f"{kind}-{i:03d}.{ext}", i) for i in range(per_kind)]
    return made
