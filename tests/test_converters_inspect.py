"""inspect: the kind from the bytes; within text, CSV and Markdown from content and name together."""

from __future__ import annotations

from pathlib import Path

import pytest

from converters import inspect, text_extract
from fileflow.testing.samplegen import documents as docs
from fileflow.testing.samplegen import images as gen

SEMICOLON_CSV = (
    "Name;Straße;Ort;Betrag\n"
    "Jürgen Weiß;Hauptstraße 5;München;1.234,50\n"
    "Zoë Ångström;Åsgatan 2;Göteborg;99,90\n"
)


def _inspect(path: Path, name: str | None = None) -> dict:
    return inspect.convert(path, path.parent / "out", {"name": name} if name else {}).metadata


def test_semicolon_csv_with_non_ascii_is_csv_by_name_and_content(tmp_path):
    src = gen.text_file(tmp_path / "upload", SEMICOLON_CSV)
    meta = _inspect(src, "Adressen.csv")
    assert (meta["mime"], meta["kind"], meta["extension"], meta["mime_magic"]) == ("text/csv", "text", "csv", "text/plain")
    # text_extract, given the file as the router stores it, reports the CSV's shape
    stored = tmp_path / "original.csv"
    stored.write_bytes(src.read_bytes())
    result = text_extract.convert(stored, tmp_path / "text", {"mime": meta["mime"]})
    assert (result.metadata["format"], result.metadata["delimiter"]) == ("csv", ";")
    assert (result.metadata["columns"], result.metadata["rows"]) == (4, 2)


def test_csv_name_on_prose_stays_plain_and_csv_content_without_name_needs_five_rows(tmp_path):
    prose = gen.text_file(tmp_path / "prose", gen.GERMAN)
    assert _inspect(prose, "notes.csv")["mime"] == "text/plain"
    short = gen.text_file(tmp_path / "short", SEMICOLON_CSV)
    assert _inspect(short, "upload.txt")["mime"] == "text/plain"  # three rows, no name: not sure
    assert "mime_magic" not in _inspect(short)
    longer = gen.text_file(tmp_path / "long", SEMICOLON_CSV + "A;B;C;1\nD;E;F;2\n")
    assert _inspect(longer)["mime"] == "text/csv"


MARKDOWN = (
    "# Projektplan\n\nDie nächsten Schritte:\n\n- Angebot prüfen\n- Vertrag unterschreiben\n\n"
    "Siehe [Wiki](https://example.org/wiki) für Details.\n"
)


def test_markdown_by_name_or_by_unmistakable_content(tmp_path):
    src = gen.text_file(tmp_path / "upload", MARKDOWN)
    assert _inspect(src, "README.md")["mime"] == "text/markdown"
    assert _inspect(src)["mime"] == "text/markdown"  # heading + list + link
    one_hash = gen.text_file(tmp_path / "plain", "# not a heading in a shell script\necho hello\n")
    assert _inspect(one_hash)["mime"] == "text/plain"
    assert _inspect(one_hash, "notes.md")["mime"] == "text/markdown"


@pytest.mark.parametrize("name", ["table.csv", "readme.md", "notes.txt"])
def test_the_name_never_routes_binary_kinds(tmp_path, name):
    pdf = docs.text_pdf(tmp_path / "upload", [["Hello"]])
    meta = _inspect(pdf, name)
    assert (meta["mime"], meta["kind"]) == ("application/pdf", "pdf")
    picture = gen.jpeg(tmp_path / "photo", size=(64, 48))
    assert _inspect(picture, name)["kind"] == "image"
