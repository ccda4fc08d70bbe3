"""The router: one flow run per file, which inspects it and runs the steps of its kind.

This is the entry point of the pipeline (the ``process-file`` deployment): one run per file,
named ``file:<name>`` and tagged ``kind:<kind>`` once its kind is known. The steps of each kind
are the plain functions of ``flows/<kind>.py`` (no flow run of their own: every run costs the
Prefect server state writes and events), each step a task run of this run. Files found inside
this one (archive members) are files of their own: each gets a run of its own, linked to this
one as its parent. A file of a kind nobody handles, or one that cannot even be inspected, ends
``failed`` with its reason in the manifest; it is never skipped silently.
"""

from __future__ import annotations

import asyncio
from pathlib import PurePosixPath
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable

from prefect import flow
from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact
from prefect.client.orchestration import PrefectClient, get_client
from prefect.context import FlowRunContext, TagsContext
from prefect.states import Completed, Failed

from fileflow import retry
from fileflow.engine import uploads
from fileflow.errors import ToolCrashed, UnsupportedInput
from fileflow.engine.mediator import FileRef, Mediation, current, display_name
from fileflow.names import ROUTER_FLOW
from fileflow.settings import LivenessSettings
from flows import archive, audio, drawing, image, mail, markup, office, pdf, text, video
from flows._common import file_tags, outcome

#: the steps of each kind, by the kind ``inspect`` gives
KINDS: dict[str, Callable[[Mediation], Awaitable[None]]] = {
    "image": image.steps,
    "pdf": pdf.steps,
    "office": office.steps,
    "drawing": drawing.steps,
    "video": video.steps,
    "archive": archive.steps,
    "text": text.steps,
    "email": mail.steps,  # flows/mail.py: a module named email would shadow Python's email package
    "audio": audio.steps,
    "markup": markup.steps,
}


@flow(name=ROUTER_FLOW, flow_run_name="file:{name}", persist_result=False)
async def process_file(
    key: str, file_id: str, name: str, size: int, parent: str | None = None, depth: int = 0,
    upload_id: str | None = "", parent_upload: str | None = None, batch: str | None = None,
    callback_url: str | None = None, options: dict[str, Any] | None = None,
):
    """One upload of a file through its steps.

    ``upload_id``: the upload (:mod:`fileflow.engine.uploads`); empty (an event or a REST call
    that names none): the id of the same bytes under the same name, so the same upload
    notified twice is processed by one run; None: content processed outside an upload
    (``fileflow reprocess``: no upload record). ``options``: the upload's own options
    (``ocr_languages``, ``preview_sizes``), for the steps that read them.
    """
    file, bad_options = _file_of(key, file_id, name, size, parent, depth, upload_id, parent_upload, batch,
                                 callback_url, options)
    m = Mediation(file)
    if upload_id is not None:
        owner = await _claim_upload(m)
        if owner is not None:  # this upload is another run's: notified twice, processed once
            return Completed(message=f"{file.name}: upload {upload_id} is processed by run {owner}; nothing to do")
    if bad_options is not None:  # the upload's record says why; the content's manifest is not this upload's to fail
        return await _refuse_upload(m, f"bad upload parameters: {bad_options}")
    m.rt.tracker.started(file.token, file.name)
    crashes = await _mediator_crashes()
    if crashes > LivenessSettings().mediator_resumes:  # it kills its mediator every time: stop here
        m.fail("router", ToolCrashed(f"the file's mediator crashed {crashes} times while processing it; "
                                     "it is not resumed again (FILEFLOW_LIVENESS_MEDIATOR_RESUMES)"))
        return outcome(await m.finish())
    try:
        return await _route_through_api_failures(m, file)
    except Exception as exc:
        if m.rt.tracker.has_finished(file.token):
            raise
        # the run broke before the file had its manifest (a step's own errors are recorded by the
        # step; this is the run's machinery failing, or the API for longer than its retries): the
        # file ends failed saying why, never without a manifest, and the run ends Failed with it
        broken = Mediation(file)
        broken.fail("router", RuntimeError(f"the file's run broke: {type(exc).__name__}: {exc}"))
        await broken.finish()
        raise


def _file_of(
    key: str, file_id: str, name: str, size: int, parent: str | None = None, depth: int = 0,
    upload_id: str | None = "", parent_upload: str | None = None, batch: str | None = None,
    callback_url: str | None = None, options: dict[str, Any] | None = None,
) -> tuple[FileRef, ValueError | None]:
    """The file a router run's parameters name, and what is wrong with its upload's parameters."""
    if upload_id == "":
        upload_id = uploads.upload_id_for(file_id, display_name(name))
    try:
        options, bad_options = uploads.check_options(options), None
    except ValueError as exc:  # a caller's mistake (REST, event, S3 metadata): the upload fails saying so
        options, bad_options = {}, exc
    try:
        callback_url = uploads.check_callback_url(callback_url)
    except ValueError as exc:  # never delivered to: the upload fails, told through the webhook and event
        callback_url, bad_options = None, bad_options or exc
    file = FileRef(file_id=file_id, name=display_name(name), key=key, size=size, parent=parent, depth=depth,
                   upload_id=upload_id, parent_upload=parent_upload, batch=batch or _batch_tag(),
                   callback_url=callback_url or None, options=options)
    return file, bad_options


async def fail_unstartable(parameters: dict[str, Any], run_id: str, reason: str) -> bool:
    """End the file of a router run that cannot even start (it crashed before the router's code
    ran, more often than it is resumed) as the router ends a file whose mediator keeps crashing:
    a failed manifest (step ``router``, ``ToolCrashed``), its upload ``failed`` and its sender
    told. Called by the resumer, outside any flow run. False, and nothing written, when the
    run's upload has already ended (another run of the same upload finished it)."""
    file, _ = _file_of(**parameters)
    m = Mediation(file)
    if file.upload_id and await asyncio.to_thread(_upload_ended, m.rt.store, file.upload_id):
        return False
    m.fail("router", ToolCrashed(reason))
    await m.finish(run_id=run_id)
    return True


async def _claim_upload(m: Mediation) -> str | None:
    """Make this run the upload's run and record it ``processing``; None, or the id of the
    run that already owns the upload (then this run does nothing). A former run that ended
    without processing it (failed, crashed, cancelled, gone) is taken over."""
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return None
    run_id, store, upload_id = str(ctx.flow_run.id), m.rt.store, m.file.upload_id
    owner = await asyncio.to_thread(uploads.claim, store, upload_id, run_id)
    if owner is not None:
        if await _still_owns(owner):
            return owner
        await asyncio.to_thread(uploads.take_over, store, upload_id, run_id)
    record = await asyncio.to_thread(m.upload_record)
    record = record.model_copy(update={"status": "processing", "flow_run_id": run_id, "finished_at": None})
    await asyncio.to_thread(uploads.write, store, record)
    return None


async def _refuse_upload(m: Mediation, reason: str):
    """End an upload that cannot be processed as asked: its record ``failed`` (step ``options``),
    and its sender told so like for any other end (event, webhook, the upload's callback). The
    content's manifest is not written: it is not this upload's to fail."""
    if m.file.upload_id is None:
        raise ValueError(reason)
    record = await asyncio.to_thread(m.upload_record)
    at = uploads.now()
    error = {"type": "UnsupportedInput", "message": reason}
    record = record.model_copy(update={"status": "failed", "finished_at": at, "error": {**error, "step": "options"}})
    await asyncio.to_thread(uploads.write, m.rt.store, record)
    answer = {"file_id": m.file.file_id, "name": m.file.name, "size": m.file.size, "kind": m.file.kind or "unknown",
              "status": "failed", "parent": m.file.parent,
              "steps": [{"name": "options", "status": "failed", "error": error}]}
    ctx = FlowRunContext.get()
    run_id = str(ctx.flow_run.id) if ctx is not None and ctx.flow_run is not None else None
    await asyncio.to_thread(uploads.announce, m.rt.store, m.rt.notify, record, answer, run_id)
    return Failed(message=f"{m.file.name}: UnsupportedInput: {reason}")


async def _still_owns(run_id: str) -> bool:
    """Whether the router run ``run_id`` is processing (or has processed) its upload."""
    from uuid import UUID

    from prefect.exceptions import ObjectNotFound

    try:
        async with _api() as client:
            run = await client.read_flow_run(UUID(run_id))
    except (ObjectNotFound, ValueError):
        return False
    return not (run.state and (run.state.is_failed() or run.state.is_crashed() or run.state.is_cancelled()))


async def _owner_at_work(store: Any, upload_id: str, mine: set[str]) -> bool:
    """Whether the run that claimed the upload is another than ``mine`` and still in a state
    that is not final. (One of ``mine`` left claiming it, its final state unwritten because the
    API failed it, would otherwise be waited for in vain.)"""
    from uuid import UUID

    from prefect.exceptions import ObjectNotFound

    run_id = await asyncio.to_thread(uploads.owner, store, upload_id)
    if run_id is None or run_id in mine:
        return False
    try:
        async with _api() as client:
            run = await client.read_flow_run(UUID(run_id))
    except (ObjectNotFound, ValueError):
        return False
    return run.state is not None and not run.state.is_final()


def _batch_tag() -> str | None:
    """The ``batch:<id>`` tag of this run (``fileflow process``, ``submit``), if any."""
    ctx = FlowRunContext.get()
    tags = set(TagsContext.get().current_tags) | set(ctx.flow_run.tags or [] if ctx and ctx.flow_run else [])
    return next((t.removeprefix("batch:") for t in sorted(tags) if t.startswith("batch:")), None)


async def _admit_and_route(m: Mediation, file: FileRef):
    if file.parent is None and m.rt.lane == "upload":  # the operators' cap on active uploads (fileflow/engine/steering.py)
        async with m.rt.steering.file_slot("upload"):
            return await _route(m, file)
    return await _route(m, file)


async def _mediator_crashes() -> int:
    """How often this router run was started before: each time its mediator died and the
    resume automation (deployments/liveness.py) scheduled it again. 0 outside a deployment.

    The engine reads the run again once it is Running (the state in which the server counts a
    start), so the run context's copy already holds this start: no API call needed."""
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None or ctx.flow_run.deployment_id is None:
        return 0
    return max(ctx.flow_run.run_count - 1, 0)


#: waits before routing a file again after the Prefect API failed under it (a server restart)
API_RETRY_DELAYS_S = (10.0, 30.0, 90.0)


def _api_failure(exc: BaseException | None) -> bool:
    """Whether ``exc`` is the Prefect API failing (refused, dropped, 5xx), here or in what it wraps."""
    import httpx

    for _ in range(5):
        if exc is None:
            return False
        if isinstance(exc, httpx.HTTPError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


async def _route_through_api_failures(m: Mediation, file: FileRef):
    """Route the file; if the Prefect API breaks the run before the file has its manifest, route
    it again after a pause (finished steps come back from the cache, a pool step re-attaches to
    its run through its idempotency key).

    Prefect's client retries most calls while the server restarts, but not all: a client
    created afresh, such as the one that takes concurrency slots (a task's tag limits, the
    active-files cap), fails at once on a refused connection, and the exception escapes the
    task's own retries. Failures of the file itself (a converter's typed error, a storage
    error) are not retried here.
    """
    tracker = m.rt.tracker

    async def route(attempt: int):
        return await _admit_and_route(m if attempt == 1 else Mediation(file), file)

    return await route_again_on_api_failures(route, lambda: tracker.has_finished(file.token), file.name)


async def route_again_on_api_failures(route: Callable[[int], Awaitable], finished: Callable[[], bool], name: str,
                                      waits_s: tuple[float, ...] = API_RETRY_DELAYS_S):
    """``route(attempt)`` (attempt 1, 2 ...), again after each of ``waits_s`` while the Prefect API
    broke it (an exception, or a failed state, while ``finished()`` says the file has no manifest
    yet); when the waits are spent, the last try's outcome: its state, or its exception raised."""
    from fileflow.engine.mediator import _exception_of

    attempts = 0

    async def attempt():
        nonlocal attempts
        attempts += 1
        state = await route(attempts)
        if not finished() and state.is_failed():
            reason = await _exception_of(state)
            if _api_failure(reason):
                raise _BrokenByTheApi(state) from reason
        return state

    def waiting(exc: BaseException | None, _result: object, seconds: float) -> None:
        reason = exc.__cause__ if isinstance(exc, _BrokenByTheApi) else exc
        _logger().warning("the Prefect API failed under %r (%s: %s); routing it again in %g s",
                          name, type(reason).__name__, reason, seconds)

    try:
        return await retry.acall(
            attempt, retry=retry.retry_if_exception(lambda e: isinstance(e, _BrokenByTheApi) or _api_failure(e)),
            wait=retry.in_turn(waits_s), stop=retry.stop_after_attempt(len(waits_s) + 1), on_wait=waiting,
        )
    except _BrokenByTheApi as broken:  # the last try ended so too: its state is the outcome
        return broken.state


class _BrokenByTheApi(Exception):
    """A router run that ended failed because the Prefect API failed under it (the reason is
    its ``__cause__``), without the file's manifest: worth routing again."""

    def __init__(self, state) -> None:
        super().__init__(state.message or state.name)
        self.state = state


def _logger():
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except Exception:
        import logging

        return logging.getLogger(__name__)


async def _route(m: Mediation, file: FileRef):
    # the name is a hint for text subtypes only, and only its suffix: the same bytes under
    # another name (a member of an archive) share the inspect step's result
    suffix = PurePosixPath(file.name.replace("\\", "/")).suffix.lower()
    inspected = await m.step("inspect", options={"name": f"upload{suffix}"})
    if inspected is None:
        return outcome(await m.finish())
    info = inspected["metadata"]
    m.file = file.model_copy(update={"mime": info["mime"], "kind": info["kind"], "ext": info["extension"]})
    steps = KINDS.get(m.file.kind)
    if steps is None:
        m.fail("route", UnsupportedInput(f"no converter handles {info['mime']} ({info['description']})"))
        return outcome(await m.finish())
    await _tag_kind(m.file.kind)
    await steps(m)
    if m.members:
        await process_members(m)
    return outcome(await m.finish())


async def _tag_kind(kind: str) -> None:
    """Tag this run ``kind:<kind>`` (the kind is known only once the file is inspected)."""
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return
    tags = sorted({*(t for t in ctx.flow_run.tags or [] if not t.startswith("kind:")), f"kind:{kind}"})
    async with _api() as client:
        await client.update_flow_run(ctx.flow_run.id, tags=tags)
    ctx.flow_run.tags = tags


@asynccontextmanager
async def _api() -> AsyncIterator[PrefectClient]:
    """The run's own API client where it has one (no new client to build), else a new one."""
    ctx = FlowRunContext.get()
    if ctx is not None and isinstance(ctx.client, PrefectClient):
        yield ctx.client
    else:
        async with get_client() as client:
            yield client


async def process_members(m: Mediation) -> None:
    """Every member of the file through the router, as a run of its own linked to the file as
    its parent (at most ``max_active_members`` at once); members that are archives recurse, one
    level deeper each time, until the converter's depth limit refuses them. The file's run
    carries a progress artifact (``members-<sha256[:32]>``): the share of members finished."""
    members = m.members
    m.rt.tracker.expect(len(members))
    gate = asyncio.Semaphore(m.rt.pipeline.max_active_members)
    progress = Progress(len(members), m.file)
    await progress.start()

    async def member(file: FileRef) -> None:
        async with gate:  # a failed member is its own manifest's business
            if file.upload_id and await asyncio.to_thread(_upload_ended, m.rt.store, file.upload_id):
                # ended in an earlier run of this file (a resumed run: its mediator died while the
                # members ran): the member keeps its manifest and is not run again
                m.rt.tracker.expect(-1)
            else:
                with file_tags():  # the member's run tags itself with its own kind
                    await process_to_terminal(file, file.name, delay_s=m.rt.pipeline.retry_delay_s)
        await progress.advance()

    await asyncio.gather(*(member(f) for f in members))
    m.children = [f.file_id for f in members]


def _upload_ended(store: Any, upload_id: str) -> bool:
    record = uploads.read(store, upload_id)
    return record is not None and record.status in uploads.TERMINAL


class Progress:
    """The members' progress artifact in percent, updated at most once per whole percent."""

    def __init__(self, total: int, file: FileRef) -> None:
        self.total, self.file, self.done, self.shown = total, file, 0, 0
        self.artifact_id = None

    async def start(self) -> None:
        if self.total and FlowRunContext.get() is not None:
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


async def process_to_terminal(
    file: FileRef, name: str, *, attempts: int = 3, delay_s: float = 1.0, owner_poll_s: float = 2.0,
    owner_wait_s: float = 6 * 3600.0,
) -> None:
    """Run the router on ``file`` (uploaded as ``name``) until the file has its manifest.

    A run can break without writing one: the Prefect API itself failed it (on SQLite, "database
    is locked" arrives as a 503 once the client's own retries are spent). Such a file is run
    again (its finished steps come back from the cache); after the last attempt it gets a
    failed manifest that says why, so no file is ever left without one.

    A run that finds its upload claimed by another run still at work does nothing: then the
    file's end is that run's, and it is waited for (every ``owner_poll_s``, at most
    ``owner_wait_s``) instead of failing the upload under it, which would tell its sender
    "failed" and then "completed". A dead owner is marked Crashed by the liveness automation
    (or settled by its successor); the upload is then taken over by one more run.
    """
    rt = current()

    async def ended() -> bool:
        """Whether the file has its manifest: written by this process, or (a run that found the
        upload another run's and did nothing) by the upload's own run."""
        return rt.tracker.has_finished(file.token) or bool(
            file.upload_id and await asyncio.to_thread(_upload_ended, rt.store, file.upload_id))

    mine: set[str] = set()  # the runs of these attempts: never waited for as another run
    broke = [False]  # an attempt raised: which run it made (and perhaps left claiming the upload) is unknown

    async def run() -> tuple[str, bool]:
        """One run of the router on the file: why it ended as it did, and whether the file has its manifest."""
        try:
            state = await process_file(
                key=file.key, file_id=file.file_id, name=name, size=file.size, parent=file.parent,
                depth=file.depth, upload_id=file.upload_id, parent_upload=file.parent_upload, batch=file.batch,
                callback_url=file.callback_url, options=file.options, return_state=True,
            )
            reason = state.message or state.name
            if state.state_details.flow_run_id is not None:
                mine.add(str(state.state_details.flow_run_id))
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            broke[0] = True
        return reason, await ended()

    reason, done = await retry.acall(
        run, retry=retry.retry_if_result(lambda result: not result[1]),
        wait=retry.doubling(delay_s), stop=retry.stop_after_attempt(attempts),
    )
    if not done and file.upload_id and not broke[0]:
        waited = 0.0
        while not done and waited < owner_wait_s and await _owner_at_work(rt.store, file.upload_id, mine):
            await asyncio.sleep(owner_poll_s)
            waited += owner_poll_s
            done = await ended()
        if not done and waited:  # the owner ended without finishing the upload: take it over, once
            reason, done = await run()
    if done:
        return
    m = Mediation(file)
    m.fail("router", RuntimeError(f"the file's run ended without a manifest ({attempts} attempts): {reason}"))
    await m.finish()
