"""Drawings (DXF): SVG rendition, previews, layers/units/extents. DWG fails as UnsupportedInput."""

from __future__ import annotations

from fileflow.engine.mediator import Mediation


async def steps(m: Mediation) -> None:
    await m.step("drawing_render")
