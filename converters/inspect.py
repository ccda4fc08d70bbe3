"""Every file: SHA-256, size, MIME type by content (libmagic), and the kind that routes it.

The kind is decided from the bytes, never from the user's file name: a PDF called ``photo.jpg``
is routed as a PDF. Office formats are zips; libmagic names them by their content types, so
they are routed as office documents and never expanded as archives.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

from converters.base import ConversionResult, ConverterSpec, require
from fileflow.errors import CorruptInput

SPEC = ConverterSpec(
    name="inspect",
    version="1.0.0",
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
    mime = magic.from_file(str(src), mime=True)
    kind, extension = classify(mime)
    return ConversionResult(
        metadata={
            "sha256": sha256_of(src),
            "size": size,
            "mime": mime,
            "description": magic.from_file(str(src)),
            "kind": kind,
            "extension": extension,
        }
    )
