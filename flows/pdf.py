"""PDF: first-page previews, page count and metadata, text layer (OCR where missing), language."""

from __future__ import annotations

import asyncio

from fileflow.engine.mediator import Mediation


async def steps(m: Mediation) -> None:
    _, text = await asyncio.gather(
        m.step("pdf_preview"),
        m.step("pdf_text"),
    )
    await m.step("language", m.source_of(text, "text"), needs=(text,))
