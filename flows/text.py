"""Plain text (TXT, CSV, Markdown): normalised UTF-8 text and its language."""

from __future__ import annotations

from fileflow.engine.mediator import Mediation


async def steps(m: Mediation) -> None:
    text = await m.step("text_extract")
    await m.step("language", m.source_of(text, "text"), needs=(text,))
