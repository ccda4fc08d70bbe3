"""markup_text and svg_render: text from HTML/XML/JSON/EPUB, sanitised printable HTML, EPUB
covers, SVG previews; XML bombs, external entities and SVG references to local files refused."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from PIL import Image

from converters import markup_text, svg_render
from fileflow.errors import CorruptInput, LimitExceeded, UnsupportedInput

from fileflow.testing.samplegen import markup as gen
from fileflow.testing.samplegen.emails import BODY_DE

RSVG = shutil.which("rsvg-convert")
needs_rsvg = pytest.mark.skipif(RSVG is None, reason="rsvg-convert missing (apt-get install librsvg2-bin)")


def text(src: Path, out: Path, mime: str, **options):
    result = markup_text.convert(src, out, {"mime": mime, **options})
    return result, (out / "text.txt").read_text()


def test_html_text_and_a_printable_page_that_references_nothing(tmp_path: Path) -> None:
    result, extracted = text(gen.html_page(tmp_path / "in.html"), tmp_path / "out", "text/html")
    assert "signed supply contract for the north site" in extracted and "SCRIPT-RAN" not in extracted
    assert "IFRAME-TEXT" not in extracted and "background" not in extracted
    assert result.metadata["title"] == "Supply contract"
    assert {r.role: r.path for r in result.renditions} == {"text": "text.txt", "web": "page.html"}
    page = (tmp_path / "out" / "page.html").read_text()
    assert "north site" in page
    for bad in ("tracker.invalid", "http:", "file:", "javascript:", "<script", "onload", "<iframe", "<img", "src=", "href="):
        assert bad not in page, bad


def test_xml_text_of_every_element(tmp_path: Path) -> None:
    result, extracted = text(gen.xml_doc(tmp_path / "in.xml"), tmp_path / "out", "text/xml")
    assert extracted.splitlines()[0] == "Compte rendu" and "réunion de coordination" in extracted
    assert extracted.splitlines()[-1] == "Fin du rapport."
    assert result.metadata["root"] == "report" and result.metadata["elements"] == 4
    assert [r.role for r in result.renditions] == ["text"]


def test_json_string_values_in_order(tmp_path: Path) -> None:
    result, extracted = text(gen.json_doc(tmp_path / "in.json"), tmp_path / "out", "application/json")
    assert extracted.splitlines()[:3] == ["Vertrag", "Jürgen Müller", "Käufer"]
    assert BODY_DE.split("\n")[0] in extracted and "125000" not in extracted
    assert result.metadata["top"] == "object" and result.metadata["strings"] == 4


def test_billion_laughs_is_refused_before_any_expansion(tmp_path: Path) -> None:
    with pytest.raises(CorruptInput, match="declares entities"):
        text(gen.billion_laughs(tmp_path / "in.xml"), tmp_path / "out", "text/xml")
    assert not (tmp_path / "out" / "text.txt").exists()


def test_external_entity_is_refused_and_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    with pytest.raises(CorruptInput, match="hostile XML"):
        text(gen.external_entity(tmp_path / "in.xml", f"file://{secret}"), tmp_path / "out", "text/xml")
    assert not any("TOP-SECRET" in p.read_text(errors="replace") for p in (tmp_path / "out").rglob("*") if p.is_file())


def test_a_public_doctype_alone_is_fine(tmp_path: Path) -> None:
    src = tmp_path / "in.xml"
    src.write_text('<?xml version="1.0"?>\n<!DOCTYPE note SYSTEM "http://example.invalid/note.dtd">\n<note>hello</note>\n')
    assert text(src, tmp_path / "out", "text/xml")[1] == "hello\n"


@pytest.mark.parametrize("mime,data", [("text/xml", b"<a><b></a>"), ("application/json", b"{'a': 1"),
                                       ("application/json", bytes(range(256)) * 8)])
def test_malformed_documents_are_corrupt_input(tmp_path: Path, mime: str, data: bytes) -> None:
    src = tmp_path / "in"
    src.write_bytes(data)
    with pytest.raises(CorruptInput):
        text(src, tmp_path / "out", mime)


def test_deep_nesting_and_size_limits(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(LimitExceeded, match="nested too deeply"):
        text(deep, tmp_path / "out", "application/json")
    with pytest.raises(LimitExceeded, match="max_bytes"):
        text(gen.xml_doc(tmp_path / "in.xml"), tmp_path / "out", "text/xml", max_bytes=100)


def test_epub_text_metadata_and_cover_previews(tmp_path: Path) -> None:
    result, extracted = text(gen.epub(tmp_path / "in.epub"), tmp_path / "out", "application/epub+zip")
    assert extracted.startswith("Chapter 1\n") and "north site" in extracted and "Chapter 2" in extracted
    meta = result.metadata
    assert (meta["title"], meta["creator"], meta["language"], meta["chapters"], meta["cover"]) == (
        "Site handbook", "Anna Weber", "en", 2, True)
    previews = [r for r in result.renditions if r.role == "preview"]
    assert [r.path for r in previews] == ["preview-1280.jpg", "preview-480.jpg", "preview-160.jpg"]
    assert "web" not in {r.role for r in result.renditions}  # the cover is the preview
    with Image.open(tmp_path / "out" / "preview-480.jpg") as im:
        assert max(im.size) <= 480


def test_epub_without_cover_gets_a_printable_first_page(tmp_path: Path) -> None:
    result, _ = text(gen.epub(tmp_path / "in.epub", cover=False), tmp_path / "out", "application/epub+zip")
    assert result.metadata["cover"] is False
    page = (tmp_path / "out" / "page.html").read_text()
    assert "<h1>Chapter 1</h1>" in page and "north site" in page


def test_epub_with_a_bomb_chapter_is_refused(tmp_path: Path) -> None:
    src = gen.epub(tmp_path / "in.epub", chapters=("x" * 20_000_000,))
    with pytest.raises(LimitExceeded, match="zip bomb"):
        text(src, tmp_path / "out", "application/epub+zip")


def test_other_types_are_not_markup(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedInput):
        text(gen.json_doc(tmp_path / "in.bin"), tmp_path / "out", "application/octet-stream")


# --- SVG --------------------------------------------------------------------------------------------


@needs_rsvg
def test_svg_previews_draw_the_picture(tmp_path: Path) -> None:
    result = svg_render.convert(gen.svg(tmp_path / "in.svg"), tmp_path / "out", {})
    previews = [(r.path, r.width, r.height) for r in result.renditions if r.role == "preview"]
    assert previews == [("preview-1280.jpg", 1280, 640), ("preview-480.jpg", 480, 240), ("preview-160.jpg", 160, 80)]
    with Image.open(tmp_path / "out" / "preview-480.jpg") as im:
        left, right = im.getpixel((60, 60)), im.getpixel((420, 60))
    assert left[0] > 200 and left[2] < 60 and right[2] > 200 and right[0] < 60
    assert (tmp_path / "out" / "text.txt").read_text() == "Site plan\nNorth building\n"
    assert result.metadata["title"] == "Site plan" and result.metadata["view_box"] == "0 0 400 200"


@needs_rsvg
@pytest.mark.parametrize("make", [
    lambda p, secret: gen.svg_local_file(p),
    lambda p, secret: gen.svg_xlink_local(p, secret),
    lambda p, secret: gen.svg_with(p, f'<image href="file://{secret}" width="400" height="200"/>'),
    lambda p, secret: gen.svg_with(p, '<image href="http://tracker.invalid/x.png" width="9" height="9"/>'),
    lambda p, secret: gen.svg_css_url(p, secret),
    lambda p, secret: gen.svg_with(p, f'<rect width="9" height="9" style="fill:url(\'{secret}\')"/>'),
    lambda p, secret: gen.svg_with(p, '<use href="other.svg#shape"/>'),
], ids=["etc-passwd", "xlink-local", "file-url", "http", "css-style", "css-attr", "use-other-file"])
def test_svg_references_outside_the_document_are_refused(tmp_path: Path, make) -> None:
    secret = tmp_path / "secret.png"
    Image.new("RGB", (400, 200), (255, 0, 0)).save(secret)
    with pytest.raises(CorruptInput, match="hostile SVG"):
        svg_render.convert(make(tmp_path / "in.svg", secret), tmp_path / "out", {})
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@needs_rsvg
def test_svg_external_entity_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CorruptInput, match="declares entities"):
        svg_render.convert(gen.svg_external_entity(tmp_path / "in.svg"), tmp_path / "out", {})


@needs_rsvg
@pytest.mark.parametrize("reference", ["{secret}", "file://{secret}", "secret.png"])
def test_the_renderer_itself_reads_no_file_the_svg_names(tmp_path: Path, reference: str) -> None:
    """Second lock: even past the reference check, rsvg-convert (fed on stdin) loads nothing;
    the same SVG rendered from a file next to the picture does show it (the control)."""
    secret = tmp_path / "secret.png"
    Image.new("RGB", (400, 200), (255, 0, 0)).save(secret)
    src = gen.svg_with(tmp_path / "in.svg", f'<image href="{reference.format(secret=secret)}" width="400" height="200"/>')
    png = svg_render.rasterise(src.read_bytes(), 100, RSVG, 30)
    with Image.open(io.BytesIO(png)) as im:
        assert {c for _, c in im.convert("RGB").getcolors()} == {(255, 255, 255)}
    import subprocess

    control = subprocess.run([RSVG, "--width", "100", str(src)], capture_output=True, check=True).stdout
    with Image.open(io.BytesIO(control)) as im:
        assert (255, 0, 0) in {c for _, c in im.convert("RGB").getcolors()}


@needs_rsvg
def test_svg_that_is_not_an_svg(tmp_path: Path) -> None:
    src = gen.xml_doc(tmp_path / "in.svg")
    with pytest.raises(CorruptInput, match="root element is <report>"):
        svg_render.convert(src, tmp_path / "out", {})
