"""Video: probe, then in parallel an H.264/AAC faststart MP4 (<= 1080p) and a poster with previews."""

from __future__ import annotations

import asyncio

from fileflow.engine.mediator import Mediation


async def steps(m: Mediation) -> None:
    probe = await m.step("video_probe")
    await asyncio.gather(
        m.step("video_transcode", needs=(probe,)),
        m.step("video_poster", needs=(probe,)),
    )
