"""Plain text (TXT, CSV, Markdown): normalised UTF-8 text and its language."""

from __future__ import annotations

from prefect import flow

from fileflow.engine.mediator import FileRef, Mediation
from flows._common import outcome


@flow(name="text", flow_run_name="text:{file.name}", persist_result=False)
async def text_flow(file: FileRef, inspected: dict):
    m = Mediation(file, inspected)
    text = await m.step("text_extract")
    await m.step("language", m.source_of(text, "text"), needs=(text,))
    return outcome(await m.finish())
