"""Spreadsheets: the text of every cell, as the spreadsheet shows it (not a converter itself).

Used by ``office_pdf`` for XLSX/XLSM, XLS and ODS. Text read from the printed PDF is cut at the
column width ("Jürgen Müll", "2025-12-3"); here LibreOffice, which already has the document
open for the PDF, exports every sheet as CSV with "save cell contents as shown": full values,
numbers and dates formatted as the sheet displays them, formulas as their results.

Sheet names and their order come from the file itself for XLSX/XLSM (``xl/workbook.xml``) and
ODS (``content.xml``); for XLS, from the CSV files LibreOffice writes one after another (its
files are named ``<stem>-<sheet name>.csv``), in the order they were written.

``text.txt``: one block per sheet, separated by a form feed (``\\f``); a block is the sheet's
name on its first line, then its rows, cells separated by a tab, trailing empty cells and rows
left out. Metadata ``sheets``: per sheet ``name``, ``rows`` and ``columns`` (of the used range,
counted from A1), ``cells`` (non-empty); ``sheet_count``; ``text_truncated`` when the text was cut
at ``max_sheet_chars`` (default 20 million characters).
"""

from __future__ import annotations

import csv
import re
import zipfile
from pathlib import Path
from typing import Any, Callable
from xml.etree import ElementTree

SPREADSHEETS = frozenset({"xlsx", "xlsm", "xls", "ods"})
DEFAULT_MAX_CHARS = 20_000_000

#: LibreOffice's CSV export tokens: comma, double quote, UTF-8 (76), from line 1, no column
#: formats, default language, quoted fields not as text, detect special numbers, contents AS
#: SHOWN, no formulas, no trimming, sheet -1 = every sheet into a file of its own
CSV_EXPORT = "44,34,76,1,,0,false,true,true,false,false,-1"

_SHEET_ML = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}sheet"
_ODF_TABLE = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}table"
_ODF_NAME = "{urn:oasis:names:tc:opendocument:xmlns:table:1.0}name"
_MAX_XML = 64 * 1024 * 1024

#: sheets up to this used range are each drawn on one page of their own size (LibreOffice's
#: SinglePageSheets): compact, and previews show the table; bigger ones would be shrunk to
#: nothing on one page (PDF pages end at 200 inches), so they are printed on A4/Letter pages
#: scaled to fit the sheet's width, rows flowing onto as many pages as they need
ONE_PAGE_MAX_ROWS = 200
ONE_PAGE_MAX_COLUMNS = 60
_SCALE_ATTRS = re.compile(r'\s(?:style|loext):scale-to(?:-pages|-X|-Y)?="[^"]*"')


def sheet_names(src: Path, fmt: str) -> list[str] | None:
    """The sheets' names in workbook order, or None where the file does not say (XLS, damage)."""
    try:
        with zipfile.ZipFile(src) as archive:
            if fmt in ("xlsx", "xlsm"):
                info = archive.getinfo("xl/workbook.xml")
                if info.file_size > _MAX_XML:
                    return None
                root = ElementTree.fromstring(archive.read(info))
                return [sheet.get("name", "") for sheet in root.iter(_SHEET_ML)]
            if fmt == "ods":
                info = archive.getinfo("content.xml")
                if info.file_size > 16 * _MAX_XML:
                    return None
                names: list[str] = []
                with archive.open(info) as fh:
                    for event, element in ElementTree.iterparse(fh, events=("start", "end")):
                        if event == "start" and element.tag == _ODF_TABLE:
                            names.append(element.get(_ODF_NAME, ""))
                        elif event == "end" and element.tag == _ODF_TABLE:
                            element.clear()  # a big sheet is not kept in memory
                return names
    except (KeyError, zipfile.BadZipFile, ElementTree.ParseError, OSError, ValueError):
        return None
    return None


def _rows(path: Path) -> list[list[str]]:
    with path.open("r", encoding="utf-8-sig", errors="replace", newline="") as fh:
        rows = [list(row) for row in csv.reader(fh)]
    for row in rows:
        while row and not row[-1].strip():
            row.pop()
    while rows and not rows[-1]:
        rows.pop()
    return rows


def read_exported(folder: Path, stem: str, names: list[str] | None) -> list[tuple[str, list[list[str]]]]:
    """(sheet name, rows) for every CSV LibreOffice wrote into ``folder`` as ``<stem>-<name>.csv``."""
    files = sorted(folder.glob("*.csv"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    by_name = {p.name[len(stem) + 1:-4]: p for p in files if p.name.startswith(stem + "-")}
    ordered: list[tuple[str, Path]] = []
    if names:
        ordered = [(name, by_name.pop(name)) for name in names if name in by_name]
    # sheets whose file name LibreOffice changed, XLS sheets, a lone sheet written as <stem>.csv
    taken = {path for _, path in ordered}
    ordered += [(p.name[len(stem) + 1:-4] if p.name.startswith(stem + "-") else p.stem, p)
                for p in files if p not in taken]
    return [(name, _rows(path)) for name, path in ordered]


def sheet_text(
    src: Path, fmt: str, out_dir: Path, export: Callable[[Path], None], max_chars: int = DEFAULT_MAX_CHARS
) -> dict[str, Any]:
    """Write ``out_dir/text.txt`` from the cells of every sheet; return the sheets' metadata.

    ``export(csv_path)`` makes LibreOffice write the CSV files (``CSV_EXPORT``) next to
    ``csv_path``; they are read from a folder of their own and removed afterwards.
    """
    folder = out_dir / ".sheets"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        export(folder / "sheet.csv")
        sheets = read_exported(folder, "sheet", sheet_names(src, fmt))
    finally:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
    blocks, meta, used, truncated = [], [], 0, False
    for name, rows in sheets:
        block = "\n".join([name, *("\t".join(cell.replace("\t", " ") for cell in row) for row in rows)])
        if used + len(block) > max_chars:
            block, truncated = block[: max(0, max_chars - used)], True
        used += len(block)
        blocks.append(block)
        meta.append({
            "name": name,
            "rows": len(rows),
            "columns": max((len(row) for row in rows), default=0),
            "cells": sum(1 for row in rows for cell in row if cell.strip()),
        })
    (out_dir / "text.txt").write_text("\f".join(blocks) + ("\n" if blocks else ""), encoding="utf-8")
    return {"sheets": meta, "sheet_count": len(meta), "text_truncated": truncated}


def one_page_each(sheets: list[dict[str, Any]]) -> bool:
    """Whether every sheet is small enough to be drawn on one page of its own size."""
    return all(s["rows"] <= ONE_PAGE_MAX_ROWS and s["columns"] <= ONE_PAGE_MAX_COLUMNS for s in sheets)


def fit_to_width(ods: Path, out: Path) -> None:
    """Copy the ODS ``ods`` (as LibreOffice wrote it) to ``out`` with every page style printing
    one page wide and as many pages tall as needed (``loext:scale-to-X="1"``, ``-Y="0"``)."""
    with zipfile.ZipFile(ods) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            if info.file_size > 4 * _MAX_XML:
                raise ValueError(f"{info.filename} of the spreadsheet is too large to rewrite")
            data = source.read(info)
            if info.filename == "styles.xml":
                text = _SCALE_ATTRS.sub("", data.decode("utf-8"))
                text = text.replace("<style:page-layout-properties ",
                                    '<style:page-layout-properties loext:scale-to-X="1" loext:scale-to-Y="0" ')
                if 'xmlns:loext="' not in text[:8192]:
                    text = text.replace("<office:document-styles ", '<office:document-styles xmlns:loext='
                                        '"urn:org:documentfoundation:names:experimental:office:xmlns:loext:1.0" ', 1)
                data = text.encode("utf-8")
            stored = info.filename == "mimetype"  # ODF: first, uncompressed
            target.writestr(info, data, compress_type=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
