"""Images: the text in the picture, by Tesseract (tesserocr) with Debian's language data.

Options:

* ``ocr_languages`` (default ``"auto"``): each page read in its own language, chosen among
  ``ocr_allowed_languages`` (default ``eng+deu+fra+spa+ita+nld+por+pol+rus``) from its script
  and a first pass; or fixed Tesseract codes joined by ``+`` (``"deu"``, ``"eng+fra"``).
  See :mod:`converters.tesseract`.
* ``tessdata`` (default ``/usr/share/tesseract-ocr/5/tessdata``): where the ``*.traineddata``
  files live (Debian packages ``tesseract-ocr-<lang>``).
* ``ocr_max_pixels`` (default 16 megapixels): larger pictures are scaled down first; a 300 dpi
  A4 scan (8.7 MP) or a 12 MP phone photo is read at full resolution.
* ``max_pixels`` (default 100 megapixels): the decompression-bomb limit, checked from the header
  before decoding, as in ``image_renditions``.
* ``max_ocr_pages`` (default 20): of a multi-page TIFF (faxes, scans) every page up to this
  many is read; other formats are one page (an animation's frames repeat one picture).

Every page is decoded upright (EXIF orientation applied), transparency is flattened onto
white (black text on a transparent background would otherwise turn into black on black) and
it is converted to greyscale. ``text.txt`` is always written, empty when nothing was read;
pages are separated by a form feed (``\\f``) as in ``pdf_text``. Metadata per page in
``ocr_pages`` (page, languages, mean_confidence, words, width, height; in auto mode also
script, detected and passes); ``ocr_languages`` joins the languages the pages were read with;
``mean_confidence`` of the file is the word-weighted mean over its pages; ``pages`` counts the
file's frames and ``pages_ocred`` those read.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping

from converters.base import ConversionResult, ConverterSpec, Rendition, require
from converters.image_renditions import DEFAULT_MAX_PIXELS, display_image, display_size, frame_count, open_image
from converters.options import int_option
from converters.tesseract import DEFAULT_TESSDATA, Reader, check_tessdata, languages_of  # noqa: F401
from fileflow.errors import CorruptInput

SPEC = ConverterSpec(
    name="ocr",
    version="2.0.0",
    kinds=frozenset({"image"}),
    timeout_s=600,  # auto languages read a page up to twice; a TIFF has up to max_ocr_pages pages
    memory_mb=3072,
    retries=1,
    description="Text in the picture by Tesseract OCR (tesserocr), upright, greyscale",
    reads=frozenset({"ocr_languages", "ocr_allowed_languages", "tessdata"}),
)

DEFAULT_OCR_MAX_PIXELS = 16_000_000
DEFAULT_MAX_OCR_PAGES = 20


def grayscale_for_ocr(image):
    """Greyscale with transparency flattened onto white."""
    if image.mode in ("RGBA", "LA"):
        Image = require("PIL.Image", "pillow")
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.getchannel("A"))
        image = background
    return image.convert("L")


def normalise(text: str) -> str:
    """Tesseract's text with form feeds dropped, trailing spaces trimmed, blank-line runs collapsed."""
    text = text.replace("\f", "\n").replace("\r\n", "\n")
    lines = [line.rstrip() for line in text.split("\n")]
    out = "\n".join(lines)
    out = re.sub(r"\n{3,}", "\n\n", out).strip("\n")
    return out + "\n" if out else ""


def pages_to_read(im, max_pages: int) -> int:
    """How many frames of ``im`` are pages of text: every page of a TIFF (faxes, scans), up to
    ``max_pages``; one for the rest (an animation's frames or an MPO's views repeat one picture)."""
    if im.format != "TIFF":
        return 1
    try:
        return max(1, min(int(getattr(im, "n_frames", 1)), max_pages))
    except Exception:  # noqa: BLE001 - a broken later page does not lose the first one
        return 1


def page_for_ocr(im, index: int, ocr_max_pixels: int):
    """Page ``index`` of ``im`` decoded upright, scaled to at most ``ocr_max_pixels``, greyscale."""
    if index:
        try:
            im.seek(index)
        except (EOFError, OSError, ValueError) as exc:
            raise CorruptInput(f"page {index + 1} of the image cannot be read: {exc}") from None
    width, height = display_size(im)
    long_side = None
    if width * height > ocr_max_pixels:
        scale = math.sqrt(ocr_max_pixels / (width * height))
        long_side = max(1, int(max(width, height) * scale))
    return grayscale_for_ocr(display_image(im, long_side))


def convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult:
    max_pixels = int_option(options, "max_pixels", DEFAULT_MAX_PIXELS, minimum=1)
    ocr_max_pixels = int_option(options, "ocr_max_pixels", DEFAULT_OCR_MAX_PIXELS, minimum=1)
    max_pages = int_option(options, "max_ocr_pages", DEFAULT_MAX_OCR_PAGES, minimum=1)
    reader = Reader.from_options(options)
    out_dir.mkdir(parents=True, exist_ok=True)

    texts: list[str] = []
    pages: list[dict[str, Any]] = []
    try:
        im = open_image(src, max_pixels)
        with im:
            count = pages_to_read(im, max_pages)
            total = frame_count(im)
            for index in range(count):
                gray = page_for_ocr(im, index, ocr_max_pixels)
                reading = reader.read(gray)
                text = normalise(reading.text)
                texts.append(text)
                pages.append({"page": index + 1, **reading.record(), "words": len(text.split()),
                              "width": gray.width, "height": gray.height})
    finally:
        reader.close()
    text = "\f".join(texts)  # pages separated by a form feed, as pdf_text writes them
    (out_dir / "text.txt").write_text(text, encoding="utf-8")
    scored = [(p["mean_confidence"], max(1, p["words"])) for p in pages if p["mean_confidence"] is not None]
    mean = round(sum(c * w for c, w in scored) / sum(w for _, w in scored), 1) if scored else None
    metadata: dict[str, Any] = {
        "ocr_languages": "+".join(dict.fromkeys(p["languages"] for p in pages)),
        "mean_confidence": mean,
        "words": len(text.split()),
        "chars": len(text),
        "ocr_width": pages[0]["width"],
        "ocr_height": pages[0]["height"],
        "pages": total,
        "pages_ocred": len(pages),
        "ocr_pages": pages,
    }
    if reader.auto:
        metadata["ocr_allowed_languages"] = "+".join(reader.allowed)
        if reader.missing:
            metadata["ocr_languages_missing"] = "+".join(reader.missing)
    return ConversionResult(renditions=[Rendition("text", "text.txt", "text/plain")], metadata=metadata)
