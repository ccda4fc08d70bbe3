"""Audio: probe, then in parallel a browser-ready MP3/AAC and a waveform picture with previews."""

from __future__ import annotations

import asyncio

from fileflow.engine.mediator import Mediation


async def steps(m: Mediation) -> None:
    probe = await m.step("audio_probe")
    await asyncio.gather(
        m.step("audio_transcode", needs=(probe,)),
        m.step("audio_waveform", needs=(probe,)),
    )
