"""Archives (ZIP): guarded expansion, then every member processed as a file of its own.

Each member goes through the router (``process-file``) as a subflow of this run, linked to
this archive as its parent; members that are archives recurse, one level deeper each time,
until the converter's depth limit refuses them.
"""

from __future__ import annotations

import asyncio

from prefect import flow

from blocks.storage import original_key
from fileflow.mediator import FileRef, Mediation
from flows._common import outcome


@flow(name="archive", flow_run_name="archive:{file.name}", persist_result=False)
async def archive_flow(file: FileRef, inspected: dict):
    from flows.router import process_file  # the router routes to this flow too

    m = Mediation(file, inspected)
    expanded = await m.step("archive_expand")
    members = expanded["members"] if expanded else []
    m.rt.tracker.expect(len(members))
    gate = asyncio.Semaphore(m.rt.pipeline.max_active_members)

    async def member(entry: dict) -> None:
        async with gate:
            await process_file(
                key=original_key(entry["sha256"]),
                file_id=entry["sha256"],
                name=f"{file.name}/{entry['name']}",
                size=entry["size"],
                parent=file.file_id,
                depth=file.depth + 1,
                return_state=True,  # a failed member is its own manifest's business
            )

    await asyncio.gather(*(member(e) for e in members))
    m.children = [e["sha256"] for e in members]
    return outcome(await m.finish())
