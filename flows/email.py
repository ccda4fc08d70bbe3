"""E-mail: headers, body text and its language, a printable PDF (the sanitised message printed by
LibreOffice) with previews, then every attachment and embedded message as a file of its own."""

from __future__ import annotations

import asyncio

from prefect import flow

from fileflow.mediator import FileRef, Mediation
from flows._common import outcome
from flows.archive import process_members


@flow(name="email", flow_run_name="email:{file.name}", persist_result=False)
async def email_flow(file: FileRef, inspected: dict):
    m = Mediation(file, inspected)
    parsed = await m.step("email_parse")
    page = m.source_of(parsed, "web")
    printed, _ = await asyncio.gather(
        m.step("office_pdf", page, {"mime": "text/html"}, needs=(page,)),
        m.step("language", m.source_of(parsed, "text"), needs=(parsed,)),
    )
    pdf = m.source_of(printed, "pdf")
    await m.step("pdf_preview", pdf, needs=(pdf,))
    await process_members(m, parsed["members"] if parsed else [])
    return outcome(await m.finish())
