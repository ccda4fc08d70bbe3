"""Images: web rendition and previews, OCR of the text in the picture, its language; an animated
GIF also becomes a looping MP4 (a still frame alone loses what it shows)."""

from __future__ import annotations

import asyncio

from fileflow.engine.mediator import Mediation


async def steps(m: Mediation) -> None:
    pictures, ocr = await asyncio.gather(
        m.step("image_renditions"),
        m.step("ocr"),
    )
    if pictures and pictures["metadata"].get("animated") and pictures["metadata"].get("format") == "GIF":
        await m.step("video_transcode", options={"loop": True})
    await m.step("language", m.source_of(ocr, "text"), needs=(ocr,))
