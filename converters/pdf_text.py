"""PDF: the text of every page, from its text layer or, for scanned pages, by OCR.

Kinds ``pdf`` and ``office`` (an office document through the PDF made by ``office_pdf``).

Every page's text layer is read with PDFium. A page whose layer is empty or near-empty (fewer
than ``min_text_chars`` letters or digits, default 16) and that holds a picture is a scan: it is
rendered at ``ocr_dpi`` (default 300; the bitmap is capped at ``ocr_max_pixels``, default 25
megapixels, so a poster-sized page is rendered at a lower resolution instead of exhausting
memory) and read by Tesseract (tesserocr; one engine for the whole document). The OCR text
replaces the layer's only when it is longer. A page without text and without pictures is
blank and is not OCRed. At most ``max_ocr_pages`` pages (default 20) are OCRed per document;
the others keep their (empty) layer text and are counted in ``ocr_skipped_pages``.

Options: ``ocr_languages`` (default "auto": each scanned page in its own language, among
``ocr_allowed_languages``; or fixed, in Tesseract's "eng+deu" form; see
:mod:`converters.tesseract`), ``tessdata`` (default /usr/share/tesseract-ocr/5/tessdata), ``max_ocr_pages``, ``ocr_dpi``, ``ocr_max_pixels``,
``min_text_chars``, ``max_pages`` (default 5000; more -> :class:`LimitExceeded`).

Output ``text.txt`` (UTF-8): pages in order, separated by a form feed (``\\f``); a page's own
text never contains one. Metadata: ``pages``, ``pages_with_text_layer``, ``pages_ocred``,
``ocr_skipped_pages``, ``chars`` (characters of text, separators excluded), ``ocr_languages``
(the languages OCRed pages were read with, or None), ``ocr_mean_confidence`` (0-100, over OCRed
pages, or None), ``ocr_pages`` (per OCRed page: page, languages, mean_confidence, and in auto
mode script, detected, passes), ``pages_unreadable``.

Errors as in ``pdf_preview``: broken bytes -> :class:`CorruptInput`, a password needed ->
:class:`UnsupportedInput`, too many pages -> :class:`LimitExceeded`; an OCR language without
its ``.traineddata`` -> :class:`UnsupportedInput` (only when a page actually needs OCR).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping

from converters.base import ConversionResult, ConverterSpec, Rendition, require
from converters.options import int_option
from converters.pdf_preview import DEFAULT_MAX_PAGES, check_pages, open_pdf
from converters.tesseract import DEFAULT_TESSDATA, Reader, Reading
from fileflow.errors import CorruptInput, LimitExceeded

SPEC = ConverterSpec(
    name="pdf_text",
    version="2.0.0",
    kinds=frozenset({"pdf", "office"}),
    timeout_s=600,
    memory_mb=2048,
    retries=1,
    description="Text layer of every page (PDFium) and OCR (Tesseract) of scanned pages",
    reads=frozenset({"ocr_languages", "ocr_allowed_languages", "tessdata"}),
)

DEFAULT_MAX_OCR_PAGES = 20
DEFAULT_OCR_DPI = 300
DEFAULT_OCR_MAX_PIXELS = 25_000_000
DEFAULT_MIN_TEXT_CHARS = 16

# control characters other than \t and \n (PDFium marks soft hyphens and the like with them)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffe\uffff]")


def _normalise(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n")
    text = _CONTROL.sub("", text)
    lines = [line.rstrip() for line in text.split("\n")]
    return "\n".join(lines).strip("\n")


def _letters(text: str) -> int:
    return sum(1 for ch in text if ch.isalnum())


def _has_picture(page, pdfium_raw) -> bool:
    try:
        for _ in page.get_objects(filter=[pdfium_raw.FPDF_PAGEOBJ_IMAGE], max_depth=4):
            return True
    except Exception:  # noqa: BLE001 - when in doubt, look at the page
        return True
    return False


class _Ocr:
    """The document's :class:`~converters.tesseract.Reader`, made on first use: a PDF whose pages
    all have a text layer needs no language data at all."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = options
        self.reader: Reader | None = None

    def read(self, image) -> Reading:
        if self.reader is None:
            self.reader = Reader.from_options(self.options, DEFAULT_TESSDATA)
        return self.reader.read(image)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()


def _render_for_ocr(page, dpi: int, max_pixels: int):
    width_pt, height_pt = page.get_size()
    if not (width_pt > 0 and height_pt > 0):
        return None
    scale = dpi / 72.0
    pixels = width_pt * height_pt * scale * scale
    if pixels > max_pixels:
        scale *= math.sqrt(max_pixels / pixels)
    try:
        return page.render(scale=scale, grayscale=True, may_draw_forms=True).to_pil()
    except MemoryError:
        raise LimitExceeded("rendering a page for OCR needs more memory than this step may use") from None


def convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult:
    pdfium_raw = require("pypdfium2.raw", "pypdfium2")
    max_pages = int_option(options, "max_pages", DEFAULT_MAX_PAGES, minimum=1)
    max_ocr_pages = int_option(options, "max_ocr_pages", DEFAULT_MAX_OCR_PAGES, minimum=0)
    dpi = int_option(options, "ocr_dpi", DEFAULT_OCR_DPI, minimum=50)
    max_pixels = int_option(options, "ocr_max_pixels", DEFAULT_OCR_MAX_PIXELS, minimum=100_000)
    min_chars = int_option(options, "min_text_chars", DEFAULT_MIN_TEXT_CHARS, minimum=0)
    out_dir.mkdir(parents=True, exist_ok=True)

    pdf = open_pdf(src, options)
    ocr = _Ocr(options)
    texts: list[str] = []
    ocr_pages: list[dict[str, Any]] = []
    with_layer = ocred = skipped = unreadable = 0
    confidences: list[float] = []
    try:
        count = check_pages(pdf, max_pages)
        try:
            pdf.init_forms()
        except Exception:  # noqa: BLE001
            pass
        for index in range(count):
            try:
                page = pdf[index]
            except Exception:  # noqa: BLE001 - one broken page does not lose the others
                unreadable += 1
                texts.append("")
                continue
            try:
                try:
                    textpage = page.get_textpage()
                    layer = _normalise(textpage.get_text_range())
                    textpage.close()
                except Exception:  # noqa: BLE001
                    layer = ""
                if layer:
                    with_layer += 1
                text = layer
                if _letters(layer) < min_chars and _has_picture(page, pdfium_raw):
                    if ocred >= max_ocr_pages:
                        skipped += 1
                    else:
                        image = _render_for_ocr(page, dpi, max_pixels)
                        if image is not None:
                            reading = ocr.read(image)
                            found = _normalise(reading.text)
                            ocred += 1
                            if reading.mean_confidence is not None:
                                confidences.append(reading.mean_confidence)
                            ocr_pages.append({"page": index + 1, **reading.record()})
                            if len(found) > len(layer):
                                text = found
            finally:
                page.close()
            texts.append(text)
    except MemoryError:
        raise LimitExceeded("extracting the PDF's text needs more memory than this step may use") from None
    finally:
        ocr.close()
        pdf.close()

    if unreadable and unreadable == len(texts):
        raise CorruptInput("no page of the PDF could be read")
    (out_dir / "text.txt").write_text("\f".join(texts), encoding="utf-8")
    return ConversionResult(
        renditions=[Rendition(role="text", path="text.txt", mime="text/plain")],
        metadata={
            "pages": len(texts),
            "pages_with_text_layer": with_layer,
            "pages_ocred": ocred,
            "ocr_skipped_pages": skipped,
            "pages_unreadable": unreadable,
            "chars": sum(len(t) for t in texts),
            "ocr_languages": "+".join(dict.fromkeys(p["languages"] for p in ocr_pages)) or None,
            "ocr_mean_confidence": round(sum(confidences) / len(confidences), 1) if confidences else None,
            "ocr_pages": ocr_pages,
        },
    )
