"""Drawings (DXF): SVG rendition, previews, layers/units/extents, the drawing's texts and their
language. DWG fails as UnsupportedInput."""

from __future__ import annotations

from fileflow.engine.mediator import Mediation


async def steps(m: Mediation) -> None:
    drawn = await m.step("drawing_render")
    text = m.source_of(drawn, "text")
    await m.step("language", text, needs=(text,))
