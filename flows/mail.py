"""E-mail: headers, body text and its language, a printable PDF (the sanitised message printed by
LibreOffice) with previews; every attachment and embedded message (``members`` of
``email_parse``) is then processed by the router as a file of its own."""

from __future__ import annotations

import asyncio

from fileflow.engine.mediator import Mediation


async def steps(m: Mediation) -> None:
    parsed = await m.step("email_parse")
    page = m.source_of(parsed, "web")
    printed, _ = await asyncio.gather(
        m.step("office_pdf", page, {"mime": "text/html"}, needs=(page,)),
        m.step("language", m.source_of(parsed, "text"), needs=(parsed,)),
    )
    pdf = m.source_of(printed, "pdf")
    await m.step("pdf_preview", pdf, needs=(pdf,))
