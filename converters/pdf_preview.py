"""PDF: JPEG previews of the first page, the page count, page 1's size and the document metadata.

Kinds ``pdf`` and ``office``: an office document is previewed through the PDF that
``office_pdf`` made of it (the mediator passes that rendition as ``src``); given the office file
itself, this converter says so with :class:`UnsupportedInput`.

Outputs ``preview-<size>.jpg`` for every size in ``preview_sizes`` (default 160, 480, 1280): the
first page is rendered once by PDFium so that its long side is the largest size, and the
smaller previews are downscaled from that bitmap. A PDF page is vector data, so previews always
have their long side exactly ``size`` (there is no pixel size to stay below). A page more than
``preview_max_aspect`` (default 4) times longer than wide, or wider than long (a till receipt,
a banner), is previewed by its start - the top, or the left side - cut to exactly that shape;
``preview_crop_pt`` then gives the part shown (left, top, right, bottom in points from the top
left), else it is None.

Options: ``preview_sizes``, ``preview_max_aspect``, ``max_pages`` (default 5000; more -> :class:`LimitExceeded`),
``jpeg_quality`` (default 85).

Metadata: ``page_count``, ``page_width_pt``/``page_height_pt`` (page 1 as displayed, rotation
applied), ``page_rotation``, ``encrypted`` and, from pypdf, ``title``, ``author``, ``subject``,
``creator``, ``producer``, ``creation_date``/``modification_date`` (ISO 8601 or None),
``pdf_version``. Where pypdf cannot read a file PDFium could, the document information comes
from PDFium instead and ``metadata_source`` says so.

Errors: not a PDF / truncated / garbage -> :class:`CorruptInput`; a PDF that needs a password
to open -> :class:`UnsupportedInput` ("password-protected PDF"); PDFs that are encrypted with
an empty user password (only "owner" restrictions) open normally and report ``encrypted``.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Mapping

from converters.base import ConversionResult, ConverterSpec, Rendition, require
from converters.geometry import aspect_crop, fit_long_side
from converters.options import int_option, max_aspect, preview_sizes
from fileflow.errors import CorruptInput, LimitExceeded, UnsupportedInput

SPEC = ConverterSpec(
    name="pdf_preview",
    version="1.1.0",
    kinds=frozenset({"pdf", "office"}),
    timeout_s=120,
    memory_mb=2048,
    retries=1,
    description="JPEG previews of page 1 (PDFium), page count, page size and document metadata (pypdf)",
    reads=frozenset({"preview_sizes"}),
)

DEFAULT_MAX_PAGES = 5000
DEFAULT_JPEG_QUALITY = 85

_OFFICE_MIMES = (
    "application/vnd.openxmlformats-officedocument.", "application/vnd.oasis.opendocument.",
    "application/msword", "application/vnd.ms-", "application/rtf", "text/rtf",
)
_OFFICE_SUFFIXES = {f".{ext}" for ext in "doc docx docm xls xlsx xlsm ppt pptx pptm odt ods odp rtf".split()}

# PDFium's FPDF_GetLastError codes
_ERR_FORMAT, _ERR_PASSWORD, _ERR_SECURITY = 3, 4, 6
_MAX_META = 1024


# --------------------------------------------------------------------------- shared helpers
def open_pdf(src: Path, options: Mapping[str, Any]):
    """Open ``src`` with PDFium, or raise the typed error a user can act on.

    Shared by ``pdf_preview`` and ``pdf_text``.
    """
    pdfium = require("pypdfium2", "pypdfium2")
    size = src.stat().st_size
    if size == 0:
        raise CorruptInput("the PDF file is empty (0 bytes)")
    with open(src, "rb") as fh:
        head = fh.read(1024)
    if b"%PDF-" not in head:
        mime = str(options.get("mime") or "").lower()
        if mime.startswith(_OFFICE_MIMES) or src.suffix.lower() in _OFFICE_SUFFIXES:
            raise UnsupportedInput(
                f"this step reads PDFs, and the input is an office document ({mime or src.suffix}): "
                "it is previewed and read through the PDF made by the office_pdf step"
            )
        raise CorruptInput("the file is not a PDF (no %PDF- header in its first kilobyte)")
    try:
        return pdfium.PdfDocument(str(src))
    except pdfium.PdfiumError as exc:
        code = getattr(exc, "err_code", None)
        if code == _ERR_PASSWORD:
            raise UnsupportedInput(
                "password-protected PDF: it cannot be opened without its password; remove the "
                "password (print or save it unprotected) and upload it again"
            ) from None
        if code == _ERR_SECURITY:
            raise UnsupportedInput(
                "the PDF uses an encryption scheme (security handler) that is not supported; "
                "save it without encryption and upload it again"
            ) from None
        raise CorruptInput(f"the PDF is damaged or truncated and cannot be read ({exc})") from None
    except MemoryError:
        raise LimitExceeded("opening the PDF needs more memory than this step may use") from None


def check_pages(pdf, max_pages: int) -> int:
    try:
        count = len(pdf)
    except Exception as exc:  # noqa: BLE001 - PDFium errors surface as various types
        raise CorruptInput(f"the PDF's page tree is damaged ({exc})") from None
    if count <= 0:
        raise CorruptInput("the PDF has no pages")
    if count > max_pages:
        raise LimitExceeded(f"the PDF has {count:,} pages, more than the limit of {max_pages:,}")
    return count


def _clean(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).replace("\x00", "").strip()
    return text[:_MAX_META] or None


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.isoformat()
    return None


_PDF_DATE = re.compile(
    r"^(?:D:)?(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?\s*(?:(Z)|([+-])(\d{2})'?(\d{2})?'?)?"
)


def _pdf_date(raw: str | None) -> str | None:
    """A PDF date string (``D:YYYYMMDDHHmmSS+HH'mm'``) as ISO 8601, or None."""
    match = _PDF_DATE.match((raw or "").strip())
    if not match:
        return None
    year, month, day, hour, minute, second, zulu, sign, tz_h, tz_m = match.groups()
    try:
        tz = None
        if zulu:
            tz = timezone.utc
        elif sign:
            offset = timedelta(hours=int(tz_h), minutes=int(tz_m or 0))
            tz = timezone(-offset if sign == "-" else offset)
        value = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0),
                         int(minute or 0), int(second or 0), tzinfo=tz)
    except ValueError:
        return None
    return value.isoformat()


def _pypdf_metadata(src: Path) -> dict[str, Any]:
    pypdf = require("pypdf", "pypdf")
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # "EOF marker not found" and friends
    reader = pypdf.PdfReader(str(src), strict=False)
    encrypted = bool(reader.is_encrypted)
    if encrypted:
        reader.decrypt("")  # PDFium already opened it, so the user password is empty
    info = reader.metadata or {}

    def field(attr: str) -> Any:
        try:
            return getattr(info, attr)
        except Exception:  # noqa: BLE001 - malformed dates and strings
            return None

    return {
        "title": _clean(field("title")),
        "author": _clean(field("author")),
        "subject": _clean(field("subject")),
        "creator": _clean(field("creator")),
        "producer": _clean(field("producer")),
        # pypdf refuses some producers' dates (LibreOffice writes "D:20240101120000Z'")
        "creation_date": _iso(field("creation_date")) or _pdf_date(_clean(info.get("/CreationDate"))),
        "modification_date": _iso(field("modification_date")) or _pdf_date(_clean(info.get("/ModDate"))),
        "encrypted": encrypted,
        "pdf_version": _clean(getattr(reader, "pdf_header", "").replace("%PDF-", "")),
        "metadata_source": "pypdf",
    }


def _pdfium_metadata(pdf) -> dict[str, Any]:
    pdfium_raw = require("pypdfium2.raw", "pypdfium2")
    try:
        meta = pdf.get_metadata_dict(skip_empty=True)
    except Exception:  # noqa: BLE001
        meta = {}
    try:
        encrypted = pdfium_raw.FPDF_GetSecurityHandlerRevision(pdf) != -1
    except Exception:  # noqa: BLE001
        encrypted = None
    try:
        version = pdf.get_version()
        version = f"{version // 10}.{version % 10}" if version else None
    except Exception:  # noqa: BLE001
        version = None
    return {
        "title": _clean(meta.get("Title")),
        "author": _clean(meta.get("Author")),
        "subject": _clean(meta.get("Subject")),
        "creator": _clean(meta.get("Creator")),
        "producer": _clean(meta.get("Producer")),
        "creation_date": _pdf_date(meta.get("CreationDate")),
        "modification_date": _pdf_date(meta.get("ModDate")),
        "encrypted": encrypted,
        "pdf_version": version,
        "metadata_source": "pdfium",
    }


def document_metadata(src: Path, pdf) -> dict[str, Any]:
    try:
        return _pypdf_metadata(src)
    except MemoryError:
        raise LimitExceeded("reading the PDF's metadata needs more memory than this step may use") from None
    except Exception:  # noqa: BLE001 - pypdf is stricter than PDFium on damaged files
        return _pdfium_metadata(pdf)


# --------------------------------------------------------------------------- convert
def convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult:
    Image = require("PIL.Image", "pillow")
    sizes = preview_sizes(options, accept_single=False)  # largest first
    if not sizes:
        raise ValueError(f"preview sizes must lie between 1 and 8192 pixels, got {sizes}")
    max_pages = int_option(options, "max_pages", DEFAULT_MAX_PAGES, minimum=1)
    aspect = max_aspect(options)
    quality = min(95, int_option(options, "jpeg_quality", DEFAULT_JPEG_QUALITY, minimum=1))
    out_dir.mkdir(parents=True, exist_ok=True)

    pdf = open_pdf(src, options)
    try:
        page_count = check_pages(pdf, max_pages)
        try:
            pdf.init_forms()  # so that filled-in form fields appear in the preview
        except Exception:  # noqa: BLE001 - forms are optional decoration
            pass
        try:
            page = pdf[0]
            width_pt, height_pt = page.get_size()
            rotation = page.get_rotation()
        except Exception as exc:  # noqa: BLE001
            raise CorruptInput(f"the first page of the PDF cannot be read ({exc})") from None
        if not (width_pt > 0 and height_pt > 0):
            raise CorruptInput(f"the first page of the PDF has no area ({width_pt} x {height_pt} pt)")
        # a page longer than 4:1 (a receipt, a banner) is previewed by its start: its top, or its
        # left side when wide, cut to that shape (geometry.aspect_crop)
        left, top, right, bottom = aspect_crop(width_pt, height_pt, aspect, anchor="start")
        crop = (left, height_pt - bottom, width_pt - right, top)  # PDFium: cut (left, bottom, right, top)
        largest = sizes[0]
        scale = largest / max(right - left, bottom - top)
        try:
            bitmap = page.render(scale=scale, crop=crop, may_draw_forms=True)
            rendered = bitmap.to_pil().convert("RGB")
        except MemoryError:
            raise LimitExceeded("rendering the first page needs more memory than this step may use") from None
        except Exception as exc:  # noqa: BLE001
            raise CorruptInput(f"the first page of the PDF cannot be rendered ({exc})") from None
        finally:
            page.close()
        metadata = document_metadata(src, pdf)
    finally:
        pdf.close()

    renditions = []
    for size in sizes:
        w, h = fit_long_side(rendered.width, rendered.height, size, enlarge=True)  # pages are vector
        image = rendered if rendered.size == (w, h) else rendered.resize((w, h), Image.Resampling.LANCZOS)
        name = f"preview-{size}.jpg"
        image.save(out_dir / name, "JPEG", quality=quality, optimize=True, progressive=size >= 480)
        renditions.append(Rendition(role="preview", path=name, mime="image/jpeg", width=w, height=h))

    return ConversionResult(
        renditions=renditions,
        metadata={
            "page_count": page_count,
            "page_width_pt": round(width_pt, 2),  # as displayed: /Rotate applied by PDFium
            "page_height_pt": round(height_pt, 2),
            "page_rotation": rotation,
            "preview_crop_pt": None if (right - left, bottom - top) == (width_pt, height_pt)
            else [round(v, 2) for v in (left, top, right, bottom)],
            **metadata,
        },
    )
