"""Drawings (DXF): SVG rendition, previews, layers/units/extents, the drawing's texts and their
language. DWG fails as UnsupportedInput."""

from __future__ import annotations

from prefect import flow

from fileflow.mediator import FileRef, Mediation
from flows._common import outcome


@flow(name="drawing", flow_run_name="drawing:{file.name}", persist_result=False)
async def drawing_flow(file: FileRef, inspected: dict):
    m = Mediation(file, inspected)
    drawn = await m.step("drawing_render")
    text = m.source_of(drawn, "text")
    await m.step("language", text, needs=(text,))
    return outcome(await m.finish())
