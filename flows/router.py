"""The router: inspects an upload by its content and starts the flow for its kind.

This is the entry point of the pipeline (the ``process-file`` deployment): one run per file,
named after it. A file of a kind nobody handles, or one that cannot even be inspected, ends
``failed`` with its reason in the manifest; it is never skipped silently.
"""

from __future__ import annotations

import asyncio

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext

from fileflow.errors import ToolCrashed, UnsupportedInput
from fileflow.mediator import FileRef, Mediation, current, display_name
from fileflow.settings import LivenessSettings
from flows._common import file_tags, outcome
from flows.archive import archive_flow
from flows.audio import audio_flow
from flows.drawing import drawing_flow
from flows.email import email_flow
from flows.image import image_flow
from flows.markup import markup_flow
from flows.office import office_flow
from flows.pdf import pdf_flow
from flows.text import text_flow
from flows.video import video_flow

FLOWS = {
    "image": image_flow,
    "pdf": pdf_flow,
    "office": office_flow,
    "drawing": drawing_flow,
    "video": video_flow,
    "archive": archive_flow,
    "text": text_flow,
    "email": email_flow,
    "audio": audio_flow,
    "markup": markup_flow,
}


@flow(name="process-file", flow_run_name="file:{name}", persist_result=False)
async def process_file(
    key: str, file_id: str, name: str, size: int, parent: str | None = None, depth: int = 0
):
    file = FileRef(file_id=file_id, name=display_name(name), key=key, size=size, parent=parent, depth=depth)
    m = Mediation(file)
    m.rt.tracker.started(file.token, file.name)
    crashes = await _mediator_crashes()
    if crashes > LivenessSettings().mediator_resumes:  # it kills its mediator every time: stop here
        m.fail("router", ToolCrashed(f"the file's mediator crashed {crashes} times while processing it; "
                                     "it is not resumed again (FILEFLOW_LIVENESS_MEDIATOR_RESUMES)"))
        return outcome(await m.finish())
    return await _route_through_api_failures(m, file)


async def _admit_and_route(m: Mediation, file: FileRef):
    if file.parent is None and m.rt.lane == "upload":  # the operators' cap on active uploads (fileflow/limits.py)
        async with m.rt.steering.file_slot("upload"):
            return await _route(m, file)
    return await _route(m, file)


async def _mediator_crashes() -> int:
    """How often this router run was started before: each time its mediator died and the
    resume automation (deployments/liveness.py) scheduled it again. 0 outside a deployment."""
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None or ctx.flow_run.deployment_id is None:
        return 0
    try:
        async with get_client() as client:  # the count the server keeps; the context's copy predates Running
            run = await client.read_flow_run(ctx.flow_run.id)
        return max(run.run_count - 1, 0)
    except Exception as exc:  # the API failing here (a server restart) must not fail the file
        if not _api_failure(exc):
            raise
        _logger().warning("could not read the run count (%s: %s); using the run's own copy", type(exc).__name__, exc)
        return max(ctx.flow_run.run_count, 0)  # taken before this start's Running: one less than the server's


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
    from fileflow.mediator import _exception_of

    tracker = m.rt.tracker
    for delay in (*API_RETRY_DELAYS_S, None):
        try:
            state = await _admit_and_route(m, file)
        except Exception as exc:
            if delay is None or not _api_failure(exc):
                raise
            reason: BaseException = exc
        else:
            if tracker.has_finished(file.token) or not state.is_failed() or delay is None:
                return state
            reason = await _exception_of(state)
            if not _api_failure(reason):
                return state
        _logger().warning("the Prefect API failed under %r (%s: %s); routing it again in %g s",
                          file.name, type(reason).__name__, reason, delay)
        await asyncio.sleep(delay)
        m = Mediation(file)


def _logger():
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except Exception:
        import logging

        return logging.getLogger(__name__)


async def _route(m: Mediation, file: FileRef):
    inspected = await m.step("inspect")
    if inspected is None:
        return outcome(await m.finish())
    info = inspected["metadata"]
    file = file.model_copy(update={"mime": info["mime"], "kind": info["kind"], "ext": info["extension"]})
    kind_flow = FLOWS.get(file.kind)
    if kind_flow is None:
        m.file = file
        m.fail("route", UnsupportedInput(f"no converter handles {info['mime']} ({info['description']})"))
        return outcome(await m.finish())
    with file_tags(file.kind):
        state = await kind_flow(file, inspected, return_state=True)
    return state


async def process_to_terminal(file: FileRef, name: str, *, attempts: int = 3, delay_s: float = 1.0) -> None:
    """Run the router on ``file`` (uploaded as ``name``) until the file has its manifest.

    A run can break without writing one: the Prefect API itself failed it (on SQLite, "database
    is locked" arrives as a 503 once the client's own retries are spent). Such a file is run
    again (its finished steps come back from the cache); after the last attempt it gets a
    failed manifest that says why, so no file is ever left without one.
    """
    tracker = current().tracker
    reason = "no attempt"
    for attempt in range(attempts):
        if attempt:
            await asyncio.sleep(delay_s * 2 ** (attempt - 1))
        try:
            state = await process_file(
                key=file.key, file_id=file.file_id, name=name, size=file.size, parent=file.parent,
                depth=file.depth, return_state=True,
            )
            reason = state.message or state.name
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if tracker.has_finished(file.token):
            return
    m = Mediation(file)
    m.fail("router", RuntimeError(f"the file's run ended without a manifest ({attempts} attempts): {reason}"))
    await m.finish()
