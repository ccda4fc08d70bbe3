"""The converter registry: every built-in converter, listed explicitly.

Adding a format adds a module here and a name to ``BUILTINS``; nothing else branches on type.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from converters.base import ConverterSpec

BUILTINS: tuple[str, ...] = (
    "inspect",  # every file: SHA-256, size, MIME type, kind, basic metadata
    "image_renditions",  # images: web rendition, previews, EXIF
    "ocr",  # images: text in the picture
    "language",  # any text: ISO 639-1 language
    "text_extract",  # plain text: normalised UTF-8 text
    "pdf_preview",  # PDF: first-page previews, page count, document metadata
    "pdf_text",  # PDF: text layer, OCR of pages without one
    "office_pdf",  # office documents: PDF through LibreOffice (unoserver)
    "drawing_render",  # DXF: SVG, previews, layers/units/extents
    "video_probe",  # video: duration, codecs, dimensions, bitrate
    "video_transcode",  # video: H.264/AAC MP4, faststart, <= 1080p
    "video_poster",  # video: poster frame and previews
    "archive_expand",  # ZIP: guarded expansion of members
    "archive_libarchive",  # 7z, RAR, tar(.gz/.bz2/.xz), .gz/.bz2/.xz: guarded expansion (libarchive)
    "email_parse",  # e-mail: headers, body text, sanitised printable HTML, attachments as members
    "audio_probe",  # audio: duration, codec, bitrate, sample rate, channels, tags
    "audio_transcode",  # audio: browser-ready MP3 or AAC/M4A (passed through when it already is)
    "audio_waveform",  # audio: waveform previews
    "markup_text",  # HTML, XML, JSON, EPUB: text, sanitised printable page, EPUB cover previews
    "svg_render",  # SVG: raster previews through librsvg, external references refused
)

#: the converters the design gives a work pool of their own in production: slow, memory-hungry,
#: or behind a third-party library that crashes and hangs (Tesseract, PDFium on whole documents,
#: LibreOffice, ezdxf, ffmpeg transcoding, archive expansion). The others are light (a few ms to a
#: few hundred ms, bounded input) and run in the mediator's warm child processes, where a step
#: costs no flow run (docs/distributed.md "Where a step runs"). ``fileflow up`` places steps so,
#: and so does the Helm chart by default (``converters.<name>.enabled``).
ON_POOLS: tuple[str, ...] = (
    "ocr", "pdf_text", "office_pdf", "drawing_render", "video_transcode", "audio_transcode", "archive_expand",
)


def design_placement() -> dict[str, str]:
    """``FILEFLOW_PLACEMENT`` of the design: every built-in converter not in ``ON_POOLS`` local."""
    return {name: "local" for name in BUILTINS if name not in ON_POOLS}


def load(name: str) -> ModuleType:
    """The module of a converter: a built-in name or, for extensions, a dotted module path."""
    module = importlib.import_module(name if "." in name else f"converters.{name}")
    if not isinstance(getattr(module, "SPEC", None), ConverterSpec) or not callable(
        getattr(module, "convert", None)
    ):
        raise TypeError(f"{module.__name__} is not a converter: it needs SPEC and convert()")
    return module


def implementation(name: str, module: str | None = None) -> ModuleType:
    """The module that runs converter ``name``: itself, or ``module`` where an operator replaced
    it (``FILEFLOW_CONVERTER_MODULES``, e.g. to try a fixed build). A replacement must declare
    the same ``SPEC.name``; its own version, timeout and retries apply."""
    if not module or module == name:
        return load(name)
    loaded = load(module)
    if loaded.SPEC.name != name:
        raise TypeError(f"{module} declares converter {loaded.SPEC.name!r}, so it cannot replace {name!r}")
    return loaded


def spec(name: str) -> ConverterSpec:
    return load(name).SPEC


def all_specs() -> dict[str, ConverterSpec]:
    return {name: spec(name) for name in BUILTINS}
