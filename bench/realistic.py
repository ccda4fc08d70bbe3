"""The ``realistic`` corpus of the efficiency benchmark: files the size users upload.

``fileflow.testing.samplegen.corpus`` (the ``light`` corpus) makes files small enough for a test: 640x420
pictures, one-page PDFs, one-second 160x120 clips. On those the converters cost about 0.17
CPU-s a file, so any fixed price per file dominates the ratio. This corpus keeps the same mix
of kinds and the same content sources, at the sizes the product is for:

- image: a 12-megapixel (4032x3024) photo-like JPEG, quality 90, with a line of words (OCR);
- pdf: 12 pages of text with a text layer;
- office: a DOCX of about five pages (a heading, 60 paragraphs);
- drawing: a DXF floor plan of about 400 entities;
- video: 10 seconds of 1280x720 at 25 fps with sound (item 4's "10-second video");
- archive: a ZIP of a 1600x1200 photo, a 3-page PDF and a text;
- text: about 25 KB of prose in one of three languages.

Deterministic: file ``i`` of a kind is the same bytes every time; no two files are equal.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from fileflow.testing.samplegen import corpus as light
from fileflow.testing.samplegen import documents, media
from fileflow.testing.samplegen.images import FONT

_SENTENCES = tuple(light._TEXTS.values())


def _photo(size: tuple[int, int], i: int, words: str) -> Image.Image:
    """Smooth colour fields with grain and a line of words: compresses like a photo does
    (about 0.3 byte a pixel at quality 90: 4 MB, a phone photo's size), unlike noise or flat colour."""
    rng = random.Random(i)
    small = Image.new("RGB", (48, 36))
    small.putdata([tuple(rng.randrange(40, 230) for _ in range(3)) for _ in range(48 * 36)])
    picture = small.resize(size, Image.BICUBIC).filter(ImageFilter.GaussianBlur(6))
    grain = Image.frombytes("L", size, rng.randbytes(size[0] * size[1])).convert("RGB")  # seeded, unlike effect_noise
    picture = Image.blend(picture, grain, 0.12)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.truetype(FONT, size[1] // 16)
    draw.rectangle((size[0] // 12, size[1] // 3, size[0] * 11 // 12, size[1] // 3 + size[1] // 10), fill="white")
    draw.text((size[0] // 10, size[1] // 3 + size[1] // 80), words, fill="black", font=font)
    return picture


def image(path: Path, i: int) -> Path:
    _photo((4032, 3024), i, f"SITE VISIT {light._word(i).upper()}").save(path, "JPEG", quality=90)
    return path


def _pages(i: int, n: int) -> list[list[str]]:
    return [[f"Report {i}, page {p + 1} of {n}"]
            + [f"{_SENTENCES[(p + k) % 3][:88]}" for k in range(38)]
            + [f"Reference {light._word(i + p)}."] for p in range(n)]


def pdf(path: Path, i: int) -> Path:
    return documents.text_pdf(path, _pages(i, 12))


def office(path: Path, i: int) -> Path:
    paragraphs = tuple(f"{k + 1}. {_SENTENCES[k % 3]} {light._word(i + k)}." for k in range(60))
    return documents.docx(path, heading=f"Survey report {i}", paragraphs=paragraphs)


def drawing(path: Path, i: int) -> Path:
    import ezdxf

    doc = ezdxf.new("R2010", units=4)
    msp = doc.modelspace()
    rng = random.Random(i)
    for room in range(40):  # a floor of rooms: walls, a door arc, furniture, a label each
        x, y = (room % 8) * 5000, (room // 8) * 4000
        w, h = 4600 + rng.randrange(0, 300), 3600 + rng.randrange(0, 300)
        msp.add_lwpolyline([(x, y), (x + w, y), (x + w, y + h), (x, y + h)], close=True)
        msp.add_arc((x + 900, y), 800, 0, 90)
        for k in range(6):
            fx, fy = x + 400 + 650 * k, y + 1200 + rng.randrange(0, 1500)
            msp.add_lwpolyline([(fx, fy), (fx + 500, fy), (fx + 500, fy + 400), (fx, fy + 400)], close=True)
        msp.add_circle((x + w / 2, y + h / 2), 300 + rng.randrange(0, 200))
        msp.add_text(f"ROOM {i}.{room}", height=250).set_placement((x + 200, y + h - 500))
    doc.saveas(path)
    return path


def video(path: Path, i: int) -> Path:
    # grain over the test pattern gives a camera-like bitrate (about 5 Mbit/s, not 0.1); a
    # different frame rate per file makes every clip distinct
    return media.video(path, width=1280, height=720, seconds=10.0, fps=24 + i % 3,
                       vcodec=["-vf", "noise=alls=12:allf=t", "-c:v", "libx264", "-preset", "veryfast", "-crf", "26",
                               "-pix_fmt", "yuv420p"])


def archive(path: Path, i: int) -> Path:
    picture = io.BytesIO()
    _photo((1600, 1200), i, f"ZIP {i}").save(picture, "JPEG", quality=90)
    report = documents.text_pdf(path.with_suffix(".tmp.pdf"), _pages(i, 3))
    members = [(f"site-{i}/notes-{i}.txt", (f"{_SENTENCES[0]} Archive {i}.\n" * 40).encode()),
               (f"site-{i}/photo-{i}.jpg", picture.getvalue()),
               (f"site-{i}/report-{i}.pdf", report.read_bytes())]
    report.unlink()
    return documents._zip(path, members)  # fixed timestamps: byte-stable


def text(path: Path, i: int) -> Path:
    return light.text(path, i, lines=250)  # about 25 KB


MAKERS = {"image": (image, "jpg"), "pdf": (pdf, "pdf"), "office": (office, "docx"), "drawing": (drawing, "dxf"),
          "video": (video, "mp4"), "archive": (archive, "zip"), "text": (text, "txt")}
