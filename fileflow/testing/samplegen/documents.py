"""Deterministic sample inputs for the PDF and office converters.

Every generator writes one file and returns its path. Texts are real English sentences, so a
test can look for them in what LibreOffice, PDFium or Tesseract give back; scanned pages carry
large black words drawn with DejaVu Sans and have no text layer at all.

Run ``python -m fileflow.testing.samplegen.documents`` to (re)write the small committed samples under
``tests/samples/`` (report.docx, scan.pdf).
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

from fileflow.testing.samplegen import SAMPLES

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"

HEADING = "Quarterly Report"
SENTENCES = (
    "The warehouse in Rotterdam shipped four hundred crates in March.",
    "Customer complaints fell by a third after the new packaging arrived.",
    "Next quarter we will open a second office in Lisbon.",
)
SCAN_WORDS = ("INVOICE", "PAYMENT", "RECEIVED")
TABLE = (
    ("Region", "Product", "Units"),
    ("North", "Lanterns", 120),
    ("South", "Compasses", 75),
    ("East", "Tents", 42),
)

# A fixed date for every zip entry: the same content gives the same bytes.
_ZIP_DATE = (2024, 1, 1, 0, 0, 0)


def _zip_bytes(entries: list[tuple[str, bytes]], *, stored_first: bool = False) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for index, (name, data) in enumerate(entries):
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_STORED if (stored_first and index == 0) else zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


def _zip(path: Path, entries: list[tuple[str, bytes]], *, stored_first: bool = False) -> Path:
    path.write_bytes(_zip_bytes(entries, stored_first=stored_first))
    return path


# --------------------------------------------------------------------------- word processing
def docx_entries(heading: str = HEADING, paragraphs: tuple[str, ...] = SENTENCES) -> list[tuple[str, bytes]]:
    """The parts of a DOCX written by python-docx: one heading and one paragraph per sentence."""
    from datetime import datetime

    import docx as python_docx

    document = python_docx.Document()
    document.core_properties.title = heading
    document.core_properties.author = "fileflow tests"
    document.core_properties.created = datetime(2024, 1, 1)
    document.core_properties.modified = datetime(2024, 1, 1)
    document.add_heading(heading, level=1)
    for sentence in paragraphs:
        document.add_paragraph(sentence)
    buffer = io.BytesIO()
    document.save(buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as source:
        entries = [(info.filename, source.read(info)) for info in source.infolist()]
    # python-docx's template carries parts a document does not need (a second 440 kB style
    # sheet, a thumbnail, custom XML): leave them and their references out to keep samples small
    dropped = ("word/stylesWithEffects.xml", "docProps/thumbnail.jpeg", "customXml/")
    kept = []
    for name, data in entries:
        if name.startswith(dropped):
            continue
        if name.endswith(".rels") or name == "[Content_Types].xml":
            data = re.sub(
                rb"<(Relationship|Override)\b[^>]*(stylesWithEffects|thumbnail\.jpeg|customXml)[^>]*/>", b"", data
            )
        kept.append((name, data))
    return kept


def docx(path: Path, heading: str = HEADING, paragraphs: tuple[str, ...] = SENTENCES) -> Path:
    """A DOCX by python-docx, re-zipped with fixed timestamps so that it is byte-stable."""
    return _zip(path, docx_entries(heading, paragraphs))


def rtf(path: Path, paragraphs: tuple[str, ...] = SENTENCES) -> Path:
    """A hand-written RTF document."""
    body = "".join(r"{\pard\f0\fs24 " + p + r"\par}" + "\n" for p in paragraphs)
    text = (
        r"{\rtf1\ansi\deff0{\fonttbl{\f0 Helvetica;}}" + "\n"
        + r"{\pard\b\fs32 " + HEADING + r"\par}" + "\n" + body + "}\n"
    )
    path.write_bytes(text.encode("ascii"))
    return path


_ODF_NS = (
    'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
    'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
    'xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" '
    'xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0" '
    'xmlns:presentation="urn:oasis:names:tc:opendocument:xmlns:presentation:1.0" '
    'xmlns:script="urn:oasis:names:tc:opendocument:xmlns:script:1.0" '
    'xmlns:xlink="http://www.w3.org/1999/xlink" '
    'xmlns:dom="http://www.w3.org/2001/xml-events" '
    'xmlns:ooo="http://openoffice.org/2004/office"'
)


def _odf(path: Path, mime: str, content: str, extra: list[tuple[str, bytes]] = (), manifest_extra: str = "") -> Path:
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">\n'
        f' <manifest:file-entry manifest:full-path="/" manifest:media-type="{mime}"/>\n'
        ' <manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>\n'
        f"{manifest_extra}"
        "</manifest:manifest>\n"
    )
    entries = [("mimetype", mime.encode()), ("content.xml", content.encode("utf-8"))]
    entries += list(extra)
    entries.append(("META-INF/manifest.xml", manifest.encode()))
    return _zip(path, entries, stored_first=True)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def odt(path: Path, paragraphs: tuple[str, ...] = SENTENCES, *, scripts: str = "", extra=(), manifest_extra="") -> Path:
    """A minimal hand-written ODT (content.xml only)."""
    body = "".join(f"<text:p>{_escape(p)}</text:p>" for p in paragraphs)
    content = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<office:document-content {_ODF_NS} office:version="1.2">'
        f"{scripts}<office:body><office:text><text:h text:outline-level=\"1\">{HEADING}</text:h>{body}"
        "</office:text></office:body></office:document-content>"
    )
    return _odf(path, "application/vnd.oasis.opendocument.text", content, list(extra), manifest_extra)


def odp(path: Path, slides: tuple[str, ...] = SENTENCES[:2]) -> Path:
    """A minimal hand-written ODP: one slide per sentence, the sentence in a text frame."""
    pages = "".join(
        f'<draw:page draw:name="slide{i}"><draw:frame svg:x="2cm" svg:y="2cm" svg:width="20cm" svg:height="5cm">'
        f"<draw:text-box><text:p>{_escape(s)}</text:p></draw:text-box></draw:frame></draw:page>"
        for i, s in enumerate(slides, 1)
    )
    content = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<office:document-content {_ODF_NS} office:version="1.2">'
        f"<office:body><office:presentation>{pages}</office:presentation></office:body></office:document-content>"
    )
    return _odf(path, "application/vnd.oasis.opendocument.presentation", content)


def macro_odt(path: Path, marker: Path) -> Path:
    """An ODT whose Basic macro, bound to the document's OnLoad event, writes ``marker``.

    The structure is what LibreOffice itself writes for such a document; loaded with
    ``MacroExecutionMode=ALWAYS_EXECUTE_NO_WARN`` by a stock LibreOffice the macro does run
    (the tests show it), so the payload is real.
    """
    module = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<!DOCTYPE script:module PUBLIC "-//OpenOffice.org//DTD OfficeDocument 1.0//EN" "module.dtd">\n'
        '<script:module xmlns:script="http://openoffice.org/2000/script" script:name="Module1" '
        'script:language="StarBasic">Sub Main\n'
        "  Dim n As Integer\n  n = FreeFile\n"
        f"  Open &quot;{_escape(str(marker))}&quot; For Output As #n\n"
        "  Print #n, &quot;macro ran&quot;\n  Close #n\nEnd Sub\n</script:module>"
    )
    library = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<!DOCTYPE library:library PUBLIC "-//OpenOffice.org//DTD OfficeDocument 1.0//EN" "library.dtd">\n'
        '<library:library xmlns:library="http://openoffice.org/2000/library" library:name="Standard" '
        'library:readonly="false" library:passwordprotected="false">\n'
        ' <library:element library:name="Module1"/>\n</library:library>'
    )
    container = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<!DOCTYPE library:libraries PUBLIC "-//OpenOffice.org//DTD OfficeDocument 1.0//EN" "libraries.dtd">\n'
        '<library:libraries xmlns:library="http://openoffice.org/2000/library" '
        'xmlns:xlink="http://www.w3.org/1999/xlink">\n'
        ' <library:library library:name="Standard" library:link="false"/>\n</library:libraries>'
    )
    scripts = (
        '<office:scripts><office:event-listeners><script:event-listener script:language="ooo:script" '
        'script:event-name="dom:load" '
        'xlink:href="vnd.sun.star.script:Standard.Module1.Main?language=Basic&amp;location=document" '
        'xlink:type="simple"/></office:event-listeners></office:scripts>'
    )
    manifest_extra = "".join(
        f' <manifest:file-entry manifest:full-path="{name}" manifest:media-type="text/xml"/>\n'
        for name in ("Basic/Standard/Module1.xml", "Basic/Standard/script-lb.xml", "Basic/script-lc.xml")
    )
    extra = [
        ("Basic/Standard/Module1.xml", module.encode()),
        ("Basic/Standard/script-lb.xml", library.encode()),
        ("Basic/script-lc.xml", container.encode()),
    ]
    return odt(path, ("This document carries an OnLoad macro.",), scripts=scripts, extra=extra,
               manifest_extra=manifest_extra)


def docm_with_vba(path: Path, marker: Path) -> Path:
    """A macro-enabled DOCM: a python-docx document re-typed as DOCM with a vbaProject part.

    The VBA part is an OLE2 header followed by junk (a VBA project cannot be written without
    Office) whose text would write ``marker``; the point is that a document declaring macros
    converts and nothing runs.
    """
    out = []
    for name, data in docx_entries(HEADING, ("This document declares a VBA project.",)):
        if name == "[Content_Types].xml":
            data = data.replace(
                b"application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml",
                b"application/vnd.ms-word.document.macroEnabled.main+xml",
            ).replace(
                b"</Types>",
                b'<Default Extension="bin" ContentType="application/vnd.ms-office.vbaProject"/></Types>',
            )
        elif name == "word/_rels/document.xml.rels":
            data = data.replace(
                b"</Relationships>",
                b'<Relationship Id="rIdVba" Type="http://schemas.microsoft.com/office/2006/relationships/vbaProject" '
                b'Target="vbaProject.bin"/></Relationships>',
            )
        out.append((name, data))
    payload = f'Sub AutoOpen()\r\n  Open "{marker}" For Output As #1\r\n  Close #1\r\nEnd Sub\r\n'.encode()
    vba = bytes.fromhex("D0CF11E0A1B11AE1") + b"\x00" * 24 + payload * 8
    out.append(("word/vbaProject.bin", vba))
    return _zip(path, out)


# --------------------------------------------------------------------------- spreadsheets
def xlsx(path: Path, rows=TABLE) -> Path:
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Sales"
    for row in rows:
        sheet.append(list(row))
    for column in ("A", "B", "C"):
        sheet.column_dimensions[column].width = 14  # no cell text clipped, one page wide
    workbook.save(path)
    return path


#: a sentence per script that needs fonts beyond DejaVu's (CJK, Devanagari, Thai) or that
#: DejaVu covers only plainly (Arabic, Hebrew)
SCRIPT_SENTENCES = {
    "ja": "日本語の報告書を確認してください",
    "zh": "请检查季度报告中的数字",
    "ko": "분기별 보고서를 확인해 주십시오",
    "ar": "يرجى مراجعة التقرير الفصلي",
    "he": "נא לבדוק את הדוח הרבעוני",
    "hi": "कृपया तिमाही रिपोर्ट की जांच करें",
    "th": "กรุณาตรวจสอบรายงานประจำไตรมาส",
}


def scripts_docx(path: Path) -> Path:
    """A DOCX with one paragraph per script of :data:`SCRIPT_SENTENCES`."""
    return docx(path, "Scripts", tuple(SCRIPT_SENTENCES.values()))


LONG_NAME = "Jürgen Müller-Lüdenscheidt von Hohenzollern-Sigmaringen"


def workbook(path: Path) -> Path:
    """An XLSX as people make them, with what the printed page cuts: narrow columns holding a
    long name, a date shown as ``yyyy-mm-dd``, thousands with separators, a formula, a percentage,
    and a second sheet far from A1."""
    import datetime

    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Umsätze 2025"
    sheet.append(["Name", "Datum", "Umsatz (EUR)", "Kosten (EUR)", "Ergebnis"])
    sheet.append([LONG_NAME, datetime.date(2025, 12, 31), 1234567.5, 234567.25, "=C2-D2"])
    sheet.append(["Anna Schmidt", datetime.date(2025, 1, 2), 99.9, 10, "=C3-D3"])
    for row in (2, 3):
        sheet.cell(row, 2).number_format = "yyyy-mm-dd"
        for column in (3, 4, 5):
            sheet.cell(row, column).number_format = "#,##0.00"
    for column in "ABCDE":
        sheet.column_dimensions[column].width = 6  # every value is wider than its column
    other = book.create_sheet("Kennzahlen")
    other["A1"] = "Marge"
    other["D7"] = 0.8125
    other["D7"].number_format = "0.0%"
    book.save(path)
    return path


def big_workbook(path: Path, rows: int = 400, columns: int = 26) -> Path:
    """A sheet too big for one page: ``rows`` rows of ``columns`` columns, the last column's
    header ``"Spalte Z Ende"``; printed as is, its columns would spread over many pages."""
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Daten"
    sheet.append([f"Spalte {chr(65 + c)}" for c in range(columns - 1)] + ["Spalte Z Ende"])
    for r in range(1, rows):
        sheet.append([f"Wert {r}-{c}" for c in range(columns)])
    book.save(path)
    return path


def workbook_as(path: Path, fmt: str, client) -> Path:
    """The :func:`workbook` saved by LibreOffice (an unoserver ``client``) as ``xls`` or ``ods``."""
    seed = workbook(path.with_name(path.stem + "-seed.xlsx"))
    filters = {"xls": "MS Excel 97", "ods": "calc8"}
    client.convert(inpath=str(seed), outpath=str(path), convert_to=fmt, filtername=filters[fmt])
    return path


# --------------------------------------------------------------------------- broken office files
def zip_with_garbage(path: Path) -> Path:
    """A zip that is not an OOXML package at all (no [Content_Types].xml)."""
    return _zip(path, [("garbage.bin", bytes(range(256)) * 16)])


def docx_with_garbage_body(path: Path) -> Path:
    """A real DOCX whose word/document.xml was replaced by binary junk."""
    entries = [
        (name, bytes(range(256)) * 12 if name == "word/document.xml" else data)
        for name, data in docx_entries()
    ]
    return _zip(path, entries)


def encrypted_odt(path: Path) -> Path:
    """An ODT whose manifest declares encrypted parts, as a password-protected ODT does."""
    manifest_extra = (
        ' <manifest:file-entry manifest:full-path="styles.xml" manifest:media-type="text/xml">'
        '<manifest:encryption-data manifest:checksum-type="SHA1/1K" manifest:checksum="AAAA">'
        '<manifest:algorithm manifest:algorithm-name="Blowfish CFB" manifest:initialisation-vector="AAAA"/>'
        '<manifest:key-derivation manifest:key-derivation-name="PBKDF2" manifest:iteration-count="1024" '
        'manifest:salt="AAAA"/></manifest:encryption-data></manifest:file-entry>\n'
    )
    return odt(path, ("secret",), manifest_extra=manifest_extra)


def encrypted_ooxml(path: Path) -> Path:
    """What an encrypted DOCX looks like from outside: an OLE2 file with EncryptionInfo/EncryptedPackage."""
    directory = "EncryptionInfo".encode("utf-16-le").ljust(64, b"\x00") + "EncryptedPackage".encode("utf-16-le")
    path.write_bytes(bytes.fromhex("D0CF11E0A1B11AE1") + b"\x00" * 504 + directory.ljust(1024, b"\x00"))
    return path


# --------------------------------------------------------------------------- PDFs
def _pdf_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def text_pdf(path: Path, pages: list[list[str]], size: tuple[float, float] = (595.0, 842.0)) -> Path:
    """A PDF with a real text layer (Helvetica), one list of lines per page, written by hand."""
    width, height = size
    objects: list[bytes] = []
    n = len(pages)
    # 1: catalog, 2: pages, 3: font, then (page, content) pairs
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(n))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    for i, lines in enumerate(pages):
        ops = ["BT", "/F1 14 Tf", "18 TL", f"72 {height - 90:.0f} Td"]
        for line in lines:
            ops.append(f"({_pdf_string(line)}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {width:g} {height:g}] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    info = b" /Info << /Title (Sample Text) /Author (fileflow tests) /CreationDate (D:20240102030405Z) >>"
    return write_pdf(path, objects, info)


def write_pdf(path: Path, objects: list[bytes], info: bytes = b"") -> Path:
    """Objects 1..n (1 is the catalog) with their cross-reference table and trailer."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R" % (len(objects) + 1) + info
    out += b" >>\nstartxref\n%d\n%%%%EOF\n" % xref
    path.write_bytes(bytes(out))
    return path


def scan_image(words: tuple[str, ...] = SCAN_WORDS, size: tuple[int, int] = (1240, 1754)):
    """A white A4 page at 150 dpi with ``words`` drawn one per line in large black letters."""
    from PIL import Image, ImageDraw, ImageFont

    page = Image.new("L", size, 255)
    draw = ImageDraw.Draw(page)
    font = ImageFont.truetype(FONT, 96)
    y = 220
    for word in words:
        draw.text((140, y), word, fill=0, font=font)
        y += 190
    return page


def scan_pdf(path: Path, pages: tuple[tuple[str, ...], ...] = (SCAN_WORDS,)) -> Path:
    """A "scanned" PDF: each page is only a picture of drawn words (no text layer), via Pillow."""
    images = [scan_image(words) for words in pages]
    import time

    fixed = time.gmtime(1704067200)  # 2024-01-01: fixed, so the bytes are stable
    images[0].save(path, "PDF", resolution=150.0, save_all=True, append_images=images[1:], quality=60,
                   title="Scanned invoice", creationDate=fixed, modDate=fixed)
    return path


def truncated(path: Path, source: Path, keep: float = 0.5) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def encrypted_pdf(path: Path, source: Path, password: str = "s3cret") -> Path:
    import pypdf

    writer = pypdf.PdfWriter(clone_from=str(source))
    writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="AES-256")
    with open(path, "wb") as fh:
        writer.write(fh)
    return path


def write_committed_samples() -> None:
    docx(SAMPLES / "report.docx", HEADING, SENTENCES[:2])
    scan_pdf(SAMPLES / "scan.pdf")


if __name__ == "__main__":
    SAMPLES.mkdir(exist_ok=True)
    write_committed_samples()
    for name in ("report.docx", "scan.pdf"):
        print(name, (SAMPLES / name).stat().st_size, "bytes")
