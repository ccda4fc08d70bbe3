"""``fileflow process``: a batch of local files through the pipeline on this machine.

Each file is copied into storage under its content hash (the upload), then goes through the
router flow; at most ``max_active_files`` at once, since Prefect's embedded SQLite database
fails with "database is locked" when too many runs write at the same time. Every run of the
batch is tagged ``batch:<id>``, so the UI (and ``fileflow status``) can filter on one batch.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from blocks.storage import StorageConfig, Store, original_key
from converters.inspect import sha256_of
from fileflow.engine import uploads
from fileflow.engine.mediator import FileRef, Runtime, display_name, runtime
from fileflow.engine.session import prefect_session
from fileflow.engine.progress import Tracker
from fileflow.settings import PipelineSettings


def new_batch_id() -> str:
    """``<UTC time>-<random>``, e.g. ``20261126T105900-3f2a9c``: sortable and unique."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def collect(paths: list[Path]) -> list[Path]:
    """Regular files named or found (recursively) in folders, in a stable order, each once."""
    found: dict[Path, None] = {}
    for path in paths:
        candidates = sorted(p for p in path.rglob("*")) if path.is_dir() else [path]
        for candidate in candidates:
            if candidate.is_file() and not candidate.is_symlink():
                found.setdefault(candidate.resolve(), None)
    return list(found)


def ingest(path: Path, store: Store) -> tuple[str, int]:
    """The upload: the file's bytes into storage under their SHA-256; (digest, size)."""
    digest = sha256_of(path)
    key = original_key(digest)
    if not store.exists(key):
        store.put_file(path, key)
    return digest, path.stat().st_size


def _render(tracker: Tracker, started: float) -> Group:
    snap = tracker.snapshot()
    failures = ", ".join(f"{k}: {v}" for k, v in sorted(snap["failures"].items()))
    head = Text.assemble(
        ("files ", "bold"),
        f"{snap['done']}/{snap['total']} done  ",
        (f"{snap['completed']} completed  ", "green"),
        (f"{snap['failed']} failed", "red" if snap["failed"] else "dim"),
        (f" ({failures})" if failures else "", "red"),
        f"  {time.monotonic() - started:.0f} s",
    )
    bar = ProgressBar(total=max(snap["total"], 1), completed=snap["done"], width=60)
    table = Table("file", "stage", "s", box=None, show_header=bool(snap["in_flight"]), pad_edge=False)
    for label, stage, elapsed in sorted(snap["in_flight"], key=lambda x: -x[2])[:12]:
        table.add_row(Text(label, overflow="ellipsis", no_wrap=True), stage, f"{elapsed:.0f}")
    return Group(head, bar, table)


async def _one(path: Path, rt: Runtime, gate: asyncio.Semaphore, batch_id: str, name: str,
               options: dict[str, Any]) -> None:
    from prefect import tags

    from flows.router import process_to_terminal

    async with gate:
        digest, size = await asyncio.to_thread(ingest, path, rt.store)
        file = FileRef(file_id=digest, name=display_name(name), key=original_key(digest), size=size,
                       upload_id=uploads.new_upload_id(), batch=batch_id, options=options)
        with tags(f"batch:{batch_id}"):
            await process_to_terminal(file, name, delay_s=rt.pipeline.retry_delay_s)


async def run_batch(
    files: list[Path],
    pipeline: PipelineSettings,
    storage: StorageConfig,
    *,
    console: Console | None = None,
    out: Path | None = None,
    batch_id: str | None = None,
    names: Mapping[Path, str] | None = None,
    options: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Process ``files``; the manifests of every file and archive member, in completion order.

    Runs are tagged ``batch:<batch_id>`` (a new id when none is given). ``names`` gives the
    upload's own name for a file whose name on disk differs (an upload service receives names
    no file system would hold: ``../x``, more than 255 bytes). Each file is an upload of its own
    (a record under ``uploads/``); ``options`` are the uploads' own options
    (:func:`fileflow.engine.uploads.check_options`)."""
    options = uploads.check_options(options)
    batch_id = batch_id or new_batch_id()
    tracker = Tracker(keep_manifests=True)
    tracker.expect(len(files))
    started = time.monotonic()
    with runtime(Runtime(pipeline, storage, tracker)) as rt:
        gate = asyncio.Semaphore(pipeline.max_active_files)
        names = names or {}
        async with prefect_session(rt):
            work = asyncio.gather(*(_one(path, rt, gate, batch_id, names.get(path, path.name), options) for path in files))
            if console is None:
                await work
            else:
                with Live(_render(tracker, started), console=console, refresh_per_second=4, transient=False) as live:
                    while not work.done():
                        await asyncio.wait({work}, timeout=0.25)
                        live.update(_render(tracker, started))
                    await work
    if out is not None and storage.kind != "local":
        folder = out / "manifests"
        folder.mkdir(parents=True, exist_ok=True)
        for manifest in tracker.manifests:
            (folder / f"{manifest['file_id']}.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    return tracker.manifests


def print_summary(manifests: list[dict[str, Any]], *, console: Console, out: Path) -> None:
    table = Table(title=f"fileflow: {len(manifests)} files", show_lines=False)
    for column in ("file", "kind", "status", "steps", "renditions", "language", "error"):
        table.add_column(column, overflow="fold")
    for m in sorted(manifests, key=lambda m: m["name"]):
        error = next((s["error"] for s in m["steps"] if s.get("error")), None)
        done = sum(s["status"] == "completed" for s in m["steps"])
        table.add_row(
            m["name"],
            m["kind"],
            Text(m["status"], style="green" if m["status"] == "completed" else "red"),
            f"{done}/{len(m['steps'])}",
            str(len(m["renditions"])),
            m["language"] or "-",
            f"{error['type']}: {error['message']}" if error else "",
        )
    console.print(table)
    failed = sum(m["status"] != "completed" for m in manifests)
    console.print(
        f"{len(manifests) - failed} completed, {failed} failed; manifests in {out.resolve() / 'manifests'}"
    )
