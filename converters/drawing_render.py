"""Drawings (DXF): an SVG for the browser, JPEG previews, and what the drawing is made of.

The DXF is read with ``ezdxf.recover`` (tolerant of the many slightly broken files CAD tools
write) and drawn once through ezdxf's drawing add-on into a recording; that one recording is
replayed twice:

* through matplotlib (Agg) into ``preview-<size>.jpg`` for every size in ``preview_sizes``
  (default 160, 480, 1280): long side exactly ``size``, lines about one pixel wide at every size
  (each preview is drawn at its own size, not scaled down from a bigger one);
* through ezdxf's ``SVGBackend`` into ``drawing.svg`` (role ``svg``), fitted to the drawing's
  extents with a small margin, on a white background, ``svg_size`` pixels (default 1600) on its
  long side.

``text.txt`` (role ``text``) holds every text of the drawing, one per line, each distinct text
once: TEXT and MTEXT (formatting codes removed) of the model space and paper-space layouts, block
attributes (title blocks) and the texts inside inserted blocks; ``texts`` counts them. It is
empty for a drawing without text.

The model space is drawn (or, when it is empty, the first paper-space layout with content).
Entities on a layer that is missing from the layer table are drawn like a layer of colour 7
(black on white): ezdxf would otherwise draw them white on the white background.

Metadata: ``dxf_version`` (e.g. ``AC1024``), ``release`` (``R2010``), ``units`` (``mm``, ``in``,
...; ``unitless``), ``units_code`` ($INSUNITS), ``layers`` (the layer table, then the names only
entities use), ``layers_missing_from_table``, ``entity_count`` (entities of the drawn layout),
``entity_count_total`` (every graphic entity, block definitions included), ``extents``
(``min_x``, ``min_y``, ``max_x``, ``max_y`` of what was drawn, in drawing units; None when
nothing was), ``layout``, ``encoding``, ``audit_fixes``, ``truncated``.

Errors: DWG (MIME type ``image/vnd.dwg`` and friends, or bytes starting with ``AC10``) is
:class:`UnsupportedInput` - a closed binary format that nothing in this pipeline can read;
bytes that are not a DXF, or a DXF cut off before any entity, are :class:`CorruptInput`; more
graphic entities than ``max_entities`` (default 500,000) is :class:`LimitExceeded`.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any, Mapping

from converters.base import ConversionResult, ConverterSpec, Rendition, require
from converters.geometry import fit_long_side
from converters.options import int_option, preview_sizes
from fileflow.errors import CorruptInput, LimitExceeded, UnsupportedInput

SPEC = ConverterSpec(
    name="drawing_render",
    version="1.1.0",
    kinds=frozenset({"drawing"}),
    timeout_s=600,
    memory_mb=4096,
    retries=1,
    description="DXF: SVG rendition (white background, auto-fit), JPEG previews, layers/units/extents metadata",
    reads=frozenset({"preview_sizes"}),
)

DEFAULT_MAX_ENTITIES = 500_000
DEFAULT_SVG_SIZE = 1600
DEFAULT_JPEG_QUALITY = 85

MARGIN = 0.02
"""Blank border around the drawing, as a fraction of its long side."""
MAX_ASPECT = 8.0
"""A drawing thinner than 1:8 (a single line...) is centred on a 1:8 canvas."""
PAGE_MM = 400.0
"""Long side of the SVG page in millimetres (sets the viewBox proportions, nothing visible)."""

DWG_MIMES = frozenset({
    "image/vnd.dwg", "image/x-dwg", "application/acad", "application/x-acad", "application/dwg",
    "application/x-dwg", "application/autocad_dwg", "drawing/dwg",
})
DWG_MAGIC = (b"AC10", b"AC1.", b"AC2.")  # AC1012..AC1032, and the R1.x/R2.x ancestors
BINARY_DXF = b"AutoCAD Binary DXF"

DWG_MESSAGE = (
    "DWG drawings are not supported: DWG is a closed binary format and no open-source DWG reader "
    "is part of this pipeline. Open the drawing in your CAD program (AutoCAD, BricsCAD, DraftSight, "
    "LibreCAD, or the free ODA File Converter), export it as DXF and upload the DXF instead."
)

# exceptions ezdxf lets through on hostile bytes; all of them mean "this is not a readable DXF"
_PARSE_ERRORS = (ValueError, TypeError, IndexError, KeyError, AttributeError, UnicodeError,
                 EOFError, struct.error, OverflowError, RecursionError, AssertionError)


# --------------------------------------------------------------------------- reading
def _refuse_dwg(src: Path, options: Mapping[str, Any]) -> bytes:
    """The first bytes of ``src``; DWG fails here, before any parsing."""
    with src.open("rb") as fh:
        head = fh.read(65536)
    mime = str(options.get("mime") or "").split(";")[0].strip().lower()
    if mime in DWG_MIMES or head[:4] in DWG_MAGIC:
        raise UnsupportedInput(DWG_MESSAGE)
    if not head:
        raise CorruptInput("the drawing file is empty (0 bytes)")
    if not head.startswith(BINARY_DXF) and b"SECTION" not in head.upper():
        raise CorruptInput("the file is not a DXF drawing: it has no DXF section structure")
    return head


def _is_complete(src: Path) -> bool:
    """Whether the DXF ends with its EOF marker (a cut-off upload does not)."""
    size = src.stat().st_size
    with src.open("rb") as fh:
        fh.seek(max(0, size - 64))
        tail = fh.read()
    return b"EOF" in tail.rstrip(b"\x00\r\n\t ").upper()[-8:]


def _read(src: Path):
    ezdxf = require("ezdxf", "ezdxf")
    recover = require("ezdxf.recover", "ezdxf")
    try:
        return recover.readfile(str(src))
    except MemoryError:
        raise LimitExceeded("reading the drawing needs more memory than this step may use") from None
    except ezdxf.DXFError as exc:  # DXFStructureError, DXFVersionError, ...
        raise CorruptInput(f"the DXF drawing is damaged and cannot be read: {exc}") from None
    except _PARSE_ERRORS as exc:
        raise CorruptInput(f"the DXF drawing is damaged and cannot be read: {type(exc).__name__}: {exc}") from None


def _graphic_entities(doc):
    DXFGraphic = require("ezdxf.entities", "ezdxf").DXFGraphic
    for entity in doc.entitydb.values():
        if isinstance(entity, DXFGraphic) and entity.is_alive:
            yield entity


def _layout_to_draw(doc):
    msp = doc.modelspace()
    if len(msp):
        return msp
    for name in doc.layouts.names_in_taborder():
        layout = doc.layouts.get(name)
        if len(layout):
            return layout
    return msp


def _units(doc) -> tuple[str, int]:
    units = require("ezdxf.units", "ezdxf")
    try:
        code = int(doc.units)
    except (TypeError, ValueError):
        return "unitless", 0
    names = {0: "unitless", 21: "us-survey-ft", 22: "us-survey-in", 23: "us-survey-yd", 24: "us-survey-mi"}
    if code in names:
        return names[code], code
    try:
        name = units.decode(code)
    except (IndexError, ValueError, TypeError):
        name = None
    return (name or "unitless"), code


def _add_missing_layers(doc, used: list[str]) -> list[str]:
    """Put layers that entities name but the table lacks into the table, as colour 7.

    ezdxf's renderer gives an unknown layer white: white on a white background.
    """
    missing: list[str] = []
    seen: set[str] = set()
    for name in used:
        key = name.lower()
        if key in seen or doc.layers.has_entry(name):
            continue
        seen.add(key)
        missing.append(name)
        try:
            doc.layers.new(name, dxfattribs={"color": 7})
        except Exception:  # noqa: BLE001 - an unusable name stays unknown; nothing else breaks
            pass
    return missing


# --------------------------------------------------------------------------- geometry
def _drop_non_finite(recorder) -> int:
    """Remove recorded shapes with infinite or NaN coordinates (hostile or broken entities):
    they would make the page infinitely large. Returns how many were dropped."""
    kept = []
    for record in recorder.records:
        try:
            box = record.bbox()
            values = (box.extmin.x, box.extmin.y, box.extmax.x, box.extmax.y) if box.has_data else ()
        except (ValueError, ArithmeticError):
            continue
        if all(math.isfinite(v) for v in values):
            kept.append(record)
    dropped = len(recorder.records) - len(kept)
    if dropped:
        recorder.records[:] = kept
    return dropped


def _render_box(bbox) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1): the drawn extents with a margin, no thinner than 1:MAX_ASPECT."""
    (x0, y0), (x1, y1) = (bbox.extmin.x, bbox.extmin.y), (bbox.extmax.x, bbox.extmax.y)
    w, h = x1 - x0, y1 - y0
    long_side = max(w, h)
    if long_side <= 0:
        long_side = 1.0
    pad = long_side * MARGIN
    x0, y0, x1, y1 = x0 - pad, y0 - pad, x1 + pad, y1 + pad
    w, h = x1 - x0, y1 - y0
    min_short = max(w, h) / MAX_ASPECT
    if w < min_short:
        grow = (min_short - w) / 2
        x0, x1 = x0 - grow, x1 + grow
    if h < min_short:
        grow = (min_short - h) / 2
        y0, y1 = y0 - grow, y1 + grow
    return x0, y0, x1, y1


# --------------------------------------------------------------------------- outputs
def _preview_artists(player, dpi: int):
    """The recording as two matplotlib collections: fills (text glyphs, solids, hatches), then
    strokes. Two collections draw in a fraction of the time of one artist per entity (which is
    what ezdxf's own matplotlib backend makes); fills go under strokes."""
    np = require("numpy", "numpy")
    mpath = require("matplotlib.path", "matplotlib")
    collections = require("matplotlib.collections", "matplotlib")
    recorder = require("ezdxf.addons.drawing.recorder", "ezdxf")
    to_mpl = require("ezdxf.npshapes", "ezdxf").to_matplotlib_path
    MPath = mpath.Path

    one_px = 72.0 / dpi  # matplotlib line widths are in points
    fills, fill_colors = [], []
    strokes, stroke_colors, stroke_widths = [], [], []

    def stroke(path, properties) -> None:
        strokes.append(path)
        stroke_colors.append(properties.color)
        # about one pixel; heavy pens (lineweight >= 0.5 mm) up to three
        stroke_widths.append(one_px * min(3.0, max(1.0, float(properties.lineweight) / 0.35)))

    for record, properties in player.recordings():
        try:
            if isinstance(record, recorder.PointsRecord):
                vertices = record.points.np_vertices()
                if len(vertices) > 2:
                    fills.append(MPath(vertices, closed=True))
                    fill_colors.append(properties.color)
                elif len(vertices) == 2:
                    stroke(MPath(vertices), properties)
            elif isinstance(record, recorder.SolidLinesRecord):
                vertices = record.lines.np_vertices()
                count = len(vertices) // 2
                if count:
                    codes = np.tile(np.array([MPath.MOVETO, MPath.LINETO], dtype=MPath.code_type), count)
                    stroke(MPath(vertices[: 2 * count], codes), properties)
            elif isinstance(record, recorder.PathRecord):
                if len(record.path):
                    stroke(to_mpl([record.path]), properties)
            elif isinstance(record, recorder.FilledPathsRecord):
                paths = [p for p in record.paths if len(p)]
                if paths:
                    fills.append(to_mpl(paths, detect_holes=True))
                    fill_colors.append(properties.color)
            # ImageRecord: raster images are not drawn in previews (nor in the SVG)
        except (ValueError, IndexError):  # one degenerate shape must not lose the preview
            continue

    artists = []
    if fills:
        artists.append(collections.PathCollection(
            fills, facecolors=fill_colors, edgecolors="none", linewidths=0, antialiaseds=True, zorder=1))
    if strokes:
        artists.append(collections.PathCollection(
            strokes, facecolors="none", edgecolors=stroke_colors, linewidths=stroke_widths,
            capstyle="round", joinstyle="round", antialiaseds=True, zorder=2))
    return artists


def _previews(player, box, sizes: list[int], out_dir: Path, quality: int) -> list[Rendition]:
    """Draw the recording once into a matplotlib figure; save it at every size."""
    matplotlib = require("matplotlib", "matplotlib")
    matplotlib.use("Agg", force=True)
    Figure = require("matplotlib.figure", "matplotlib").Figure
    FigureCanvasAgg = require("matplotlib.backends.backend_agg", "matplotlib").FigureCanvasAgg
    Image = require("PIL.Image", "pillow")
    np = require("numpy", "numpy")

    dpi = 100
    fig = Figure(dpi=dpi, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    for artist in _preview_artists(player, dpi):
        ax.add_collection(artist, autolim=False)
    ax.set_xlim(box[0], box[2])
    ax.set_ylim(box[1], box[3])
    ax.set_aspect("equal", adjustable="box", anchor="C")

    renditions = []
    try:
        for size in sizes:
            width, height = fit_long_side(box[2] - box[0], box[3] - box[1], size, enlarge=True)
            fig.set_size_inches(width / dpi, height / dpi)
            canvas.draw()
            rgba = np.asarray(canvas.buffer_rgba())
            picture = Image.fromarray(rgba[..., :3].copy(), "RGB")
            if picture.size != (width, height):  # float inches can land one pixel off
                picture = picture.resize((width, height), Image.Resampling.LANCZOS)
            name = f"preview-{size}.jpg"
            picture.save(out_dir / name, "JPEG", quality=quality, optimize=True)
            renditions.append(Rendition("preview", name, "image/jpeg", width, height))
    finally:
        fig.clear()
    return renditions


def _svg(recorder, box, svg_size: int, out_dir: Path) -> Rendition:
    """The SVG, fitted to ``box``; replaying transforms the recording in place: call it last."""
    drawing_layout = require("ezdxf.addons.drawing.layout", "ezdxf")
    BoundingBox2d = require("ezdxf.math", "ezdxf").BoundingBox2d
    from xml.etree import ElementTree as ET

    w, h = box[2] - box[0], box[3] - box[1]
    page_w, page_h = (PAGE_MM, PAGE_MM * h / w) if w >= h else (PAGE_MM * w / h, PAGE_MM)
    page = drawing_layout.Page(page_w, page_h, drawing_layout.Units.mm, margins=drawing_layout.Margins.all(0))
    settings = drawing_layout.Settings(
        fit_page=True,
        # stroke widths relative to the drawing's size, so lines stay visible however large it is
        max_stroke_width=0.004,
        min_stroke_width=0.2,
        fixed_stroke_width=0.25,
    )
    root = recorder.get_xml_root_element(
        page, settings=settings, render_box=BoundingBox2d([(box[0], box[1]), (box[2], box[3])])
    )
    width, height = fit_long_side(box[2] - box[0], box[3] - box[1], svg_size, enlarge=True)
    root.set("width", str(width))
    root.set("height", str(height))
    root.set("preserveAspectRatio", "xMidYMid meet")
    data = ET.tostring(root, encoding="unicode", xml_declaration=True)
    (out_dir / "drawing.svg").write_text(data, encoding="utf-8")
    return Rendition("svg", "drawing.svg", "image/svg+xml", width, height)


def _blank(out_dir: Path, sizes: list[int], svg_size: int, quality: int) -> list[Rendition]:
    """An empty drawing: a white square SVG and white square previews."""
    Image = require("PIL.Image", "pillow")
    svg = (
        "<?xml version='1.0' encoding='utf-8'?>\n"
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{svg_size}" height="{svg_size}" viewBox="0 0 100 100">'
        '<rect x="0" y="0" width="100" height="100" fill="white"/></svg>'
    )
    (out_dir / "drawing.svg").write_text(svg, encoding="utf-8")
    renditions = [Rendition("svg", "drawing.svg", "image/svg+xml", svg_size, svg_size)]
    for size in sizes:
        name = f"preview-{size}.jpg"
        Image.new("RGB", (size, size), "white").save(out_dir / name, "JPEG", quality=quality)
        renditions.append(Rendition("preview", name, "image/jpeg", size, size))
    return renditions


# --------------------------------------------------------------------------- text
TEXT_TYPES = ("TEXT", "MTEXT", "ATTRIB")
MAX_BLOCK_DEPTH = 8
MAX_TEXT_CHARS = 5_000_000


def _text_of(entity) -> str:
    kind = entity.dxftype()
    try:
        if kind == "MTEXT":
            return entity.plain_text(split=False)
        if kind in ("TEXT", "ATTRIB"):
            return entity.plain_text()
    except Exception:  # noqa: BLE001 - one undecodable text must not lose the drawing
        return ""
    return ""


def drawing_texts(doc) -> list[str]:
    """Every text a reader of the drawing sees, in drawing order, each distinct text once: TEXT
    and MTEXT of the model space and the paper-space layouts, the attributes of block references
    (title blocks: "Drawn by", project numbers ...) and the texts inside the blocks they show
    (nested up to 8 deep). Attribute *definitions* are templates, not text, and are left out."""
    found: dict[str, None] = {}
    seen_blocks: set[str] = set()

    def walk(entities, depth: int) -> None:
        for entity in entities:
            kind = entity.dxftype()
            if kind in TEXT_TYPES:
                text = " ".join(_text_of(entity).split())
                if text:
                    found.setdefault(text, None)
            elif kind == "INSERT":
                for attrib in getattr(entity, "attribs", ()):
                    text = " ".join(_text_of(attrib).split())
                    if text:
                        found.setdefault(text, None)
                name = entity.dxf.get("name")
                if depth < MAX_BLOCK_DEPTH and name and name not in seen_blocks:
                    seen_blocks.add(name)
                    block = doc.blocks.get(name)
                    if block is not None:
                        walk(block, depth + 1)

    walk(doc.modelspace(), 0)
    for layout in doc.layouts:
        if layout.name != "Model":
            walk(layout, 0)
    return list(found)


def _write_text(doc, out_dir: Path) -> tuple[Rendition, dict[str, Any]]:
    texts = drawing_texts(doc)
    text = "\n".join(texts)
    truncated = len(text) > MAX_TEXT_CHARS
    text = text[:MAX_TEXT_CHARS]
    (out_dir / "text.txt").write_text(text + ("\n" if text else ""), encoding="utf-8")
    return Rendition("text", "text.txt", "text/plain"), {"texts": len(texts), "text_truncated": truncated}


# --------------------------------------------------------------------------- convert
def convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult:
    # without the option the default is kept smallest first, as this converter always had it
    sizes = preview_sizes(options, accept_single=True)  # largest first
    max_entities = int_option(options, "max_entities", DEFAULT_MAX_ENTITIES, minimum=1)
    svg_size = int_option(options, "svg_size", DEFAULT_SVG_SIZE, minimum=16)
    quality = min(95, int_option(options, "jpeg_quality", DEFAULT_JPEG_QUALITY, minimum=1))

    _refuse_dwg(src, options)
    complete = _is_complete(src)
    doc, auditor = _read(src)

    graphics = list(_graphic_entities(doc))
    if len(graphics) > max_entities:
        raise LimitExceeded(
            f"the drawing has {len(graphics):,} graphic entities, more than the limit of {max_entities:,}"
        )
    layout = _layout_to_draw(doc)
    if not complete and not len(layout):
        raise CorruptInput("the DXF drawing is truncated: it ends before its entities (no EOF marker)")

    table_layers = [layer.dxf.name for layer in doc.layers]
    used: list[str] = []
    for entity in graphics:
        name = entity.dxf.get("layer")
        if isinstance(name, str) and name:
            used.append(name)
    missing = _add_missing_layers(doc, used)
    units, units_code = _units(doc)
    const = require("ezdxf.lldxf.const", "ezdxf")

    metadata: dict[str, Any] = {
        "dxf_version": doc.dxfversion,
        "release": const.acad_release.get(doc.dxfversion),
        "units": units,
        "units_code": units_code,
        "layers": table_layers + missing,
        "layers_missing_from_table": missing,
        "entity_count": len(layout),
        "entity_count_total": len(graphics),
        "layout": layout.name,
        "encoding": doc.encoding,
        "audit_fixes": len(auditor.fixes) + len(auditor.errors),
        "truncated": not complete,
        "extents": None,
    }

    out_dir.mkdir(parents=True, exist_ok=True)
    text_rendition, text_metadata = _write_text(doc, out_dir)
    metadata |= text_metadata
    drawing = require("ezdxf.addons.drawing", "ezdxf")
    config = require("ezdxf.addons.drawing.config", "ezdxf")
    svg = require("ezdxf.addons.drawing.svg", "ezdxf")

    recorder = svg.SVGBackend()
    configuration = config.Configuration(
        background_policy=config.BackgroundPolicy.WHITE,
        color_policy=config.ColorPolicy.COLOR,
        lineweight_policy=config.LineweightPolicy.RELATIVE,
    )
    try:
        context = drawing.RenderContext(doc)
        drawing.Frontend(context, recorder, config=configuration).draw_layout(layout, finalize=True)
    except MemoryError:
        raise LimitExceeded("drawing the DXF needs more memory than this step may use") from None
    except require("ezdxf", "ezdxf").DXFError as exc:
        raise CorruptInput(f"the DXF drawing contains entities that cannot be drawn: {exc}") from None

    dropped = _drop_non_finite(recorder)
    if dropped:
        metadata["dropped_shapes"] = dropped
    player = recorder.player()
    bbox = player.bbox()
    if not bbox.has_data:
        renditions = _blank(out_dir, sizes, svg_size, quality)
        return ConversionResult(renditions=[*renditions, text_rendition], metadata=metadata)

    metadata["extents"] = {
        "min_x": round(float(bbox.extmin.x), 6),
        "min_y": round(float(bbox.extmin.y), 6),
        "max_x": round(float(bbox.extmax.x), 6),
        "max_y": round(float(bbox.extmax.y), 6),
    }
    box = _render_box(bbox)
    try:
        previews = _previews(player, box, sizes, out_dir, quality)
        svg_rendition = _svg(recorder, box, svg_size, out_dir)  # last: transforms the recording
    except MemoryError:
        raise LimitExceeded("drawing the DXF needs more memory than this step may use") from None
    return ConversionResult(renditions=[svg_rendition, *previews, text_rendition], metadata=metadata)

