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

Options: ``ocr_languages`` (default "eng"; Tesseract's "eng+deu" form), ``tessdata`` (default
/usr/share/tesseract-ocr/5/tessdata), ``max_ocr_pages``, ``ocr_dpi``, ``ocr_max_pixels``,
``min_text_chars``, ``max_pages`` (default 5000; more -> :class:`LimitExceeded`).

Output ``text.txt`` (UTF-8): pages in order, separated by a form feed (``\\f``); a page's own
text never contains one. Metadata: ``pages``, ``pages_with_text_layer``, ``pages_ocred``,
``ocr_skipped_pages``, ``chars`` (characters of text, separators excluded), ``ocr_languages``,
``ocr_mean_confidence`` (0-100, over OCRed pages, or None), ``pages_unreadable``.

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
from fileflow.errors import CorruptInput, LimitExceeded, UnsupportedInput

SPEC = ConverterSpec(
    name="pdf_text",
    version="1.0.0",
    kinds=frozenset({"pdf", "office"}),
    timeout_s=600,
    memory_mb=2048,
    retries=1,
    description="Text layer of every page (PDFium) and OCR (Tesseract) of scanned pages",
)

DEFAULT_TESSDATA = "/usr/share/tesseract-ocr/5/tessdata"
DEFAULT_LANGUAGES = "eng"
DEFAULT_MAX_OCR_PAGES = 20
DEFAULT_OCR_DPI = 300
DEFAULT_OCR_MAX_PIXELS = 25_000_000
DEFAULT_MIN_TEXT_CHARS = 16

# control characters other than \t and \n (PDFium marks soft hyphens and the like with them)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffe\uffff]")
_LANG = re.compile(r"^[A-Za-z0-9_]+(\+[A-Za-z0-9_]+)*$")


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
    """One Tesseract engine, opened on first use and kept for the whole document."""

    def __init__(self, tessdata: str, languages: str) -> None:
        self.tessdata = tessdata
        self.languages = languages
        self.api = None

    def _open(self):
        tesserocr = require("tesserocr", "tesserocr", "tesseract-ocr")
        if not _LANG.match(self.languages):
            raise UnsupportedInput(f"OCR languages {self.languages!r} are not of the form 'eng' or 'eng+deu'")
        missing = [
            lang for lang in self.languages.split("+")
            if not (Path(self.tessdata) / f"{lang}.traineddata").is_file()
        ]  # fmt: skip
        if missing:
            raise UnsupportedInput(
                f"OCR language data {', '.join(missing)} is not installed in {self.tessdata} "
                f"(apt-get install {' '.join('tesseract-ocr-' + m for m in missing)}) or change "
                "the ocr_languages option"
            )
        try:
            return tesserocr.PyTessBaseAPI(path=self.tessdata, lang=self.languages)
        except RuntimeError as exc:
            raise UnsupportedInput(f"Tesseract cannot load {self.languages!r} from {self.tessdata}: {exc}") from None

    def read(self, image) -> tuple[str, float]:
        if self.api is None:
            self.api = self._open()
        self.api.SetImage(image)
        text = self.api.GetUTF8Text() or ""
        confidence = float(self.api.MeanTextConf())
        self.api.Clear()
        return text, confidence

    def close(self) -> None:
        if self.api is not None:
            self.api.End()
            self.api = None


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
    languages = str(options.get("ocr_languages") or DEFAULT_LANGUAGES).strip()
    tessdata = str(options.get("tessdata") or DEFAULT_TESSDATA)
    out_dir.mkdir(parents=True, exist_ok=True)

    pdf = open_pdf(src, options)
    ocr = _Ocr(tessdata, languages)
    texts: list[str] = []
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
                            found, confidence = ocr.read(image)
                            found = _normalise(found)
                            ocred += 1
                            confidences.append(confidence)
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
            "ocr_languages": languages,
            "ocr_mean_confidence": round(sum(confidences) / len(confidences), 1) if confidences else None,
        },
    )
