"""SVG: raster previews, with every external reference refused; the text of its ``<text>``.

Two locks, so that an SVG can neither reach the network nor read a local file:

1. Before rendering, the SVG is parsed with ``defusedxml`` (no DTD, no entities, no external
   references) and every ``href``/``xlink:href``/``src`` must point inside the document (``#id``)
   or be a ``data:`` URI; a CSS ``url(...)`` or ``@import`` that is not ``#id``/``data:`` counts
   the same. ``<image href="file:///etc/passwd">``, ``xlink:href="/home/x.png"``,
   ``http://...`` references and XInclude fail with :class:`CorruptInput` ("hostile SVG").
2. librsvg's ``rsvg-convert`` (Debian ``librsvg2-bin``) reads the SVG from its standard input, so
   it has no base location: librsvg then loads no file the SVG names (it only ever loads files
   next to or below a base file), and it never fetches URLs. It runs in an empty scratch folder
   with a timeout.

Previews: ``preview-<size>.jpg`` for each ``preview_sizes`` (default 1280, 480, 160), the drawing
fitted into a size x size box, transparency flattened onto white. ``text.txt`` (role ``text``):
the text of ``<text>``/``<title>``/``<desc>`` elements, when there is any. Metadata: ``width``,
``height``, ``view_box`` as written, ``elements``, ``title``.

Errors: not XML or not an ``<svg>`` root -> :class:`CorruptInput`; ``max_bytes`` (20 MiB) ->
:class:`LimitExceeded`; rsvg-convert missing -> :class:`ToolError`; its timeout ->
:class:`ToolTimeout`; it failing on the drawing -> :class:`CorruptInput`.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Mapping

from converters.base import ConversionResult, ConverterSpec, Rendition, require
from converters.markup_text import parse_xml
from converters.options import float_option, int_option, preview_sizes
from fileflow.errors import CorruptInput, LimitExceeded, ToolCrashed, ToolError, ToolTimeout

SPEC = ConverterSpec(
    name="svg_render",
    version="1.0.0",
    kinds=frozenset({"markup"}),
    timeout_s=120,
    memory_mb=2048,
    retries=1,
    description="SVG: raster previews through librsvg with external references refused; its text",
    reads=frozenset({"preview_sizes"}),
)

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
_LINK_ATTRS = ("href", "src")
_CSS_URL = re.compile(r"url\(\s*['\"]?\s*([^'\")\s]*)", re.I)
_TEXT_TAGS = ("text", "title", "desc")


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _inside(reference: str) -> bool:
    ref = reference.strip()
    return ref == "" or ref.startswith("#") or ref.lower().startswith("data:")


def check_references(root) -> None:
    """Refuse any reference that leaves the document (see the module docstring, lock 1)."""

    def hostile(what: str) -> CorruptInput:
        return CorruptInput(f"hostile SVG: {what}; external files and URLs are never read")

    for element in root.iter():
        tag = _local(element.tag)
        if tag == "include" or "XInclude" in str(element.tag):
            raise hostile("it uses XInclude")
        for name, value in element.attrib.items():
            local = _local(name) if name.startswith("{") else name.split(":")[-1]
            if local in _LINK_ATTRS and not _inside(value):
                raise hostile(f"<{tag}> references {value[:200]!r}")
            if local == "style" or "url(" in value.lower():
                for ref in _CSS_URL.findall(value):
                    if not _inside(ref):
                        raise hostile(f"<{tag}> references {ref[:200]!r} in CSS")
        if tag == "style" and element.text:
            css = element.text
            if "@import" in css.lower():
                raise hostile("its style sheet imports another")
            for ref in _CSS_URL.findall(css):
                if not _inside(ref):
                    raise hostile(f"its style sheet references {ref[:200]!r}")


def rasterise(svg: bytes, size: int, rsvg: str, timeout_s: float) -> bytes:
    """PNG bytes of ``svg`` fitted into size x size, by rsvg-convert reading standard input."""
    with tempfile.TemporaryDirectory(prefix="svg-") as scratch:
        try:
            proc = subprocess.run(
                [rsvg, "--format", "png", "--keep-aspect-ratio", "--width", str(size), "--height", str(size)],
                input=svg, capture_output=True, cwd=scratch, timeout=timeout_s, check=False,
            )
        except subprocess.TimeoutExpired:
            raise ToolTimeout(f"rsvg-convert did not finish drawing the SVG in {timeout_s:g} s") from None
    if proc.returncode < 0:
        raise ToolCrashed(f"rsvg-convert died with signal {-proc.returncode}")
    if proc.returncode != 0 or not proc.stdout.startswith(b"\x89PNG"):
        message = proc.stderr.decode("utf-8", "replace").strip()[:500] or f"exit code {proc.returncode}"
        raise CorruptInput(f"the SVG cannot be drawn: {message}")
    return proc.stdout


def _rsvg(options: Mapping[str, Any]) -> str:
    configured = options.get("rsvg_convert")
    found = shutil.which(str(configured)) if configured else shutil.which("rsvg-convert")
    if not found:
        raise ToolError("rsvg-convert is not installed on this machine (apt-get install librsvg2-bin)")
    return found


def convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult:
    src, out_dir = Path(src), Path(out_dir)
    max_bytes = int_option(options, "max_bytes", DEFAULT_MAX_BYTES, minimum=1)
    timeout_s = float_option(options, "render_timeout_s", 60.0, minimum=1.0)
    sizes = preview_sizes(options, accept_single=True)
    if not sizes:
        raise ValueError("option 'preview_sizes' must name at least one size")
    size = src.stat().st_size
    if size > max_bytes:
        raise LimitExceeded(f"the SVG is {size:,} bytes; the limit is {max_bytes:,} (option max_bytes)")
    data = src.read_bytes()
    root = parse_xml(data)
    if _local(root.tag) != "svg":
        raise CorruptInput(f"not an SVG drawing: its root element is <{_local(root.tag)}>")
    check_references(root)
    rsvg = _rsvg(options)

    Image = require("PIL.Image", "pillow")
    out_dir.mkdir(parents=True, exist_ok=True)
    renditions: list[Rendition] = []
    for box in sizes:
        png = rasterise(data, box, rsvg, timeout_s)
        with Image.open(io.BytesIO(png)) as im:
            im.load()
            flat = Image.new("RGB", im.size, (255, 255, 255))
            rgba = im.convert("RGBA")
            flat.paste(rgba, mask=rgba.getchannel("A"))
        name = f"preview-{box}.jpg"
        flat.save(out_dir / name, "JPEG", quality=90, optimize=True)
        renditions.append(Rendition("preview", name, "image/jpeg", flat.width, flat.height))

    texts = [" ".join("".join(e.itertext()).split()) for e in root.iter() if _local(e.tag) in _TEXT_TAGS]
    texts = [t for t in texts if t]
    if texts:
        (out_dir / "text.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
        renditions.append(Rendition("text", "text.txt", "text/plain"))
    title = next((" ".join((e.text or "").split()) for e in root.iter() if _local(e.tag) == "title"), None)
    return ConversionResult(
        renditions=renditions,
        metadata={
            "width": root.get("width"), "height": root.get("height"), "view_box": root.get("viewBox"),
            "elements": sum(1 for _ in root.iter()), "title": title or None,
        },
    )
