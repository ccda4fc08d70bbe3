"""Images: web rendition and previews, OCR of the text in the picture, its language."""

from __future__ import annotations

import asyncio

from prefect import flow

from fileflow.engine.mediator import FileRef, Mediation
from flows._common import outcome


@flow(name="image", flow_run_name="image:{file.name}", persist_result=False)
async def image_flow(file: FileRef, inspected: dict):
    m = Mediation(file, inspected)
    _, ocr = await asyncio.gather(
        m.step("image_renditions"),
        m.step("ocr"),
    )
    await m.step("language", m.source_of(ocr, "text"), needs=(ocr,))
    return outcome(await m.finish())
