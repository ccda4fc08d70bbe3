"""Audio: probe, then in parallel a browser-ready MP3/AAC and a waveform picture with previews."""

from __future__ import annotations

import asyncio

from prefect import flow

from fileflow.mediator import FileRef, Mediation
from flows._common import outcome


@flow(name="audio", flow_run_name="audio:{file.name}", persist_result=False)
async def audio_flow(file: FileRef, inspected: dict):
    m = Mediation(file, inspected)
    probe = await m.step("audio_probe")
    await asyncio.gather(
        m.step("audio_transcode", needs=(probe,)),
        m.step("audio_waveform", needs=(probe,)),
    )
    return outcome(await m.finish())
