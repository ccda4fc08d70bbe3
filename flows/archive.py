"""Archives (ZIP, 7z, RAR, tar, tar.gz/.bz2/.xz, .gz): guarded expansion; the router then
processes every member as a file of its own. ZIP has its own reader (``archive_expand``); every
other format goes through libarchive (``archive_libarchive``), with the same guards and limits.

The members a step finds (``members`` of its result) are collected by the mediation; each goes
through the router as a run of its own, linked to this archive as its parent (see
:func:`flows.router.process_members`).
"""

from __future__ import annotations

from fileflow.engine.mediator import Mediation


async def steps(m: Mediation) -> None:
    await m.step("archive_expand" if m.file.ext == "zip" else "archive_libarchive")
