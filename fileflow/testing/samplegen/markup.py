"""Deterministic HTML, XML, JSON, EPUB and SVG for the markup converters' tests and the pipeline,
with the hostile variants the issue names: XML billion laughs and external entities, an HTML
page that tries to load remote and local resources, SVGs that reference local files."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from fileflow.testing.samplegen import archives
from fileflow.testing.samplegen.emails import BODY_DE, BODY_EN, HOSTILE_HTML

FRENCH = ("La réunion de coordination a eu lieu jeudi matin avec l'équipe électrique. Les câbles du "
          "deuxième étage seront posés la semaine prochaine, après la réception des gaines.")
DATE = (2024, 5, 17, 10, 30, 0)


def html_page(path: Path) -> Path:
    body = "</p><p>".join(BODY_EN.split("\n\n"))
    page = HOSTILE_HTML.replace("<title>x</title>", "<title>Supply contract</title>").replace("{body}", body)
    Path(path).write_text("<!DOCTYPE html>\n" + page, encoding="utf-8")
    return Path(path)


def xml_doc(path: Path) -> Path:
    Path(path).write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<report xmlns="urn:example:report">\n'
        f"  <title>Compte rendu</title>\n  <para>{FRENCH}</para>\n  <para lang=\"fr\">Fin du rapport.</para>\n"
        "</report>\n", encoding="utf-8")
    return Path(path)


def json_doc(path: Path) -> Path:
    data = {"title": "Vertrag", "parties": [{"name": "Jürgen Müller", "role": "Käufer"}],
            "summary": BODY_DE, "amount": 125000, "signed": True}
    Path(path).write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    return Path(path)


def deep_json(path: Path, levels: int = 100_000) -> Path:
    """``levels`` nested arrays: valid JSON, deeper than any recursive parser's stack."""
    Path(path).write_text("[" * levels + "]" * levels)
    return Path(path)


def billion_laughs(path: Path, levels: int = 10) -> Path:
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{("&lol%d;" % (i - 1)) * 10}">' for i in range(1, levels)
    ]
    Path(path).write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n' + "\n".join(entities) + f"\n]>\n<lolz>&lol{levels - 1};</lolz>\n"
    )
    return Path(path)


def external_entity(path: Path, target: str = "file:///etc/passwd") -> Path:
    Path(path).write_text(
        f'<?xml version="1.0"?>\n<!DOCTYPE data [<!ENTITY secret SYSTEM "{target}">]>\n<data>&secret;</data>\n'
    )
    return Path(path)


def _zip(path: Path, entries: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=DATE)
            info.compress_type = zipfile.ZIP_STORED if name == "mimetype" else zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return Path(path)


def epub(path: Path, cover: bool = True, chapters: tuple[str, ...] = (BODY_EN, archives.ENGLISH),
         extra: list[tuple[str, bytes]] = ()) -> Path:
    """An EPUB 3 with a spine of XHTML chapters, (optionally) a PNG cover picture and ``extra``
    zip entries (hostile variants: a bomb, a traversal name)."""
    items = "".join(
        f'<item id="c{i}" href="text/ch{i}.xhtml" media-type="application/xhtml+xml"/>' for i in range(len(chapters))
    )
    if cover:
        items += '<item id="cover" href="images/cover.png" media-type="image/png" properties="cover-image"/>'
    spine = "".join(f'<itemref idref="c{i}"/>' for i in range(len(chapters)))
    opf = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<package xmlns="http://www.idpf.org/2007/opf" version="3.0" '
        'unique-identifier="id"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
        '<dc:identifier id="id">urn:uuid:12345678-1234-1234-1234-123456789abc</dc:identifier>'
        "<dc:title>Site handbook</dc:title><dc:creator>Anna Weber</dc:creator><dc:language>en</dc:language>"
        f"</metadata><manifest>{items}</manifest><spine>{spine}</spine></package>\n"
    )
    entries = [
        ("mimetype", b"application/epub+zip"),
        ("META-INF/container.xml", b'<?xml version="1.0"?>\n<container version="1.0" '
         b'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles><rootfile '
         b'full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles></container>\n'),
        ("OEBPS/content.opf", opf.encode()),
    ]
    for i, text in enumerate(chapters):
        paragraphs = "".join(f"<p>{p}</p>" for p in text.split("\n\n"))
        entries.append((f"OEBPS/text/ch{i}.xhtml", (
            '<?xml version="1.0" encoding="UTF-8"?>\n<html xmlns="http://www.w3.org/1999/xhtml"><head>'
            f"<title>Chapter {i + 1}</title></head><body><h1>Chapter {i + 1}</h1>{paragraphs}</body></html>\n"
        ).encode()))
    if cover:
        entries.append(("OEBPS/images/cover.png", archives.make_png("HANDBOOK")))
    return _zip(path, entries + list(extra))


SVG_HEAD = '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="400" height="200" viewBox="0 0 400 200">'


def svg(path: Path) -> Path:
    """A red bar on the left half, a blue one on the right, a title and a caption."""
    Path(path).write_text(
        f'<?xml version="1.0" encoding="UTF-8"?>\n{SVG_HEAD}<title>Site plan</title>'
        '<rect x="0" y="0" width="200" height="200" fill="#ff0000"/>'
        '<rect x="200" y="0" width="200" height="200" fill="#0000ff"/>'
        '<text x="20" y="190" font-size="20" fill="#ffffff">North building</text></svg>\n',
        encoding="utf-8",
    )
    return Path(path)


def svg_with(path: Path, inner: str, doctype: str = "") -> Path:
    """An SVG whose white background holds ``inner`` (a reference under test)."""
    Path(path).write_text(
        f'<?xml version="1.0"?>\n{doctype}{SVG_HEAD}<rect width="400" height="200" fill="#ffffff"/>{inner}</svg>\n'
    )
    return Path(path)


def svg_local_file(path: Path) -> Path:
    return svg_with(path, '<image href="file:///etc/passwd" width="400" height="200"/>')


def svg_xlink_local(path: Path, target: Path) -> Path:
    return svg_with(path, f'<image xlink:href="{target}" width="400" height="200"/>')


def svg_external_entity(path: Path) -> Path:
    return svg_with(path, "<text x='10' y='100'>&secret;</text>",
                    '<!DOCTYPE svg [<!ENTITY secret SYSTEM "file:///etc/passwd">]>\n')


def svg_css_url(path: Path, target: Path) -> Path:
    return svg_with(path, f"<style>rect {{ fill: url({target}) }}</style>")
