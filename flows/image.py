"""Images: web rendition and previews, OCR of the text in the picture, its language; an animated
GIF also becomes a looping MP4 (a still frame alone loses what it shows)."""

from __future__ import annotations

import asyncio

from prefect import flow

from fileflow.mediator import FileRef, Mediation
from flows._common import outcome


@flow(name="image", flow_run_name="image:{file.name}", persist_result=False)
async def image_flow(file: FileRef, inspected: dict):
    m = Mediation(file, inspected)
    pictures, ocr = await asyncio.gather(
        m.step("image_renditions"),
        m.step("ocr"),
    )
    if pictures and pictures["metadata"].get("animated") and pictures["metadata"].get("format") == "GIF":
        await m.step("video_transcode", options={"loop": True})
    await m.step("language", m.source_of(ocr, "text"), needs=(ocr,))
    return outcome(await m.finish())
