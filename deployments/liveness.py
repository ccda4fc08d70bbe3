"""The liveness automations: no run is left ``Running`` or ``Pending`` when its process dies.

Every flow run of the stack emits ``prefect.flow-run.heartbeat`` every
``FILEFLOW_LIVENESS_HEARTBEAT_S`` seconds (Prefect's flow engine does it, in the process worker's
engine processes and in the warm worker's in-process runs alike, from a thread of its own;
``fileflow up`` sets ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``). Three automations, created or updated
in place by :func:`ensure` (called by :mod:`deployments.setup`):

- ``fileflow-crash-silent-runs``: Prefect's documented zombie-run pattern. A *proactive* trigger
  per flow run: after a heartbeat (or the run's ``Running`` event, which the server emits, so a
  process killed before its first heartbeat is caught too), another heartbeat or a state that
  ends or pauses the run is expected within ``FILEFLOW_LIVENESS_CRASHED_AFTER_S`` seconds; if
  none comes, the run is set ``Crashed``.
  A converter step run crashed so is retried by its mediator (new attempt, new idempotency key,
  :mod:`fileflow.engine.pools`); a router run crashed so is resumed by the next automation.
- ``fileflow-crash-stranded-pending``: a worker claims a run (``Pending``) before it starts it
  (``Running``); a worker that dies in between, with nobody to report it, leaves the run
  ``Pending`` with no heartbeat ever to miss. After the run's ``Pending`` event, its ``Running``
  event (or a state that ends it or gives it back) is expected within
  ``FILEFLOW_LIVENESS_PENDING_AFTER_S`` seconds; if none comes, the run is set ``Crashed`` and
  recovered like any other, instead of its mediator waiting on it for ``pool_queue_timeout_s``.
- ``fileflow-resume-crashed-router``: a run of the ``process-file`` deployment still
  ``Crashed`` ``FILEFLOW_LIVENESS_RESUME_AFTER_S`` seconds after its ``Crashed`` event (no event of
  another state came) is set back to ``Scheduled``; a mediator worker runs it again. Its finished steps come back from the persisted task results, a step still running
  on a pool is re-attached by its idempotency key, and the router itself stops a file whose
  mediator crashed more than ``FILEFLOW_LIVENESS_MEDIATOR_RESUMES`` times (a failed manifest
  with ``ToolCrashed``), so a file that kills its mediator every time cannot loop.

All three act only on runs still in the state they watch: each is a *proactive* trigger per
run whose ``expect`` holds the event of every other state the run could move to (:func:`left`),
so a run that finished, was resumed or was crashed by someone else in the window is never acted
on (no "run already in terminal state" failures, no finished run set back to Scheduled).

All run on the open-source server (its triggers and actions services).
"""

from __future__ import annotations

from datetime import timedelta

from fileflow.settings import LivenessSettings
from fileflow.names import CRASH_AUTOMATION, PENDING_AUTOMATION, RESUME_AUTOMATION, ROUTER_DEPLOYMENT

#: every state a flow run can enter, by the name its event carries (Prefect's flow-run events)
STATE_NAMES = ("Scheduled", "Late", "AwaitingConcurrencySlot", "AwaitingRetry", "Pending", "Running", "Retrying",
               "Completed", "Failed", "Crashed", "Cancelled", "Cancelling", "Paused", "Suspended")
STATE_EVENTS = {f"prefect.flow-run.{s}" for s in STATE_NAMES}
HEARTBEAT = "prefect.flow-run.heartbeat"
TERMINAL_EVENTS = {f"prefect.flow-run.{s}" for s in ("Completed", "Failed", "Cancelled", "Crashed")}
#: a run entered Running (state names of type RUNNING)
STARTED_EVENTS = {"prefect.flow-run.Running", "prefect.flow-run.Retrying"}


def left(*names: str) -> set[str]:
    """The events of a run moving to any state but ``names``: what shows that a run is no longer
    in the state an automation watches, so that the automation must not act on it."""
    return STATE_EVENTS - {f"prefect.flow-run.{n}" for n in names}


def _crash_unless(name: str, description: str, *, after: set[str], expect: set[str], within_s: int, message: str):
    """A proactive automation, per flow run: after one of ``after``, one of ``expect`` must come
    within ``within_s`` seconds, or the run is set ``Crashed`` with ``message``."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    return AutomationCore(
        name=name,
        description=description,
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            after=after,
            expect=expect,
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_s),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message=message)],
    )


def crash_spec(settings: LivenessSettings):
    return _crash_unless(
        CRASH_AUTOMATION,
        f"Mark Crashed a flow run that sent no heartbeat for {settings.crashed_after_s} s "
        "(its process died); fileflow retries or resumes it (docs/reliability.md).",
        # from the server's own Running event too: a process killed before its first
        # heartbeat left the engine (seen: the warm worker's buffered event died with it)
        after={HEARTBEAT, *STARTED_EVENTS},
        # a heartbeat, or any state but Running (Retrying is a new start: it both ends and opens a window)
        expect={HEARTBEAT, *left("Running")},
        within_s=settings.crashed_after_s,
        message=f"no heartbeat for {settings.crashed_after_s} s: the run's process is gone",
    )


def pending_spec(settings: LivenessSettings):
    return _crash_unless(
        PENDING_AUTOMATION,
        f"Mark Crashed a flow run claimed by a worker (Pending) that did not start within "
        f"{settings.pending_after_s} s (the worker died); fileflow retries or resumes it.",
        after={"prefect.flow-run.Pending"},
        expect={HEARTBEAT, *left("Pending")},
        within_s=settings.pending_after_s,
        message=f"claimed (Pending) and not started within {settings.pending_after_s} s: its worker is gone",
    )


def resume_spec(router_deployment_id, settings: LivenessSettings | None = None):
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    settings = settings or LivenessSettings()
    return AutomationCore(
        name=RESUME_AUTOMATION,
        description=f"Resume a crashed router run (the file's mediator died) still Crashed after "
                    f"{settings.resume_after_s} s: back to Scheduled, same run.",
        # proactive, not on the Crashed event itself: a run that someone else moved on in the
        # meantime (the restarted mediator, the resumer, an operator) is left alone, instead of
        # being set Scheduled again or failing with "already in terminal state"
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.id": f"prefect.deployment.{router_deployment_id}"},
            after={"prefect.flow-run.Crashed"},
            expect=left("Crashed"),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=settings.resume_after_s),
        ),
        actions=[ChangeFlowRunState(
            state=StateType.SCHEDULED,
            message="resumed after its mediator crashed; finished steps come from their stored results",
        )],
    )


async def _put(client, spec) -> str:
    existing = await client.read_automations_by_name(spec.name)
    for extra in existing[1:]:  # a name is not unique in Prefect: keep one
        await client.delete_automation(extra.id)
    if not existing:
        await client.create_automation(spec)
        return "created"
    await client.update_automation(existing[0].id, spec)
    return "updated"


async def ensure(settings: LivenessSettings | None = None) -> dict[str, str]:
    """Create or update both automations (after the deployments exist); what was done to each."""
    from prefect.client.orchestration import get_client

    settings = settings or LivenessSettings()
    async with get_client() as client:
        router = await client.read_deployment_by_name(ROUTER_DEPLOYMENT)
        return {
            CRASH_AUTOMATION: await _put(client, crash_spec(settings)),
            PENDING_AUTOMATION: await _put(client, pending_spec(settings)),
            RESUME_AUTOMATION: await _put(client, resume_spec(router.id, settings)),
        }
