"""Office documents -> PDF through a warm LibreOffice, run by unoserver.

Reads DOCX/DOCM, DOC, ODT, RTF, XLSX/XLSM, XLS, ODS, PPTX/PPTM, PPT and ODP, and the sanitised
HTML that the e-mail and markup steps write (their printable rendition). This module is
only unoserver's *client* (``unoserver.client.UnoClient``, pure Python, XML-RPC): the server,
with LibreOffice behind it, is started and kept alive by :class:`fileflow.engine.office.UnoServer`.
The client sends the input's path (the server runs on this machine and reads it; for a remote
host the bytes are sent instead) and LibreOffice writes ``document.pdf`` into ``out_dir``.

Before LibreOffice sees anything, the container is checked against the declared type (by
``options["mime"]``, else the file's extension): LibreOffice opens *any* bytes, falling back
to its plain-text import, so random bytes called ``.docx`` would otherwise "convert" into a
page of mojibake. A DOCX/XLSX/PPTX must be a zip with ``[Content_Types].xml``, an
ODT/ODS/ODP a zip with ``mimetype`` or ``META-INF/manifest.xml``, DOC/XLS/PPT an OLE2 compound
file, RTF must start with ``{\\rtf``.

Macros never run: unoserver 3.7 loads documents with only ``ReadOnly`` (and ``Password`` when
given), no ``MacroExecutionMode`` and no interaction handler, which LibreOffice resolves to
"configured security level, refuse whatever would need a confirmation" - unsigned document
macros are not executed. ``UnoServer`` also starts LibreOffice with a profile that switches
macro execution off entirely (``DisableMacrosExecution``). Both are verified by the tests with
a document whose ``OnLoad`` macro writes a file.

Options: ``unoserver_host`` (default 127.0.0.1), ``unoserver_port`` (default 2003), ``mime``,
``max_sheet_chars``.

Output: rendition ``pdf`` ``document.pdf`` (application/pdf). Metadata: ``page_count`` (PDFium),
``source_mime``, ``source_format``.

Spreadsheets (XLSX/XLSM, XLS, ODS) are laid out so that no column is cut off onto another page
(``pdf_layout``): sheets of up to 200 rows and 60 columns each on one page of its own size
(LibreOffice's ``SinglePageSheets``), bigger ones on paper pages scaled to the sheet's width
(through an ODS copy whose page styles say "one page wide"); and their cells' text is read by LibreOffice as the sheet shows it, into rendition
``text`` ``text.txt`` with ``sheets`` metadata (names, rows, columns, cells): see
:mod:`converters.sheets`. Reading it from the PDF would cut every value at its column width.
The CSV export is written next to the output, so the server must run on this machine.

Errors: server unreachable / connection lost / LibreOffice died -> :class:`ToolCrashed`
(transient: the mediator restarts the server and retries); a conversion that ran past the
server's own conversion timeout -> :class:`ToolTimeout`; bytes that do not match the type or
that LibreOffice cannot load -> :class:`CorruptInput`; password-protected documents and types
this step does not convert -> :class:`UnsupportedInput`.
"""

from __future__ import annotations

import http.client
import socket
import xmlrpc.client
import zipfile
from pathlib import Path
from typing import Any, Mapping

from converters.base import ConversionResult, ConverterSpec, Rendition, require
from converters.options import int_option
from converters.sheets import CSV_EXPORT, DEFAULT_MAX_CHARS, SPREADSHEETS, fit_to_width, one_page_each, sheet_text
from fileflow.errors import CorruptInput, ToolCrashed, ToolError, ToolTimeout, UnsupportedInput

SPEC = ConverterSpec(
    name="office_pdf",
    version="1.2.0",
    kinds=frozenset({"office", "email", "markup"}),
    timeout_s=300,
    memory_mb=1024,  # the client only; LibreOffice's memory is the server's
    retries=1,
    description="DOC(X), XLS(X), PPT(X), ODT/ODS/ODP, RTF, sanitised HTML -> PDF through a warm LibreOffice (unoserver)",
    services=("office",),
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 2003

#: extension -> (container family, MIME type)
FORMATS: dict[str, tuple[str, str]] = {
    "docx": ("ooxml", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    "docm": ("ooxml", "application/vnd.ms-word.document.macroEnabled.12"),
    "xlsx": ("ooxml", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    "xlsm": ("ooxml", "application/vnd.ms-excel.sheet.macroEnabled.12"),
    "pptx": ("ooxml", "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
    "pptm": ("ooxml", "application/vnd.ms-powerpoint.presentation.macroEnabled.12"),
    "odt": ("odf", "application/vnd.oasis.opendocument.text"),
    "ods": ("odf", "application/vnd.oasis.opendocument.spreadsheet"),
    "odp": ("odf", "application/vnd.oasis.opendocument.presentation"),
    "doc": ("ole", "application/msword"),
    "xls": ("ole", "application/vnd.ms-excel"),
    "ppt": ("ole", "application/vnd.ms-powerpoint"),
    "rtf": ("rtf", "application/rtf"),
    # sanitised HTML made by email_parse / markup_text (converters/html_clean.py): the printable
    # rendition of e-mails and web pages; it holds no reference LibreOffice could fetch
    "html": ("html", "text/html"),
}
_BY_MIME = {mime: ext for ext, (_, mime) in FORMATS.items()} | {"text/rtf": "rtf"}

_OLE_MAGIC = bytes.fromhex("D0CF11E0A1B11AE1")
_ENCRYPTED_OOXML = ("EncryptionInfo".encode("utf-16-le"), "EncryptedPackage".encode("utf-16-le"))
_PASSWORD_HINT = "remove the password (save the document without protection) and upload it again"


def _format_of(src: Path, options: Mapping[str, Any]) -> str:
    mime = str(options.get("mime") or "").split(";")[0].strip().lower()
    if mime in _BY_MIME:
        return _BY_MIME[mime]
    ext = src.suffix.lower().lstrip(".")
    if ext in FORMATS:
        return ext
    raise UnsupportedInput(
        f"{mime or ext or 'this file type'} is not an office format this step converts "
        f"(it reads {', '.join(sorted(FORMATS))})"
    )


def _ole_is_encrypted_ooxml(src: Path) -> bool:
    """An encrypted DOCX/XLSX/PPTX is an OLE2 file holding EncryptionInfo + EncryptedPackage."""
    with open(src, "rb") as fh:
        data = fh.read(4 * 1024 * 1024)  # the directory of small encrypted files sits early
    return any(marker in data for marker in _ENCRYPTED_OOXML)


def _check_container(src: Path, fmt: str) -> None:
    """Refuse bytes that are not the container their type promises (see the module docstring)."""
    family = FORMATS[fmt][0]
    size = src.stat().st_size
    if size == 0:
        raise CorruptInput("the document is empty (0 bytes)")
    with open(src, "rb") as fh:
        head = fh.read(8)
    if family in ("ooxml", "odf"):
        if head.startswith(_OLE_MAGIC):
            if _ole_is_encrypted_ooxml(src):
                raise UnsupportedInput(f"password-protected {fmt.upper()} document: {_PASSWORD_HINT}")
            raise CorruptInput(f"the file is an old binary (OLE2) office file, not a {fmt.upper()} package")
        try:
            with zipfile.ZipFile(src) as archive:
                names = set(archive.namelist())
                if family == "ooxml":
                    if "[Content_Types].xml" not in names:
                        raise CorruptInput(
                            f"the {fmt.upper()} package is damaged: it is a zip without [Content_Types].xml"
                        )
                else:
                    if "mimetype" not in names and "META-INF/manifest.xml" not in names:
                        raise CorruptInput(
                            f"the {fmt.upper()} package is damaged: it is a zip without mimetype or manifest"
                        )
                    if "META-INF/manifest.xml" in names:
                        info = archive.getinfo("META-INF/manifest.xml")
                        if info.file_size < 4 * 1024 * 1024:
                            manifest = archive.read(info)
                            if b"encryption-data" in manifest:
                                raise UnsupportedInput(
                                    f"password-protected {fmt.upper()} document: {_PASSWORD_HINT}"
                                )
        except zipfile.BadZipFile as exc:
            raise CorruptInput(f"the {fmt.upper()} file is damaged or truncated (not a readable zip: {exc})") from None
        except (EOFError, OSError, ValueError, NotImplementedError) as exc:
            raise CorruptInput(f"the {fmt.upper()} package cannot be read ({exc})") from None
    elif family == "ole":
        if not head.startswith(_OLE_MAGIC):
            raise CorruptInput(f"the file is not a {fmt.upper()} document (no OLE2 compound-file header)")
    elif family == "html":
        with open(src, "rb") as fh:
            sample = fh.read(4096)
        if b"\0" in sample or b"<" not in sample:
            raise CorruptInput("the file is not an HTML document")
    elif family == "rtf":
        if not head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{\\rtf"):
            raise CorruptInput("the file is not an RTF document (it does not start with {\\rtf)")


def _client_class():
    client_module = require("unoserver.client", "unoserver")

    class _Client(client_module.UnoClient):
        # The stock client retries an unreachable server 5 times, 10 s apart. A server that does
        # not answer now is the mediator's to restart: fail fast and let the retry policy work.
        def _connect(self, proxy, retries=1, sleep=0):
            return super()._connect(proxy, retries=1, sleep=0)

    return _Client


def _page_count(pdf_path: Path) -> int:
    pdfium = require("pypdfium2", "pypdfium2")
    try:
        document = pdfium.PdfDocument(str(pdf_path))
    except pdfium.PdfiumError as exc:
        raise CorruptInput(f"LibreOffice wrote a PDF that cannot be read ({exc})") from None
    try:
        return len(document)
    finally:
        document.close()


def _fault(fault: xmlrpc.client.Fault, fmt: str, where: str) -> Exception:
    message = str(fault.faultString)
    lowered = message.lower()
    if "could not load document" in lowered:
        return CorruptInput(
            f"LibreOffice could not open the {fmt.upper()} document: it is damaged, truncated, "
            "password-protected or not really that format"
        )
    if "timeout" in lowered:
        return ToolTimeout(f"LibreOffice did not finish converting the document in time (server {where})")
    if "disposed" in lowered or "connection" in lowered or "bridge" in lowered:
        return ToolCrashed(f"LibreOffice died while converting the document (server {where}): {message[:300]}")
    if "could not find an export filter" in lowered or "unknown document type" in lowered:
        return UnsupportedInput(f"LibreOffice opened the {fmt.upper()} file but cannot export it as PDF")
    return ToolError(f"LibreOffice failed to convert the document: {message[:500]}")


def convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult:
    host = str(options.get("unoserver_host") or DEFAULT_HOST)
    port = int(options.get("unoserver_port") or DEFAULT_PORT)
    where = f"{host}:{port}"
    fmt = _format_of(src, options)
    _check_container(src, fmt)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "document.pdf"
    out.unlink(missing_ok=True)

    client = _client_class()(server=host, port=str(port))

    def call(**kwargs) -> None:
        _call(client, fmt, where, update_index=False, **kwargs)

    renditions = [Rendition(role="pdf", path="document.pdf", mime="application/pdf")]
    metadata: dict[str, Any] = {
        "source_mime": str(options.get("mime") or FORMATS[fmt][1]),
        "source_format": fmt,
    }
    if fmt in SPREADSHEETS:
        max_chars = int_option(options, "max_sheet_chars", DEFAULT_MAX_CHARS, minimum=1)
        metadata |= sheet_text(src, fmt, out_dir, lambda csv: call(
            inpath=str(src), outpath=str(csv), convert_to="csv", filter_options=[CSV_EXPORT]), max_chars)
        renditions.append(Rendition(role="text", path="text.txt", mime="text/plain"))
        metadata["pdf_layout"] = _sheet_pdf(call, src, out, out_dir, metadata["sheets"])
    else:
        call(inpath=str(src), outpath=str(out), convert_to="pdf")
    if not out.is_file() or out.stat().st_size == 0:
        raise CorruptInput(f"LibreOffice produced no PDF for the {fmt.upper()} document")
    metadata = {"page_count": _page_count(out), **metadata}
    return ConversionResult(renditions=renditions, metadata=metadata)


def _sheet_pdf(call, src: Path, out: Path, out_dir: Path, sheets: list[dict[str, Any]]) -> str:
    """The spreadsheet's PDF, no column cut off onto another page: small sheets one page each,
    sized to the sheet; bigger ones on paper-sized pages scaled to the sheet's width (see
    :mod:`converters.sheets`). Returns the layout used."""
    if one_page_each(sheets):
        call(inpath=str(src), outpath=str(out), convert_to="pdf", filter_options=["SinglePageSheets=true"])
        return "page per sheet"
    scratch = out_dir / ".fit"
    scratch.mkdir(exist_ok=True)
    try:
        call(inpath=str(src), outpath=str(scratch / "sheet.ods"), convert_to="ods")
        try:
            fit_to_width(scratch / "sheet.ods", scratch / "fit.ods")
        except (zipfile.BadZipFile, KeyError, ValueError, UnicodeDecodeError) as exc:
            raise ToolError(f"the spreadsheet could not be laid out to fit the page width: {exc}") from None
        call(inpath=str(scratch / "fit.ods"), outpath=str(out), convert_to="pdf")
    finally:
        for path in scratch.iterdir():
            path.unlink()
        scratch.rmdir()
    return "fit to width"


def _call(client, fmt: str, where: str, **kwargs) -> None:
    try:
        client.convert(**kwargs)
    except xmlrpc.client.Fault as fault:
        raise _fault(fault, fmt, where) from None
    except (ConnectionError, socket.timeout, http.client.HTTPException, xmlrpc.client.ProtocolError, OSError) as exc:
        raise ToolCrashed(
            f"the office conversion server (unoserver at {where}) is unreachable or dropped the "
            f"connection ({type(exc).__name__}: {exc}); it is restarted and the step retried"
        ) from None
