"""Drawings (DXF): SVG rendition, previews, layers/units/extents. DWG fails as UnsupportedInput."""

from __future__ import annotations

from prefect import flow

from fileflow.engine.mediator import FileRef, Mediation
from flows._common import outcome


@flow(name="drawing", flow_run_name="drawing:{file.name}", persist_result=False)
async def drawing_flow(file: FileRef, inspected: dict):
    m = Mediation(file, inspected)
    await m.step("drawing_render")
    return outcome(await m.finish())
