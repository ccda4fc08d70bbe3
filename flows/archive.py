"""Archives (ZIP, 7z, RAR, tar, tar.gz/.bz2/.xz, .gz): guarded expansion, then every member
processed as a file of its own. ZIP has its own reader (``archive_expand``); every other format
goes through libarchive (``archive_libarchive``), with the same guards and limits.

Each member goes through the router (``process-file``) as a subflow of this run, linked to
this archive as its parent; members that are archives recurse, one level deeper each time,
until the converter's depth limit refuses them. The run carries a progress artifact
(``members-<sha256[:32]>``): the share of members finished, updated as they finish.
"""

from __future__ import annotations

import asyncio

from prefect import flow
from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact

from blocks.storage import original_key
from fileflow.mediator import FileRef, Mediation, display_name
from flows._common import file_tags, outcome


@flow(name="archive", flow_run_name="archive:{file.name}", persist_result=False)
async def archive_flow(file: FileRef, inspected: dict):
    m = Mediation(file, inspected)
    expanded = await m.step("archive_expand" if file.ext == "zip" else "archive_libarchive")
    await process_members(m, expanded["members"] if expanded else [])
    return outcome(await m.finish())


async def process_members(m: Mediation, members: list[dict]) -> None:
    """Every member (of an archive, or an e-mail's attachments) through the router, linked to
    ``m.file`` as its parent, one level deeper."""
    from flows.router import process_to_terminal  # the router routes to this flow too

    file = m.file
    m.rt.tracker.expect(len(members))
    gate = asyncio.Semaphore(m.rt.pipeline.max_active_members)
    progress = Progress(len(members), file)
    await progress.start()

    async def member(entry: dict) -> None:
        name = f"{file.name}/{entry['name']}"
        member_file = FileRef(file_id=entry["sha256"], name=display_name(name), key=original_key(entry["sha256"]),
                              size=entry["size"], parent=file.file_id, depth=file.depth + 1)
        async with gate:  # a failed member is its own manifest's business
            with file_tags():  # the member's router tags it with its own kind
                await process_to_terminal(member_file, name, delay_s=m.rt.pipeline.retry_delay_s)
        await progress.advance()

    await asyncio.gather(*(member(e) for e in members))
    m.children = [e["sha256"] for e in members]


class Progress:
    """The members' progress artifact in percent, updated at most once per whole percent."""

    def __init__(self, total: int, file: FileRef) -> None:
        self.total, self.file, self.done, self.shown = total, file, 0, 0
        self.artifact_id = None

    async def start(self) -> None:
        if self.total:
            self.artifact_id = await acreate_progress_artifact(
                0.0, key=f"members-{self.file.file_id[:32]}",
                description=f"members of {self.file.name} processed ({self.total})",
            )

    async def advance(self) -> None:
        self.done += 1
        percent = int(100 * self.done / self.total)
        if self.artifact_id is not None and (percent > self.shown or self.done == self.total):
            self.shown = percent
            await aupdate_progress_artifact(self.artifact_id, float(percent))
