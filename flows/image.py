"""Images: web rendition and previews, OCR of the text in the picture, its language."""

from __future__ import annotations

import asyncio

from fileflow.engine.mediator import Mediation


async def steps(m: Mediation) -> None:
    _, ocr = await asyncio.gather(
        m.step("image_renditions"),
        m.step("ocr"),
    )
    await m.step("language", m.source_of(ocr, "text"), needs=(ocr,))
