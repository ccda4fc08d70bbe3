"""Video: probe, then in parallel an H.264/AAC faststart MP4 (<= 1080p) and a poster with previews."""

from __future__ import annotations

import asyncio

from prefect import flow

from fileflow.engine.mediator import FileRef, Mediation
from flows._common import outcome


@flow(name="video", flow_run_name="video:{file.name}", persist_result=False)
async def video_flow(file: FileRef, inspected: dict):
    m = Mediation(file, inspected)
    probe = await m.step("video_probe")
    await asyncio.gather(
        m.step("video_transcode", needs=(probe,)),
        m.step("video_poster", needs=(probe,)),
    )
    return outcome(await m.finish())
