"""Every file: SHA-256, size, MIME type by content (libmagic), and the kind that routes it.

The kind is decided from the bytes, never from the user's file name: a PDF called ``photo.jpg``
is routed as a PDF. The name (option ``name``) is only a hint *within* text: libmagic calls most
CSV (``;``-separated, non-ASCII) and all Markdown ``text/plain``, so text is looked at again
(:func:`text_subtype`): a ``.csv``/``.tsv`` name with rows of a consistent number of fields
makes ``text/csv``, a ``.md``/``.markdown`` name makes ``text/markdown``; without such a name,
only unmistakable content does (five rows of the same field count, or Markdown headings with
lists, links or code fences). ``mime_magic`` then keeps what libmagic said. Office formats are zips; libmagic names them by their content types, so
they are routed as office documents and never expanded as archives.
"""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from converters.base import ConversionResult, ConverterSpec, require
from fileflow.errors import CorruptInput

SPEC = ConverterSpec(
    name="inspect",
    version="1.1.0",
    kinds=frozenset({"*"}),
    timeout_s=60,
    memory_mb=1024,
    description="SHA-256, size, MIME type by content and the file's kind",
)

_OFFICE = {
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.oasis.opendocument.text": "odt",
    "text/rtf": "rtf",
    "application/rtf": "rtf",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.oasis.opendocument.spreadsheet": "ods",
    "application/vnd.ms-powerpoint": "ppt",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
    "application/vnd.oasis.opendocument.presentation": "odp",
    "application/vnd.ms-word.document.macroEnabled.12": "docm",
    "application/vnd.ms-excel.sheet.macroEnabled.12": "xlsm",
    "application/vnd.ms-powerpoint.presentation.macroEnabled.12": "pptm",
}
_IMAGES = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/gif": "gif",
    "image/tiff": "tif",
    "image/bmp": "bmp",
    "image/x-ms-bmp": "bmp",
    "image/webp": "webp",
    "image/heic": "heic",
    "image/heif": "heif",
    "image/avif": "avif",
}
_VIDEOS = {
    "video/mp4": "mp4",
    "video/quicktime": "mov",
    "video/x-matroska": "mkv",
    "video/x-msvideo": "avi",
    "video/webm": "webm",
}
_AUDIO = {
    "audio/mpeg": "mp3",
    "audio/x-m4a": "m4a",
    "audio/mp4": "m4a",
    "audio/x-wav": "wav",
    "audio/wav": "wav",
    "audio/ogg": "ogg",
    "audio/flac": "flac",
    "audio/x-flac": "flac",
    "audio/x-hx-aac-adts": "aac",
    "audio/aac": "aac",
    "audio/x-aiff": "aiff",
}
_OTHERS = {
    "application/pdf": ("pdf", "pdf"),
    "image/vnd.dxf": ("drawing", "dxf"),
    "image/vnd.dwg": ("drawing", "dwg"),
    "application/zip": ("archive", "zip"),
    "application/x-7z-compressed": ("archive", "7z"),
    "application/x-rar": ("archive", "rar"),
    "application/vnd.rar": ("archive", "rar"),
    "application/x-tar": ("archive", "tar"),
    "application/gzip": ("archive", "gz"),
    "application/x-gzip": ("archive", "gz"),
    "application/x-bzip2": ("archive", "bz2"),
    "application/x-xz": ("archive", "xz"),
    "application/zstd": ("archive", "zst"),
    "message/rfc822": ("email", "eml"),
    "application/vnd.ms-outlook": ("email", "msg"),
    "text/html": ("markup", "html"),
    "application/xhtml+xml": ("markup", "html"),
    "text/xml": ("markup", "xml"),
    "application/xml": ("markup", "xml"),
    "application/json": ("markup", "json"),
    "application/epub+zip": ("markup", "epub"),
    "image/svg+xml": ("markup", "svg"),
    "text/plain": ("text", "txt"),
    "text/csv": ("text", "csv"),
    "text/markdown": ("text", "md"),
}

#: MIME type -> (kind, file extension the converters see)
TYPES: dict[str, tuple[str, str]] = {
    **{mime: ("office", ext) for mime, ext in _OFFICE.items()},
    **{mime: ("image", ext) for mime, ext in _IMAGES.items()},
    **{mime: ("video", ext) for mime, ext in _VIDEOS.items()},
    **{mime: ("audio", ext) for mime, ext in _AUDIO.items()},
    **_OTHERS,
}


def classify(mime: str) -> tuple[str, str]:
    """(kind, extension) of a MIME type; ("unknown", "bin") for types nobody handles."""
    return TYPES.get(mime, ("unknown", "bin"))


_CSV_NAMES = (".csv", ".tsv", ".tab")
_MD_NAMES = (".md", ".markdown", ".mdown", ".mkd")
_MD_MARKERS = {
    "heading": re.compile(r"^#{1,6} \S", re.M),
    "list": re.compile(r"^\s{0,3}(?:[-*+]|\d{1,3}[.)]) \S", re.M),
    "link": re.compile(r"\[[^\]\n]+\]\([^)\s]+\)"),
    "fence": re.compile(r"^(?:```|~~~)", re.M),
    "emphasis": re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__"),
    "table": re.compile(r"^\|?\s*:?-{3,}:?\s*\|", re.M),
}
_SAMPLE = 64 * 1024


def csv_dialect(sample: str, min_rows: int) -> str | None:
    """The delimiter of ``sample`` when its first lines (up to 50) all split into the same
    number (at least 2) of fields, quotes respected, with at least ``min_rows`` lines."""
    lines = [line for line in sample.splitlines()[:51] if line.strip()]
    if len(sample) >= _SAMPLE and len(lines) > 1:
        lines = lines[:-1]  # the sample may end inside a line
    if len(lines) < min_rows:
        return None
    best = None
    for delimiter in (",", ";", "\t", "|"):
        try:
            counts = {len(row) for row in csv.reader(lines, delimiter=delimiter)}
        except csv.Error:
            continue
        if len(counts) == 1 and (fields := counts.pop()) >= 2 and (best is None or fields > best[1]):
            best = (delimiter, fields)
    return best[0] if best else None


def text_subtype(src: Path, mime: str, name: str) -> str:
    """``mime`` refined for text that libmagic calls plain (see the module docstring)."""
    if mime != "text/plain":
        return mime
    with src.open("rb") as fh:
        sample = fh.read(_SAMPLE).decode("utf-8", errors="replace")
    suffix = PurePosixPath(name.replace("\\", "/")).suffix.lower() if name else ""
    if suffix in _CSV_NAMES:
        return "text/csv" if csv_dialect(sample, min_rows=2) else mime
    if suffix in _MD_NAMES:
        return "text/markdown"
    if csv_dialect(sample, min_rows=5):
        return "text/csv"
    markers = {kind for kind, pattern in _MD_MARKERS.items() if pattern.search(sample)}
    if "heading" in markers and len(markers) >= 2 or {"fence", "table"} <= markers:
        return "text/markdown"
    return mime


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult:
    magic = require("magic", "python-magic", "libmagic1")
    size = src.stat().st_size
    if size == 0:
        raise CorruptInput("the file is empty (0 bytes)")
    magic_mime = magic.from_file(str(src), mime=True)
    mime = text_subtype(src, magic_mime, str(options.get("name") or ""))
    kind, extension = classify(mime)
    extra = {"mime_magic": magic_mime} if mime != magic_mime else {}
    return ConversionResult(
        metadata={
            **extra,
            "sha256": sha256_of(src),
            "size": size,
            "mime": mime,
            "description": magic.from_file(str(src)),
            "kind": kind,
            "extension": extension,
        }
    )
