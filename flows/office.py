"""Office documents: PDF through the warm LibreOffice, then the PDF steps on that PDF.

Spreadsheets bring their cells' text from ``office_pdf`` itself (read from the cells, not from
the printed page, where values are cut at the column width): only previews come from the PDF.
"""

from __future__ import annotations

import asyncio

from fileflow.engine.mediator import Mediation


async def steps(m: Mediation) -> None:
    converted = await m.step("office_pdf")
    pdf = m.source_of(converted, "pdf")
    cells = m.source_of(converted, "text")  # spreadsheets only
    if cells is not None:
        await asyncio.gather(
            m.step("pdf_preview", pdf, needs=(pdf,)),
            m.step("language", cells, needs=(cells,)),
        )
        return
    _, text = await asyncio.gather(
        m.step("pdf_preview", pdf, needs=(pdf,)),
        m.step("pdf_text", pdf, needs=(pdf,)),
    )
    await m.step("language", m.source_of(text, "text"), needs=(text,))
