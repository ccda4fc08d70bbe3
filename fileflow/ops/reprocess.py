"""Reprocessing: files already in storage through the pipeline again, redoing only what needs it.

A :class:`Selection` picks files from their manifests in storage (kind, MIME type, when the
manifest was written, a converter's recorded version, failure type, status, an explicit list);
for each file it names the steps to redo:

- a step whose recorded converter version is not the registered one (outdated), and the steps
  that take its output as input (:data:`CONSUMERS`: their cache keys derive from its key);
- a failed step, and the steps skipped because of it;
- a step named in ``redo`` and the steps that read its output (their cached results are
  ignored: ``refresh_cache``, since a forced step keeps its cache key).

Every other step is found in the step cache (the key holds the converter's version), so running
the file's router again executes exactly those steps. A file with nothing to redo is left alone.

A job persists its plan (``reprocess/<job>/plan.json``) and one marker per finished file
(``reprocess/<job>/done/<file_id>.json``): run again with the same job id (the same flow run
retried, or ``fileflow reprocess --job``), it carries on where it stopped. It runs in the
``reprocess`` lane: at most ``fileflow-reprocess`` files at once and ``fileflow-reprocess-rate``
files per second (global concurrency limits), paused with the ``reprocess`` work queues, pool
steps on the low-priority ``reprocess`` queue of each pool, local steps in children at nice 10
(:mod:`fileflow.ops.limits`), so uploads go first.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

import converters
from blocks.storage import StorageConfig, Store, manifest_key, original_key
from fileflow.errors import ERRORS, InvalidRequest
from fileflow.engine.manifest import Kind
from fileflow.settings import PipelineSettings

log = logging.getLogger("fileflow.ops.reprocess")

CONSUMERS: dict[str, tuple[str, ...]] = {
    "office_pdf": ("pdf_preview", "pdf_text", "language"),  # its PDF; a spreadsheet's cells' text
    "ocr": ("language",),  # language reads the text a step made
    "pdf_text": ("language",),
    "text_extract": ("language",),
    "drawing_render": ("language",),
    "email_parse": ("office_pdf", "language"),  # the sanitised message printed; its body text
    "markup_text": ("office_pdf", "language"),
    "svg_render": ("language",),
}
"""Steps whose input is another step's output (see flows/): redoing the producer redoes them.
Manifests record each step's ``input`` since one run per file; this table serves the manifests
written before, and tests/test_pipeline.py holds it to every input the flows record."""


class Selection(BaseModel):
    """Which files to reprocess and what to redo; every filter given must match (AND)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kinds: list[Kind] = Field(default_factory=list, description="file kinds, e.g. image, pdf")
    mime: list[str] = Field(default_factory=list, description="MIME types, wildcards allowed: image/*")
    since: datetime | None = Field(None, description="manifest written at or after (UTC if no zone)")
    until: datetime | None = Field(None, description="manifest written before (UTC if no zone)")
    converter: str | None = Field(None, description="files that ran this converter ...")
    older_than: str | None = Field(None, description="... at a version older than this one")
    errors: list[str] = Field(default_factory=list, description="a step failed with one of these error types")
    status: list[Literal["completed", "failed"]] = Field(default_factory=list, description="file status")
    files: list[str] = Field(default_factory=list, description="file ids (or unique prefixes of 8+) or names")
    redo: list[str] = Field(default_factory=list, description="converters to run again even if up to date")

    @model_validator(mode="after")
    def _check(self) -> "Selection":
        from packaging.version import InvalidVersion, Version

        known = set(converters.BUILTINS)
        for name in [*self.redo, *([self.converter] if self.converter else [])]:
            if name not in known:
                raise InvalidRequest(f"unknown converter {name!r}; known: {', '.join(converters.BUILTINS)}")
        if self.older_than is not None:
            if self.converter is None:
                raise InvalidRequest("--older-than needs --converter: whose version is it?")
            try:
                Version(self.older_than)
            except InvalidVersion:
                raise InvalidRequest(f"{self.older_than!r} is not a version (e.g. 1.2.0)") from None
        for name in self.errors:
            if name not in ERRORS:
                raise InvalidRequest(f"unknown error type {name!r}; known: {', '.join(ERRORS)}")
        since, until = _utc(self.since), _utc(self.until)
        if since and until and since >= until:
            raise InvalidRequest(f"--since {since:%Y-%m-%d %H:%M} is not before --until {until:%Y-%m-%d %H:%M}")
        for f in self.files:
            if not f.strip():
                raise InvalidRequest("an empty file id or name in the explicit list")
        return self


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=timezone.utc)


class Item(BaseModel):
    """One file to reprocess and the steps it will redo."""

    file_id: str
    name: str
    size: int
    kind: str
    parent: str | None = None
    depth: int = 0
    steps: list[str]
    via_parent: bool = Field(False, description="an archive member its selected archive processes again")


class Plan(BaseModel):
    scanned: int = Field(description="manifests read")
    matched: int = Field(description="files that pass the filters")
    items: list[Item] = Field(description="files with at least one step to redo")

    @property
    def files(self) -> int:
        return len(self.items)

    @property
    def steps(self) -> int:
        return sum(len(i.steps) for i in self.items)

    def by_converter(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in self.items:
            for step in item.steps:
                counts[step] = counts.get(step, 0) + 1
        return dict(sorted(counts.items()))


# ---------------------------------------------------------------------------------------
# Selecting
# ---------------------------------------------------------------------------------------


def _older(recorded: str | None, than: str) -> bool:
    from packaging.version import InvalidVersion, Version

    if recorded is None:
        return False
    try:
        return Version(recorded) < Version(than)
    except InvalidVersion:
        return True  # a version we cannot read is not known to be recent enough


def with_consumers(names: set[str] | list[str], manifest: dict[str, Any] | None = None) -> set[str]:
    """``names`` and every step that reads their output, directly or not: by the inputs the
    manifest records, and by :data:`CONSUMERS`."""
    graph = {k: set(v) for k, v in CONSUMERS.items()}
    for step in (manifest or {}).get("steps", ()):
        if step.get("input"):
            graph.setdefault(step["input"], set()).add(step["name"])
    found = set(names)
    todo = list(found)
    while todo:
        for consumer in graph.get(todo.pop(), ()):
            if consumer not in found:
                found.add(consumer)
                todo.append(consumer)
    return found


def steps_to_redo(manifest: dict[str, Any], redo: set[str], current: dict[str, str]) -> list[str]:
    """The steps of ``manifest`` that reprocessing executes, in the manifest's order."""
    steps = manifest["steps"]
    chosen: set[str] = set()
    for step in steps:
        name = step["name"]
        if step["status"] == "failed" or name in redo:
            chosen.add(name)
        elif step["status"] == "completed" and name in current and step["converter_version"] != current[name]:
            chosen.add(name)
    if any(s["status"] == "failed" and s["name"] in chosen for s in steps):
        chosen |= {s["name"] for s in steps if s["status"] == "skipped"}  # they wait for the failed one
    chosen = with_consumers(chosen, manifest)
    return [s["name"] for s in steps if s["name"] in chosen]


def _matches(sel: Selection, manifest: dict[str, Any], modified: datetime) -> bool:
    if sel.kinds and manifest["kind"] not in sel.kinds:
        return False
    if sel.mime and not any(fnmatch.fnmatchcase(manifest.get("mime") or "", p) for p in sel.mime):
        return False
    if sel.since and modified < _utc(sel.since):
        return False
    if sel.until and modified >= _utc(sel.until):
        return False
    if sel.status and manifest["status"] not in sel.status:
        return False
    if sel.errors and not any((s.get("error") or {}).get("type") in sel.errors for s in manifest["steps"]):
        return False
    if sel.converter:
        ran = [s for s in manifest["steps"] if s["name"] == sel.converter and s["status"] != "skipped"]
        if not ran or (sel.older_than and not any(_older(s["converter_version"], sel.older_than) for s in ran)):
            return False
    if sel.files:
        fid, name = manifest["file_id"], manifest["name"]
        if not any(fid == f or (len(f) >= 8 and fid.startswith(f)) or name == f for f in sel.files):
            return False
    return True


def select(store: Store, sel: Selection) -> Plan:
    """Read every manifest in ``store`` and plan the reprocessing ``sel`` asks for."""
    current = {name: spec.version for name, spec in converters.all_specs().items()}
    redo = set(sel.redo)  # --converter/--older-than only select: an up-to-date step is redone only with --redo
    manifests: dict[str, dict[str, Any]] = {}
    chosen: list[str] = []
    scanned = matched = 0
    for key, mtime in store.list("manifests"):
        if not key.endswith(".json"):
            continue
        manifest = json.loads(store.get_bytes(key))
        scanned += 1
        manifests[manifest["file_id"]] = manifest
        if _matches(sel, manifest, datetime.fromtimestamp(mtime, timezone.utc)):
            matched += 1
            chosen.append(manifest["file_id"])
    items = []
    selected = set()
    for fid in chosen:
        steps = steps_to_redo(manifests[fid], redo, current)
        if steps:
            selected.add(fid)
            items.append((fid, steps))
    plan_items = []
    for fid, steps in items:
        m = manifests[fid]
        ancestors = _ancestors(fid, manifests, store)
        plan_items.append(Item(
            file_id=fid, name=m["name"], size=m["size"], kind=m["kind"], parent=m.get("parent"),
            depth=len(ancestors), steps=steps, via_parent=any(a in selected for a in ancestors),
        ))
    return Plan(scanned=scanned, matched=matched, items=plan_items)


def _ancestors(fid: str, manifests: dict[str, dict[str, Any]], store: Store) -> list[str]:
    """The archives a member came from, nearest first (the member's depth is their number)."""
    found: list[str] = []
    parent = manifests[fid].get("parent")
    while parent and parent not in found:
        found.append(parent)
        if parent not in manifests:
            if not store.exists(manifest_key(parent)):
                break
            manifests[parent] = json.loads(store.get_bytes(manifest_key(parent)))
        parent = manifests[parent].get("parent")
    return found


# ---------------------------------------------------------------------------------------
# Running a job
# ---------------------------------------------------------------------------------------


class Report(BaseModel):
    job: str
    dry_run: bool
    files: int = Field(description="files the plan touches")
    steps: int = Field(description="steps the plan redoes")
    by_converter: dict[str, int]
    scanned: int
    matched: int
    already_done: int = Field(0, description="files finished by an earlier run of the same job")
    processed: int = Field(0, description="files processed by this run")
    completed: int = 0
    failed: int = 0


def plan_key(job: str) -> str:
    return f"reprocess/{job}/plan.json"


def done_prefix(job: str) -> str:
    return f"reprocess/{job}/done"


def check_job(job: str) -> str:
    if not job or len(job) > 64 or not all(c.isalnum() or c in "-_" for c in job):
        raise InvalidRequest(f"job id {job!r}: use 1-64 letters, digits, '-' or '_'")
    return job


def load_or_plan(store: Store, sel: Selection, job: str, *, save: bool) -> tuple[Plan, bool]:
    """The job's persisted plan if it has one (and whether it did), else a new one (saved if ``save``)."""
    if store.exists(plan_key(job)):
        record = json.loads(store.get_bytes(plan_key(job)))
        if record["selection"] != json.loads(sel.model_dump_json()):
            raise InvalidRequest(f"job {job} was planned with another selection: {record['selection']}")
        return Plan.model_validate(record["plan"]), True
    plan = select(store, sel)
    if save:
        record = {"selection": json.loads(sel.model_dump_json()), "plan": plan.model_dump(mode="json")}
        store.put_bytes(json.dumps(record).encode(), plan_key(job))
    return plan, False


async def run_job(
    sel: Selection,
    job: str,
    *,
    storage: StorageConfig,
    pipeline: PipelineSettings,
    workers: int = 2,
    dry_run: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Plan (or load the plan of) ``job`` and process its files that are not done yet."""
    from fileflow.engine.mediator import Runtime, runtime

    check_job(job)
    # a step redone by force keeps its cache key, so what reads its output must be forced too
    refresh = frozenset(with_consumers(sel.redo))
    rt = Runtime(pipeline, storage, lane="reprocess", refresh=refresh, run_scope=f"reprocess-{job}")
    with runtime(rt):
        plan, _ = await asyncio.to_thread(load_or_plan, rt.store, sel, job, save=not dry_run)
        report = Report(job=job, dry_run=dry_run, files=plan.files, steps=plan.steps,
                        by_converter=plan.by_converter(), scanned=plan.scanned, matched=plan.matched)
        if dry_run:
            await _summary_artifact(report)
            return report
        done = {k.rsplit("/", 1)[-1].removesuffix(".json")
                for k, _ in await asyncio.to_thread(lambda: list(rt.store.list(done_prefix(job))))}
        todo = [i for i in plan.items if not i.via_parent and i.file_id not in done]
        total = len([i for i in plan.items if not i.via_parent])
        report.already_done = total - len(todo)
        progress = _Progress(job, total, report.already_done, on_progress)
        await progress.start()
        queue: asyncio.Queue[Item] = asyncio.Queue()
        for item in todo:
            queue.put_nowait(item)

        async def worker() -> None:
            while not queue.empty():
                item = queue.get_nowait()
                status = await _one(rt, item, job)
                report.processed += 1
                report.completed += status == "completed"
                report.failed += status != "completed"
                await progress.advance()

        await asyncio.gather(*(worker() for _ in range(max(1, workers))))
        await _summary_artifact(report)
        return report


async def _one(rt, item: Item, job: str) -> str:
    from flows.router import process_file

    await rt.steering.reprocess_rate()
    async with rt.steering.file_slot("reprocess"):
        state = await process_file(
            key=original_key(item.file_id), file_id=item.file_id, name=item.name, size=item.size,
            parent=item.parent, depth=item.depth, return_state=True,
            upload_id=None,  # content processed again, not an upload: no record, no claim to find taken
        )
    status = "completed" if state.is_completed() else "failed"
    marker = {"file_id": item.file_id, "status": status, "steps": item.steps, "at": time.time()}
    await asyncio.to_thread(rt.store.put_bytes, json.dumps(marker).encode(), f"{done_prefix(job)}/{item.file_id}.json")
    return status


class _Progress:
    """A progress artifact on the flow run (when there is one) and a callback for the terminal."""

    def __init__(self, job: str, total: int, done: int, callback) -> None:
        self.job, self.total, self.done, self.callback = job, total, done, callback
        self.artifact_id = None

    def _percent(self) -> float:
        return 100.0 if not self.total else round(100.0 * self.done / self.total, 1)

    async def start(self) -> None:
        from prefect.artifacts import acreate_progress_artifact
        from prefect.context import FlowRunContext

        if FlowRunContext.get() is not None:
            self.artifact_id = await acreate_progress_artifact(
                progress=self._percent(), key=_artifact_key("reprocess-progress", self.job),
                description=f"reprocessing job {self.job}: files done of {self.total}",
            )
        if self.callback:
            self.callback(self.done, self.total)

    async def advance(self) -> None:
        from prefect.artifacts import aupdate_progress_artifact

        self.done += 1
        if self.artifact_id is not None:
            await aupdate_progress_artifact(self.artifact_id, progress=self._percent())
        if self.callback:
            self.callback(self.done, self.total)


def _artifact_key(prefix: str, job: str) -> str:
    return f"{prefix}-" + "".join(c if c.isalnum() else "-" for c in job.lower())[:48]


async def _summary_artifact(report: Report) -> None:
    from prefect.artifacts import acreate_markdown_artifact
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return
    lines = [
        f"# reprocessing {report.job}{' (dry run)' if report.dry_run else ''}",
        "",
        f"{report.scanned} manifests read, {report.matched} files matched, **{report.files} files and "
        f"{report.steps} steps to redo**.",
    ]
    if not report.dry_run:
        lines.append(f"Done by earlier runs: {report.already_done}; this run: {report.processed} "
                     f"({report.completed} completed, {report.failed} failed).")
    lines += ["", "| converter | steps |", "|---|---|"]
    lines += [f"| {name} | {count} |" for name, count in report.by_converter.items()]
    await acreate_markdown_artifact(key=_artifact_key("reprocess", report.job), markdown="\n".join(lines),
                                    description=f"reprocessing job {report.job}")


# ---------------------------------------------------------------------------------------
# ``fileflow reprocess``
# ---------------------------------------------------------------------------------------

DEPLOYMENT = "reprocess/reprocess"


def with_prefix(config: StorageConfig, prefix: str | None) -> StorageConfig:
    """The storage under ``prefix``: an S3 key prefix inside the configured one, or a sub-folder."""
    from dataclasses import replace
    from pathlib import Path

    from blocks.storage import check_key

    if not prefix:
        return config
    try:
        prefix = check_key(prefix.strip("/"))
    except ValueError:
        raise InvalidRequest(f"storage prefix {prefix!r}: no '..', no leading '/', no empty parts") from None
    if config.kind == "local":
        return replace(config, basepath=str(Path(config.basepath) / prefix))
    return replace(config, prefix="/".join(p for p in (config.prefix.strip("/"), prefix) if p))


def make_selection(fields: dict[str, Any], files_from=None) -> Selection:
    from pydantic import ValidationError

    fields = dict(fields)
    if files_from is not None:
        try:
            listed = [line.strip() for line in files_from.read_text().splitlines()]
        except OSError as exc:
            raise InvalidRequest(f"cannot read {files_from}: {exc}") from None
        fields["files"] = [*fields.get("files", []), *(f for f in listed if f and not f.startswith("#"))]
        if not fields["files"]:
            raise InvalidRequest(f"{files_from} lists no file")
    try:
        return Selection(**fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidRequest(f"invalid selection: {problems}") from None


def command(fields: dict[str, Any], *, files_from, prefix, job, workers, dry_run, submit, out, home, console,
            stdout) -> int:
    """What ``fileflow reprocess`` does; its exit code."""
    import os

    from rich.table import Table

    from fileflow.settings import StorageSettings

    sel = make_selection(fields, files_from)
    if workers < 1:
        raise InvalidRequest("--workers must be at least 1")
    if job is not None:
        check_job(job)
    if submit:
        return _submit(sel, job, workers, dry_run, prefix, home, console)
    storage = with_prefix(StorageSettings().config(out=out), prefix)
    job = job or ("dry-run" if dry_run else time.strftime("local-%Y%m%d-%H%M%S"))
    if not dry_run:
        console.print(f"job [bold]{job}[/bold] (run again with --job {job} to resume it)")

    def show(done: int, total: int) -> None:
        console.print(f"{done}/{total} files reprocessed")

    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    report = asyncio.run(run_job(sel, job, storage=storage, pipeline=PipelineSettings(), workers=workers,
                                 dry_run=dry_run, on_progress=show))
    table = Table("converter", "steps to redo", title=f"{report.files} files, {report.steps} steps to redo "
                  f"({report.matched} of {report.scanned} files matched)")
    for name, count in report.by_converter.items():
        table.add_row(name, str(count))
    stdout.print(table)
    if not dry_run:
        stdout.print(f"job {job}: {report.already_done} done before, {report.processed} now "
                     f"({report.completed} completed, {report.failed} failed)")
    return 0 if report.failed == 0 else 1


def _submit(sel: Selection, job, workers, dry_run, prefix, home, console) -> int:
    import os

    from prefect.deployments import run_deployment

    from fileflow.home import use_stack
    from fileflow.names import REPROCESS_QUEUE

    use_stack(home, storage=False)
    if not os.environ.get("PREFECT_API_URL"):
        raise InvalidRequest("--submit needs a Prefect server: run `fileflow up` or set PREFECT_API_URL")
    run = run_deployment(
        DEPLOYMENT,
        parameters={"selection": json.loads(sel.model_dump_json()), "job": job, "workers": workers,
                    "dry_run": dry_run, "storage_prefix": prefix},
        work_queue_name=REPROCESS_QUEUE,
        timeout=0,
        tags=["fileflow", "reprocess"],
    )
    console.print(f"started {DEPLOYMENT} as run {run.name} ({run.id}); its progress artifact is on the run's page")
    return 0
