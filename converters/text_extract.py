"""Plain text, CSV and Markdown: the text as normalised UTF-8, with its encoding and size.

Encoding: a byte-order mark decides first (UTF-8, UTF-16, UTF-32), then strict UTF-8, then
charset-normalizer. Short texts are ambiguous in 8-bit code pages; among the guesses that fit
equally well the common Western and Central/Eastern European ones win, and a text whose bytes
read the same in Windows-1252 is reported as ``cp1252``.

``text.txt`` holds the text in UTF-8 without BOM, Unicode NFC, with ``\\n`` line ends.
Metadata: ``encoding``, ``bom``, ``newlines`` (lf, crlf, cr, mixed, none), ``lines``, ``chars``,
``format`` (plain, csv, markdown) and, for CSV, ``delimiter``, ``columns`` (fields in the
header row), ``header`` (its first 50 names) and ``rows`` (records after the header).

Binary data posing as text (no encoding fits, NUL or other control characters) fails with
:class:`CorruptInput`; a file larger than ``max_bytes`` (default 50 MB) with
:class:`LimitExceeded`. An empty file is an empty text.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import unicodedata
from pathlib import Path
from typing import Any, Mapping

from converters.base import ConversionResult, ConverterSpec, Rendition, require
from converters.options import int_option
from fileflow.errors import CorruptInput, LimitExceeded

SPEC = ConverterSpec(
    name="text_extract",
    version="1.0.0",
    kinds=frozenset({"text"}),
    timeout_s=120,
    memory_mb=2048,
    retries=1,
    description="Plain text, CSV, Markdown: encoding detection and normalised UTF-8 text",
)

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
_BOMS = (  # longest first: the UTF-32 LE mark starts with the UTF-16 LE one
    (codecs.BOM_UTF32_LE, "utf-32-le", "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32-be", "utf-32"),
    (codecs.BOM_UTF8, "utf-8", "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "utf-16"),
)
#: among equally good guesses, the first of these wins
_PREFERRED = (
    "ascii", "utf_8", "cp1252", "latin_1", "iso8859_15", "cp1250", "iso8859_2", "cp1251",
    "koi8_r", "iso8859_5", "cp1253", "iso8859_7", "cp1254", "iso8859_9", "cp1257", "mac_roman",
    "utf_16", "utf_16_le", "utf_16_be", "shift_jis", "euc_jp", "gb18030", "big5", "euc_kr", "cp949",
)
#: control characters (Unicode category Cc) other than tab, newlines, form feed, vertical tab and
#: ESC (terminal colours in logs)
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f-\x9f]")
_MAX_CONTROL_RATIO = 0.01
_CSV_MIMES = {"text/csv", "application/csv", "text/comma-separated-values"}
_MD_MIMES = {"text/markdown", "text/x-markdown"}


def decode(data: bytes) -> tuple[str, str, bool]:
    """(text, encoding name, had BOM); CorruptInput when no text encoding fits the bytes."""
    for bom, codec, name in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom):].decode(codec), name, True
            except UnicodeDecodeError:
                raise CorruptInput(f"the file starts with a {name} byte-order mark but is not valid {name}") from None
    try:
        return data.decode("utf-8"), "utf-8", False
    except UnicodeDecodeError:
        pass
    charset_normalizer = require("charset_normalizer", "charset-normalizer")
    matches = charset_normalizer.from_bytes(data)
    best = matches.best()
    if best is None:
        raise CorruptInput("the file is not text: no character encoding fits its bytes (binary data?)")
    ties = [m for m in matches if m.chaos <= best.chaos + 0.01 and m.coherence >= best.coherence - 0.01]
    rank = {name: i for i, name in enumerate(_PREFERRED)}
    chosen = min(ties or [best], key=lambda m: rank.get(m.encoding, len(rank)))
    text = str(chosen)
    encoding = chosen.encoding
    if encoding not in ("cp1252", "ascii") and encoding.startswith(("cp125", "iso8859", "latin", "mac_")):
        try:
            if data.decode("cp1252") == text:
                encoding = "cp1252"
        except UnicodeDecodeError:
            pass
    return text, encoding, False


def _looks_binary(text: str) -> bool:
    if "\x00" in text:
        return True
    allowed = max(2, int(len(text) * _MAX_CONTROL_RATIO))
    for count, _ in enumerate(_CONTROL.finditer(text), start=1):
        if count > allowed:
            return True
    return False


def _newlines(text: str) -> str:
    crlf = text.count("\r\n")
    cr = text.count("\r") - crlf
    lf = text.count("\n") - crlf
    kinds = [name for name, n in (("crlf", crlf), ("lf", lf), ("cr", cr)) if n]
    return "none" if not kinds else kinds[0] if len(kinds) == 1 else "mixed"


def _csv_metadata(text: str) -> dict[str, Any]:
    sample = text[:64 * 1024]
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        delimiter = ","
    old_limit = csv.field_size_limit()
    csv.field_size_limit(16 * 1024 * 1024)
    try:
        reader = csv.reader(io.StringIO(text), delimiter=delimiter)
        header: list[str] | None = None
        rows = 0
        for record in reader:
            if header is None:
                if not any(field.strip() for field in record):
                    continue  # blank lines before the header
                header = record
                continue
            if record:
                rows += 1
    except csv.Error as exc:
        return {"csv_error": f"the CSV could not be parsed: {exc}"}
    finally:
        csv.field_size_limit(old_limit)
    header = header or []
    return {
        "delimiter": delimiter,
        "columns": len(header),
        "header": [name.strip()[:200] for name in header[:50]],
        "rows": rows,
    }


def _format(src: Path, mime: str) -> str:
    suffix = src.suffix.lower()
    if mime in _CSV_MIMES or suffix == ".csv":
        return "csv"
    if mime in _MD_MIMES or suffix in (".md", ".markdown"):
        return "markdown"
    return "plain"


def convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult:
    max_bytes = int_option(options, "max_bytes", DEFAULT_MAX_BYTES, minimum=1)
    size = src.stat().st_size
    if size > max_bytes:
        raise LimitExceeded(f"the text file is {size:,} bytes, more than the limit of {max_bytes:,} bytes")
    with src.open("rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew since stat()
        raise LimitExceeded(f"the text file is larger than the limit of {max_bytes:,} bytes")

    if data:
        text, encoding, bom = decode(data)
        if _looks_binary(text):
            raise CorruptInput(
                f"the file is not text: it holds NUL or control bytes (read as {encoding}); "
                "it may be a binary file with a wrong type"
            )
    else:
        text, encoding, bom = "", "utf-8", False
    newlines = _newlines(text)
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "text.txt").write_text(text, encoding="utf-8", newline="\n")
    fmt = _format(src, str(options.get("mime") or ""))
    metadata: dict[str, Any] = {
        "encoding": encoding,
        "bom": bom,
        "newlines": newlines,
        "lines": text.count("\n") + (1 if text and not text.endswith("\n") else 0),
        "chars": len(text),
        "format": fmt,
    }
    if fmt == "csv":
        metadata.update(_csv_metadata(text))
    return ConversionResult(renditions=[Rendition("text", "text.txt", "text/plain")], metadata=metadata)
