"""What a worker that starts finds of its dead predecessors, settled before it takes work.

A worker process killed outright (SIGKILL, OOM) leaves behind, on the server:

- the flow runs it held, ``Running`` or ``Pending`` (claimed, not yet started); a ``Pending``
  run has no heartbeat, so only the stranded-Pending automation would end it (120 s);
- the task runs of those flow runs (a file's steps, in the mediator), ``Running`` for good:
  Prefect records task runs from the engine's events, so a resumed flow run makes new task runs
  and nobody ends the old ones.

A worker knows a run's holder by its identity ``<host>:<pid>``: the warm worker writes it into
every run it holds, as the run's infrastructure pid (``host:pid:run``, once the run is handed to
the worker) and, before that, into the message of the ``Pending`` state it claims the run with
(``claimed by host:pid``). A holder is gone when its keeper said so (``FILEFLOW_WORKER_PREDECESSOR``,
``host:pid|how``), or when it names this host and a pid that is not a live process here, or this
very process (a container started again in the same pod keeps the pod's host name and may get the
same pid; this process holds nothing before it settles). A holder on another host is never judged
here: the liveness automations (:mod:`deployments.liveness`) remain the net for a machine lost.

:func:`settle` then, before the worker polls:

====================================================  ========================================
found                                                 done
====================================================  ========================================
a ``Running``/``Pending``/``Cancelling`` flow run of  ``Crashed`` (the mediator retries a step;
the worker's pools whose holder is gone                the resume automation or the resumer
                                                      resumes a file, which re-attaches its
                                                      pool steps by their idempotency keys)
a ``Running``/``Pending`` subflow run (an archive     ``Crashed`` (it ran in the dead process;
member, no deployment of its own) of a flow run       the resumed archive takes its member over)
crashed above, and its subflows, to any depth
a ``Running``/``Pending`` task run of a flow run of   ``Crashed``
the pools or of such a subflow, started before its flow run left
``Running`` or before its flow run's current
``Running`` began (the attempt it belonged to is
over)
====================================================  ========================================

A task run that stands for a pool step's flow run (``run_deployment``'s parent task run, its state
naming a child flow run) is left alone: the server copies that flow run's every state onto it, so
it ends when the step's run ends (a step run on a pool outlives the mediator that started it and
is re-attached by the resumed file), and a flow run whose holder is gone is crashed above.

A task run of a flow run that ended ``Completed``, ``Failed`` or ``Cancelled`` is settled only
once that end is ``EVENTS_LAG_S`` old: task states arrive as events, possibly after the flow's.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

logger = logging.getLogger("fileflow.server.worker")

#: the message of the ``Pending`` state a warm worker claims a run with, before its identity
CLAIMED_BY = "claimed by "
#: how long a finished flow run's task states may still be on their way as events
EVENTS_LAG_S = 30.0
#: a task run of a ``Running`` flow run is the previous attempt's only if it started this much
#: before the attempt (clocks of two processes of one machine, or of a cluster, differ a little)
CLOCK_MARGIN_S = 1.0
PAGE = 200


def identity() -> str:
    """This process as a run's holder: ``<host>:<pid>``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_message() -> str:
    return f"{CLAIMED_BY}{identity()}"


async def claim(client: Any, flow_run: Any) -> bool:
    """Prefect's claim of a run for a worker (``Pending`` proposed; only one worker wins), with
    this process named in the state's message (:func:`claim_message`), so that a worker starting
    after this one died finds the runs it had claimed and not yet started. Whether it won."""
    from prefect.exceptions import Abort
    from prefect.states import Pending
    from prefect.utilities.engine import propose_state

    try:
        state = await propose_state(client, Pending(message=claim_message()), flow_run_id=flow_run.id)
    except Abort as exc:
        logger.info("claim of run %s aborted by the server: %s", flow_run.id, exc)
        return False
    except Exception:
        logger.exception("could not claim run %s", flow_run.id)
        return False
    return state.is_pending()


def holder_of(run: Any) -> str | None:
    """The ``host:pid`` holding a flow run: from its infrastructure pid, else from the message of
    the ``Pending`` state a warm worker claimed it with; None when neither names one."""
    parts = (run.infrastructure_pid or "").split(":")
    if len(parts) >= 2 and parts[0] and parts[1].isdigit():
        return f"{parts[0]}:{parts[1]}"
    state = run.state
    message = (state.message or "") if state is not None else ""
    if state is not None and state.is_pending() and message.startswith(CLAIMED_BY):
        return message[len(CLAIMED_BY):].split()[0] or None
    return None


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError, PermissionError):
        return False


def gone(holder: str, predecessor: str | None = None) -> str | None:
    """Why the process ``holder`` (``host:pid``) no longer holds its runs; None while it may."""
    if predecessor:
        who, _, how = predecessor.partition("|")
        if holder == who:
            return how or "died"
    host, _, pid = holder.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    if int(pid) == os.getpid():
        return "gone; its pid is now this worker's"
    return None if _alive(int(pid)) else "gone"


async def settle(pools: list[str], predecessor: str | None = None) -> tuple[list[str], list[str]]:
    """Crash the flow runs of ``pools`` whose holder is gone and the subflow runs that ran in the
    same process, then the task runs whose attempt is over (see the module's table); the names of
    both. Call before the worker takes work."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        crashed = await _settle_flow_runs(client, pools, predecessor)
        members = await _settle_subflow_runs(client, [run.id for run in crashed])
        tasks = await _settle_task_runs(client, pools, [run.id for run in members])
    return [run.name for run in crashed + members], tasks


async def _pages(read, **filters) -> list:
    found: list = []
    while True:
        page = await read(**filters, limit=PAGE, offset=len(found))
        found.extend(page)
        if len(page) < PAGE:
            return found


def _not_final(*types):
    from prefect.client.schemas.objects import StateType

    return [StateType(t) for t in types]


async def _settle_flow_runs(client, pools: list[str], predecessor: str | None) -> list[Any]:
    from prefect.client.schemas.filters import (
        FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType, WorkPoolFilter, WorkPoolFilterName)
    from prefect.states import Crashed

    runs = await _pages(client.read_flow_runs,
                        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
                            any_=_not_final("RUNNING", "PENDING", "CANCELLING")))),
                        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=pools)))
    crashed = []
    for run in runs:
        who = holder_of(run)
        how = gone(who, predecessor) if who else None
        if how is None:
            continue
        message = f"its worker process {who} died ({how}); crashed by the worker started in its place"
        await client.set_flow_run_state(run.id, Crashed(message=message), force=True)
        crashed.append(run)
    return crashed


async def _settle_subflow_runs(client, parents: list[Any]) -> list[Any]:
    """Crash the open in-process subflow runs of ``parents`` (an archive's members, each a
    ``process-file`` run of its own), their subflows in turn: they ran in the process that died
    with their parent. A child with a deployment is a pool step's run, held by a worker of its
    own, and is left alone."""
    from prefect.client.schemas.filters import (
        FlowRunFilter, FlowRunFilterDeploymentId, FlowRunFilterParentFlowRunId, FlowRunFilterState,
        FlowRunFilterStateType)
    from prefect.states import Crashed

    crashed: list[Any] = []
    while parents:
        children = await _pages(client.read_flow_runs, flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=parents),
            deployment_id=FlowRunFilterDeploymentId(is_null_=True),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=_not_final("RUNNING", "PENDING")))))
        for run in children:
            message = "the process running it died with its parent's; crashed by the worker started in its place"
            await client.set_flow_run_state(run.id, Crashed(message=message), force=True)
        crashed.extend(children)
        parents = [run.id for run in children]
    return crashed


def attempt_over(task_started: datetime, flow_state: Any, now: datetime) -> bool:
    """Whether a task run that entered its current (non-final) state at ``task_started`` belongs
    to an attempt of its flow run that is over, given the flow run's current state."""
    from prefect.client.schemas.objects import StateType

    if flow_state is None or flow_state.timestamp is None:
        return False
    since = flow_state.timestamp
    kind = flow_state.type
    if kind == StateType.RUNNING:
        return task_started < since - timedelta(seconds=CLOCK_MARGIN_S)
    if kind in (StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED):
        return task_started <= since and now - since > timedelta(seconds=EVENTS_LAG_S)
    if kind in (StateType.CRASHED, StateType.SCHEDULED, StateType.PENDING, StateType.PAUSED):
        return task_started <= since
    return False  # Cancelling: its worker is ending it


async def _settle_task_runs(client, pools: list[str], subflows: list[Any]) -> list[str]:
    from prefect.client.schemas.filters import (
        FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterState, TaskRunFilterStateType, WorkPoolFilter,
        WorkPoolFilterName)
    from prefect.states import Crashed

    open_tasks = TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(
        any_=_not_final("RUNNING", "PENDING"))))
    flow_runs = await _pages(client.read_flow_runs, task_run_filter=open_tasks,
                             work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=pools)))
    if subflows:  # crashed above, in no pool
        flow_runs += await _pages(client.read_flow_runs, task_run_filter=open_tasks,
                                  flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=subflows)))
    if not flow_runs:
        return []
    by_id = {run.id: run for run in flow_runs}
    tasks = await _pages(client.read_task_runs, task_run_filter=open_tasks,
                         flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(by_id))))
    now = datetime.now(timezone.utc)
    settled = []
    for task in tasks:
        flow_run = by_id.get(task.flow_run_id)
        started = task.state.timestamp if task.state is not None else None
        if flow_run is None or started is None or not attempt_over(started, flow_run.state, now):
            continue
        if task.state.state_details.child_flow_run_id is not None:
            continue  # a pool step's parent task run: the server mirrors its flow run's state onto it
        message = (f"its flow run {flow_run.name} left this attempt ({flow_run.state.type.value} since "
                   f"{flow_run.state.timestamp:%H:%M:%S}): the process running it is gone; settled by a worker "
                   "starting")
        await client.set_task_run_state(task.id, Crashed(message=message), force=True)
        settled.append(f"{flow_run.name}/{task.name}")
    return settled
