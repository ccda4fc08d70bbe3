"""Text in markup: HTML, XML, JSON and EPUB give their text; HTML and EPUB a printable page.

* HTML: the text a reader sees (:func:`html_clean.plain_text`) in ``text.txt``, and ``page.html``
  (role ``web``): the body sanitised to an allow-list with no attributes, so printing it (the
  markup flow sends it to LibreOffice) fetches nothing. Metadata: ``title``, ``encoding``.
* XML: the text of every element, one element per line, parsed by ``defusedxml`` with DTDs,
  entity declarations and external references forbidden: a billion-laughs document or an
  external entity (``<!ENTITY x SYSTEM "file:///etc/passwd">``) is refused with
  :class:`CorruptInput` before anything is expanded or read. Metadata: ``root`` (the root
  element's name), ``elements``.
* JSON: every string value, one per line, in document order. Metadata: ``top`` (object, array
  ...), ``strings``.
* EPUB (a zip, never expanded as an archive): the chapters in reading order (the OPF spine) made
  plain; ``title``, ``creator``, ``language``, ``publisher`` from the OPF. A cover image (EPUB 3
  ``cover-image`` or EPUB 2 ``<meta name="cover">``) gives ``preview-<size>.jpg`` directly;
  without one, ``page.html`` holds the first chapters, sanitised, and the flow prints its first
  page. Entries are read with a bound on the bytes each may produce, ratio and declared sizes
  checked first (the archive limits).

Limits: ``max_bytes`` (50 MiB) of input and of text made; documents nested so deeply that the
parser recurses too far fail with :class:`LimitExceeded`. Bytes that do not parse as the
format's MIME type says fail with :class:`CorruptInput`.
"""

from __future__ import annotations

import json
import posixpath
import zipfile
from pathlib import Path
from typing import Any, Mapping

from converters import html_clean
from converters.archive_expand import DEFAULTS
from converters.base import ConversionResult, ConverterSpec, Rendition, require
from converters.options import int_option, preview_sizes
from converters.text_extract import decode
from fileflow.errors import CorruptInput, LimitExceeded, UnsupportedInput

SPEC = ConverterSpec(
    name="markup_text",
    version="1.0.0",
    kinds=frozenset({"markup"}),
    timeout_s=120,
    memory_mb=2048,
    retries=1,
    description="HTML, XML, JSON, EPUB: text (XML without entities or DTD fetches), sanitised printable page, EPUB cover",
    reads=frozenset({"preview_sizes"}),
)

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
PAGE_CHARS = 200_000  # of an EPUB's first chapters put on the printable page
_FORMATS = {
    "text/html": "html", "application/xhtml+xml": "html",
    "text/xml": "xml", "application/xml": "xml",
    "application/json": "json",
    "application/epub+zip": "epub",
}
_SUFFIXES = {".html": "html", ".htm": "html", ".xhtml": "html", ".xml": "xml", ".json": "json", ".epub": "epub"}
_OPF_NS = "{http://www.idpf.org/2007/opf}"
_DC_NS = "{http://purl.org/dc/elements/1.1/}"
_CONTAINER_NS = "{urn:oasis:names:tc:opendocument:xmlns:container}"


def _format(src: Path, options: Mapping[str, Any]) -> str:
    mime = str(options.get("mime") or "").split(";")[0].strip().lower()
    fmt = _FORMATS.get(mime) or _SUFFIXES.get(src.suffix.lower())
    if fmt is None:
        raise UnsupportedInput(f"{mime or src.suffix or 'this type'} is not HTML, XML, JSON or EPUB")
    return fmt


def _read(src: Path, max_bytes: int) -> bytes:
    size = src.stat().st_size
    if size > max_bytes:
        raise LimitExceeded(f"the file is {size:,} bytes; the limit is {max_bytes:,} (option max_bytes)")
    return src.read_bytes()


def parse_xml(data: bytes | str):
    """An ElementTree root with DTDs, entities and external references forbidden."""
    ET = require("defusedxml.ElementTree", "defusedxml")
    defused = require("defusedxml", "defusedxml")
    try:
        return ET.fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except defused.DTDForbidden:
        raise CorruptInput(
            "hostile or unsupported XML: it has a document type declaration (DTD), which could declare "
            "entities (billion laughs) or external files; DTDs are never processed"
        ) from None
    except defused.EntitiesForbidden:
        raise CorruptInput("hostile XML: it declares entities (entity expansion is never done)") from None
    except defused.ExternalReferenceForbidden:
        raise CorruptInput("hostile XML: it references an external resource (never fetched)") from None
    except RecursionError:
        raise LimitExceeded("the XML is nested too deeply to read") from None
    except Exception as exc:  # expat's ParseError and friends
        raise CorruptInput(f"the XML is not well-formed ({exc})") from None


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _xml(data: bytes) -> tuple[str, dict[str, Any]]:
    root = parse_xml(data)
    lines: list[str] = []
    elements = 0
    try:
        for element in root.iter():
            elements += 1
            for piece in (element.text, element.tail):
                if piece and piece.strip():
                    lines.append(piece.strip())
    except RecursionError:
        raise LimitExceeded("the XML is nested too deeply to read") from None
    return "\n".join(lines) + ("\n" if lines else ""), {"root": _local(root.tag), "elements": elements}


def _json(data: bytes) -> tuple[str, dict[str, Any]]:
    text, _encoding, _bom = decode(data)
    try:
        value = json.loads(text)
    except RecursionError:
        raise LimitExceeded("the JSON is nested too deeply to read") from None
    except ValueError as exc:
        raise CorruptInput(f"the JSON is not valid ({exc})") from None
    strings: list[str] = []
    stack = [value]
    while stack:  # iterative: depth is bounded by the parser above, not by this walk
        item = stack.pop()
        if isinstance(item, str):
            if item.strip():
                strings.append(item.strip())
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))
    top = type(value).__name__.replace("dict", "object").replace("list", "array").replace("str", "string")
    return "\n".join(strings) + ("\n" if strings else ""), {"top": top, "strings": len(strings)}


def _html(data: bytes) -> tuple[str, str, dict[str, Any]]:
    markup, encoding, _bom = decode(data)
    if "\0" in markup:
        raise CorruptInput("the file is not HTML: it holds NUL bytes")
    title = _title(markup)
    body = html_clean.sanitise(markup)
    return html_clean.plain_text(markup), html_clean.page(title or "document", body), {"title": title, "encoding": encoding}


def _title(markup: str) -> str | None:
    import re

    match = re.search(r"<title[^>]*>(.*?)</title", markup[:200_000], re.I | re.S)
    if not match:
        return None
    return html_clean.plain_text(match.group(1)).strip()[:500] or None


# --- EPUB -----------------------------------------------------------------------------------------


class _Book:
    """Bounded reads from an EPUB's zip (the archive limits: declared size, ratio)."""

    def __init__(self, src: Path, opts: dict[str, int]) -> None:
        try:
            self.zf = zipfile.ZipFile(src)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise CorruptInput(f"the EPUB is not a readable zip ({exc})") from None
        if len(self.zf.infolist()) > opts["max_entries"]:
            raise LimitExceeded(f"the EPUB has more than {opts['max_entries']} entries (option max_entries)")
        self.opts = opts

    def read(self, name: str) -> bytes:
        try:
            info = self.zf.getinfo(name)
        except KeyError:
            raise CorruptInput(f"the EPUB is damaged: {name!r} is missing") from None
        if info.flag_bits & 0x1:
            raise UnsupportedInput("the EPUB is encrypted (DRM): its text cannot be read")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise UnsupportedInput(f"the EPUB entry {name!r} uses a compression EPUB does not allow")
        limit = min(self.opts["max_entry_bytes"], self.opts["max_bytes"])
        if info.file_size > limit:
            raise LimitExceeded(f"the EPUB entry {name!r} declares {info.file_size} bytes; the limit is {limit}")
        if info.file_size > self.opts["ratio_min_bytes"] and info.file_size / max(info.compress_size, 1) > self.opts["max_ratio"]:
            raise LimitExceeded(f"zip bomb: the EPUB entry {name!r} expands more than {self.opts['max_ratio']} times")
        try:
            with self.zf.open(info) as fh:
                data = fh.read(limit + 1)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise CorruptInput(f"the EPUB entry {name!r} is damaged ({exc})") from None
        if len(data) > limit:
            raise LimitExceeded(f"the EPUB entry {name!r} expands past {limit} bytes")
        return data


def _epub(src: Path, out_dir: Path, opts: dict[str, int], options: Mapping[str, Any]):
    book = _Book(src, opts)
    with book.zf:
        container = parse_xml(book.read("META-INF/container.xml"))
        rootfile = container.find(f".//{_CONTAINER_NS}rootfile")
        if rootfile is None or not rootfile.get("full-path"):
            raise CorruptInput("the EPUB is damaged: META-INF/container.xml names no package document")
        opf_path = rootfile.get("full-path")
        opf = parse_xml(book.read(opf_path))
        base = posixpath.dirname(opf_path)
        manifest = {
            item.get("id"): item for item in opf.iter(f"{_OPF_NS}item") if item.get("id") and item.get("href")
        }

        def path_of(item) -> str:
            from urllib.parse import unquote

            return posixpath.normpath(posixpath.join(base, unquote(item.get("href").split("#")[0])))

        meta = {key: (opf.findtext(f".//{_DC_NS}{key}") or "").strip() or None
                for key in ("title", "creator", "language", "publisher")}
        chapters: list[str] = []
        pages: list[str] = []
        page_chars = 0
        total = 0
        for ref in opf.iter(f"{_OPF_NS}itemref"):
            item = manifest.get(ref.get("idref"))
            if item is None or "html" not in (item.get("media-type") or ""):
                continue
            markup, _encoding, _bom = decode(book.read(path_of(item)))
            text = html_clean.plain_text(markup)
            total += len(text)
            if total > opts["max_bytes"]:
                raise LimitExceeded(f"the EPUB's text passes {opts['max_bytes']} characters (option max_bytes)")
            chapters.append(text)
            if page_chars < PAGE_CHARS:
                pages.append(html_clean.sanitise(markup))
                page_chars += len(text)
        cover = _cover_item(opf, manifest)
        renditions: list[Rendition] = []
        if cover is not None:
            renditions = _cover_previews(book.read(path_of(cover)), out_dir, options)
    meta["chapters"] = len(chapters)
    meta["cover"] = bool(renditions)
    page = None if renditions else html_clean.page(meta["title"] or "book", "\n".join(pages))
    return "\n".join(chapters), page, meta, renditions


def _cover_item(opf, manifest: dict[str, Any]):
    for item in manifest.values():
        if "cover-image" in (item.get("properties") or "").split():
            return item
    for meta in opf.iter(f"{_OPF_NS}meta"):
        if meta.get("name") == "cover" and meta.get("content") in manifest:
            item = manifest[meta.get("content")]
            if (item.get("media-type") or "").startswith("image/"):
                return item
    return None


def _cover_previews(data: bytes, out_dir: Path, options: Mapping[str, Any]) -> list[Rendition]:
    import io

    Image = require("PIL.Image", "pillow")
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > 50_000_000:
                raise LimitExceeded("the EPUB's cover picture has more than 50 million pixels")
            im.load()
            picture = im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return []  # a broken cover: the first page is printed instead
    renditions = []
    for size in preview_sizes(options, accept_single=True):
        copy = picture.copy()
        copy.thumbnail((size, size), Image.Resampling.LANCZOS)
        name = f"preview-{size}.jpg"
        copy.save(out_dir / name, "JPEG", quality=85, optimize=True)
        renditions.append(Rendition("preview", name, "image/jpeg", copy.width, copy.height))
    return renditions


# --- the converter ---------------------------------------------------------------------------------


def convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult:
    src, out_dir = Path(src), Path(out_dir)
    opts = {key: int_option(options, key, default, minimum=0) for key, default in DEFAULTS.items()}
    opts["max_bytes"] = int_option(options, "max_bytes", DEFAULT_MAX_BYTES, minimum=1)
    fmt = _format(src, options)
    out_dir.mkdir(parents=True, exist_ok=True)
    page: str | None = None
    renditions: list[Rendition] = []
    if fmt == "epub":
        if src.stat().st_size > opts["max_bytes"]:
            raise LimitExceeded(f"the EPUB is larger than {opts['max_bytes']:,} bytes (option max_bytes)")
        text, page, meta, renditions = _epub(src, out_dir, opts, options)
    else:
        data = _read(src, opts["max_bytes"])
        if fmt == "html":
            text, page, meta = _html(data)
        elif fmt == "xml":
            text, meta = _xml(data)
        else:
            text, meta = _json(data)
    meta = {"format": fmt, **meta, "chars": len(text)}
    (out_dir / "text.txt").write_text(text, encoding="utf-8")
    renditions.insert(0, Rendition("text", "text.txt", "text/plain"))
    if page is not None:
        (out_dir / "page.html").write_text(page, encoding="utf-8")
        renditions.append(Rendition("web", "page.html", "text/html"))
    return ConversionResult(renditions=renditions, metadata=meta)
