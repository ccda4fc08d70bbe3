"""Office documents: PDF through the warm LibreOffice, then the PDF steps on that PDF."""

from __future__ import annotations

import asyncio

from fileflow.engine.mediator import Mediation


async def steps(m: Mediation) -> None:
    converted = await m.step("office_pdf")
    pdf = m.source_of(converted, "pdf")
    _, text = await asyncio.gather(
        m.step("pdf_preview", pdf, needs=(pdf,)),
        m.step("pdf_text", pdf, needs=(pdf,)),
    )
    await m.step("language", m.source_of(text, "text"), needs=(text,))
