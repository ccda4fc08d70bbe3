"""Text in markup. SVG: raster previews (external references refused) and the drawing's text.
HTML, XML, JSON, EPUB: their text and its language; HTML (and an EPUB without a cover) also a
sanitised page printed to PDF by the warm LibreOffice, with previews of its first page."""

from __future__ import annotations

import asyncio

from fileflow.engine.mediator import Mediation


async def steps(m: Mediation) -> None:
    if m.file.ext == "svg":
        drawn = await m.step("svg_render")
        text = m.source_of(drawn, "text")
        if text is not None:
            await m.step("language", text)
        return
    extracted = await m.step("markup_text")
    page = m.source_of(extracted, "web")
    steps = [m.step("language", m.source_of(extracted, "text"), needs=(extracted,))]
    if page is not None:
        steps.append(m.step("office_pdf", page, {"mime": "text/html"}))
    *_, printed = await asyncio.gather(*steps)
    if page is not None:
        pdf = m.source_of(printed, "pdf")
        await m.step("pdf_preview", pdf, needs=(pdf,))
