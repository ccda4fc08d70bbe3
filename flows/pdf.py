"""PDF: first-page previews, page count and metadata, text layer (OCR where missing), language."""

from __future__ import annotations

import asyncio

from prefect import flow

from fileflow.engine.mediator import FileRef, Mediation
from flows._common import outcome


@flow(name="pdf", flow_run_name="pdf:{file.name}", persist_result=False)
async def pdf_flow(file: FileRef, inspected: dict):
    m = Mediation(file, inspected)
    _, text = await asyncio.gather(
        m.step("pdf_preview"),
        m.step("pdf_text"),
    )
    await m.step("language", m.source_of(text, "text"), needs=(text,))
    return outcome(await m.finish())
