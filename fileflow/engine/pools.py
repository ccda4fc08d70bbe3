"""Steps on converter work pools: the ``pool`` placement of a converter.

The mediator starts the converter's deployment with ``run_deployment`` and an idempotency key
made of the file, the step's cache key and the attempt, so a restarted mediator re-attaches to
the run it already started instead of starting a second one. The run's outcome (result or
typed error) comes back through storage, at a key under ``tmp/`` (expired by the bucket's
lifecycle rule).

A converter that crashes (a segfault in its isolated child) ends its run ``Failed`` with a
``ToolCrashed`` outcome, which the step task retries per the converter's ``retries``. A run that
ends ``Crashed`` lost the process running it (its worker killed, its pod or machine gone, or
never started by the worker that claimed it): that says nothing of the file, so the step is
started again at once, up to ``INFRA_RESTARTS`` times within the same attempt, before it counts
as a ``ToolCrashed`` of the attempt. Each start has its own idempotency key and outcome key, so
a mediator that resumes the file re-attaches to the latest one.

Re-attaching: ``run_deployment`` called from a step's task first makes a ``Pending`` task run in
the file's flow run to stand for the step's run, then creates the run. When the idempotency key
finds an earlier run (a resumed file, an archive member taken over), the server returns that run,
linked to the task run made the first time, and the new one would stay ``Pending`` for good:
:func:`_drop_unlinked_placeholder` deletes it. A run created more than
``REATTACH_MARGIN_S`` before the call tells the re-attach apart, so a first start costs no read.

Waiting: ``run_deployment``'s own wait polls at a fixed interval (5 s by default). Here the run
is created without waiting, and the mediator waits for the run's end event (one event stream
per mediator process, :class:`_RunEnds`), reading the run back when woken, at 0.25, 0.5 and 1 s,
and then every ``poll_s`` (5 s) in case an event was missed (a server restart). Waiting on
the event rather than polling keeps the server's work per waiting step at a few reads: polls
fast enough for low latency would be most of the server's work when many files wait on busy
pools.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

from prefect.client.orchestration import get_client
from prefect.deployments import arun_deployment

from blocks.storage import Store
from fileflow.engine.step import StepOutcome, StepRequest
from fileflow.errors import ToolCrashed, ToolError, ToolTimeout, rebuild
from fileflow.names import pool_name, step_deployment

logger = logging.getLogger("fileflow.engine.pools")

#: a step's run whose process was lost (``Crashed``) is started again this many times within
#: one attempt of the step, before the attempt fails as ``ToolCrashed``
INFRA_RESTARTS = 2
#: a step's run created this long before ``run_deployment`` was called is one re-attached by its
#: idempotency key (a margin for the clocks of mediator and server; a resumed file comes back
#: tens of seconds after its crash at the earliest)
REATTACH_MARGIN_S = 2.0


async def run_on_pool(
    converter: str,
    label: str,
    request: StepRequest,
    *,
    store: Store,
    cache_key: str,
    file_id: str,
    attempt: int,
    timeout_s: float,
    poll_s: float,
    deployment: str | None = None,
    work_queue_name: str | None = None,
    scope: str = "",
) -> StepOutcome:
    lost: list[str] = []
    for start in range(INFRA_RESTARTS + 1):
        again = f"-r{start}" if start else ""  # the first start keeps the keys it always had
        outcome_key = f"tmp/steps/{cache_key}-{attempt}{again}.json"
        called = datetime.now(timezone.utc)
        flow_run = await arun_deployment(
            deployment or step_deployment(converter),
            parameters={
                "converter": converter,
                "label": label,
                "payload": replace(request, storage=None).to_dict(),  # the worker's own storage
                "outcome_key": outcome_key,
            },
            idempotency_key=f"{file_id}:{converter}:{cache_key}:{attempt}" + (f":{scope}" if scope else "") + again,
            flow_run_name=f"{converter}:{label}",  # named while it waits, not only once it starts
            work_queue_name=work_queue_name,  # None: the deployment's own (default) queue
            timeout=0,
            tags=[f"converter:{converter}"],
        )
        if flow_run.created is not None and flow_run.created < called - timedelta(seconds=REATTACH_MARGIN_S):
            await _drop_unlinked_placeholder(flow_run)
        flow_run = await _wait(flow_run, timeout_s=timeout_s, poll_s=poll_s)
        state = flow_run.state
        if state is None or not state.is_final():
            raise ToolTimeout(
                f"the step on pool {pool_name(converter)} did not finish within {timeout_s:g} s "
                f"(run {flow_run.name} is {state.name if state else 'unknown'})"
            )
        if not state.is_crashed():
            break
        lost.append(state.message or "crashed")
    else:
        raise ToolCrashed(f"the step's run {flow_run.name} on {pool_name(converter)} crashed "
                          f"{len(lost)} times in a row: {'; '.join(lost)}")
    record = None
    if await asyncio.to_thread(store.exists, outcome_key):
        record = json.loads(await asyncio.to_thread(store.get_bytes, outcome_key))
    if state.is_completed() and record and "result" in record:
        return StepOutcome.from_dict(record["result"])
    if record and "error" in record:
        raise rebuild(record["error"]["type"], record["error"]["message"])
    raise ToolError(f"the step's run {flow_run.name} ended {state.name}: {state.message}")


async def _drop_unlinked_placeholder(flow_run) -> None:
    """Delete the ``Pending`` task run ``run_deployment`` just made for ``flow_run`` when the
    server handed back an earlier run instead (see the module's docstring): the task run of the
    calling step's, in the same flow run, standing for this deployment, linked to no run. The
    step's own task run still records the step; the earlier task run still links the run."""
    from prefect.client.schemas.filters import (
        FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterState, TaskRunFilterStateType,
        TaskRunFilterSubFlowRuns)
    from prefect.client.schemas.objects import StateType
    from prefect.context import FlowRunContext, TaskRunContext

    step = TaskRunContext.get()
    flow = FlowRunContext.get()
    owner = step.task_run.flow_run_id if step else (flow.flow_run.id if flow and flow.flow_run else None)
    if owner is None:
        return  # called outside any run: run_deployment made no task run
    parents = [step.task_run.id] if step else []
    try:
        async with get_client() as client:
            unlinked = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[owner])),
                task_run_filter=TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(
                    any_=[StateType.PENDING])), subflow_runs=TaskRunFilterSubFlowRuns(exists_=False)))
            for task in unlinked:
                if (task.id == flow_run.parent_task_run_id
                        or not task.task_key.startswith(PLACEHOLDER_KEY_PREFIX)
                        or [p.id for p in task.task_inputs.get("__parents__", [])] != parents
                        or (task.state and task.state.state_details.child_flow_run_id is not None)):
                    continue
                await client.delete_task_run(task.id)
                logger.info("step run %s re-attached: deleted the task run %s made for it again", flow_run.name,
                            task.id)
    except Exception as exc:  # cosmetic: the step goes on; the task run stays Pending
        logger.warning("could not delete the task run made again for re-attached run %s: %s", flow_run.name, exc)


#: how ``run_deployment`` keys the task run that stands for a deployment's run in the calling flow
PLACEHOLDER_KEY_PREFIX = "prefect.deployments.flow_runs.run_deployment."


#: states that end a run: their events wake the mediator waiting on it
END_EVENTS = [f"prefect.flow-run.{name}" for name in ("Completed", "Failed", "Crashed", "Cancelled", "TimedOut")]
#: the mediator reads a waiting step's run at these moments (s after its creation), then every
#: ``poll_s``: the safety net under the event stream, which wakes it the moment the run ends
EARLY_READS_S = (0.25, 0.5, 1.0)


class _RunEnds:
    """One event stream per event loop (the warm mediator: one for every file in flight) that
    wakes whoever waits on a run the moment the run ends, instead of each waiter reading its run
    again and again: with 32 files waiting on busy pools, those reads were most of the server's
    work."""

    def __init__(self) -> None:
        self.waiters: dict[str, asyncio.Event] = {}
        self.task: asyncio.Task | None = None

    def watch(self, run_id: str) -> asyncio.Event:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._listen(), name="fileflow-run-ends")
        return self.waiters.setdefault(run_id, asyncio.Event())

    def forget(self, run_id: str) -> None:
        self.waiters.pop(run_id, None)

    async def _listen(self) -> None:
        from prefect.events.clients import get_events_subscriber
        from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

        events = EventFilter(event=EventNameFilter(name=END_EVENTS),
                             resource=EventResourceFilter(id_prefix=["prefect.flow-run."]))
        while True:
            try:
                async with get_events_subscriber(filter=events, reconnect_on_clean_close=True) as subscriber:
                    async for event in subscriber:
                        waiter = self.waiters.get(event.resource.id.removeprefix("prefect.flow-run."))
                        if waiter is not None:
                            waiter.set()
            except asyncio.CancelledError:
                raise
            except Exception:  # the server restarting: the reads below carry on meanwhile
                await asyncio.sleep(2)


_run_ends: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _RunEnds]" = weakref.WeakKeyDictionary()


async def _wait(flow_run, *, timeout_s: float, poll_s: float):
    """Wait until the run is final or ``timeout_s`` passed: woken by the run's end event, with a
    read at :data:`EARLY_READS_S` and then every ``poll_s`` in case an event was missed."""
    loop = asyncio.get_running_loop()
    ends = _run_ends.setdefault(loop, _RunEnds())
    run_id = str(flow_run.id)
    ended = ends.watch(run_id)
    start = loop.time()
    deadline = start + timeout_s
    schedule = [start + t for t in EARLY_READS_S]
    try:
        async with get_client() as client:
            while not (flow_run.state and flow_run.state.is_final()) and loop.time() < deadline:
                now = loop.time()
                due = schedule.pop(0) if schedule else now + poll_s
                try:
                    await asyncio.wait_for(ended.wait(), max(0.0, min(due, deadline) - now))
                except asyncio.TimeoutError:
                    pass
                ended.clear()
                flow_run = await client.read_flow_run(flow_run.id)
    finally:
        ends.forget(run_id)
    return flow_run
