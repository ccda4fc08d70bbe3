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
- ``fileflow-resume-crashed-router``: a reactive trigger on ``prefect.flow-run.Crashed`` of the
  ``process-file`` deployment sets the same run back to ``Scheduled``; a mediator worker runs
  it again. Its finished steps come back from the persisted task results, a step still running
  on a pool is re-attached by its idempotency key, and the router itself stops a file whose
  mediator crashed more than ``FILEFLOW_LIVENESS_MEDIATOR_RESUMES`` times (a failed manifest
  with ``ToolCrashed``), so a file that kills its mediator every time cannot loop.

Both run on the open-source server (its triggers and actions services).
"""

from __future__ import annotations

from datetime import timedelta

from fileflow.settings import LivenessSettings
from fileflow.names import CRASH_AUTOMATION, PENDING_AUTOMATION, RESUME_AUTOMATION, ROUTER_DEPLOYMENT

TERMINAL_EVENTS = {f"prefect.flow-run.{s}" for s in ("Completed", "Failed", "Cancelled", "Crashed")}
#: a run entered Running (state names of type RUNNING)
STARTED_EVENTS = {"prefect.flow-run.Running", "prefect.flow-run.Retrying"}
#: a run left Running without ending: it is not expected to beat any more
LEFT_RUNNING_EVENTS = {f"prefect.flow-run.{s}" for s in ("Scheduled", "AwaitingRetry", "Paused", "Suspended",
                                                          "Cancelling")}


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
        after={"prefect.flow-run.heartbeat", *STARTED_EVENTS},
        expect={"prefect.flow-run.heartbeat", *TERMINAL_EVENTS, *LEFT_RUNNING_EVENTS},
        within_s=settings.crashed_after_s,
        message=f"no heartbeat for {settings.crashed_after_s} s: the run's process is gone",
    )


def pending_spec(settings: LivenessSettings):
    return _crash_unless(
        PENDING_AUTOMATION,
        f"Mark Crashed a flow run claimed by a worker (Pending) that did not start within "
        f"{settings.pending_after_s} s (the worker died); fileflow retries or resumes it.",
        after={"prefect.flow-run.Pending"},
        expect={"prefect.flow-run.heartbeat", *STARTED_EVENTS, *TERMINAL_EVENTS, *LEFT_RUNNING_EVENTS},
        within_s=settings.pending_after_s,
        message=f"claimed (Pending) and not started within {settings.pending_after_s} s: its worker is gone",
    )


def resume_spec(router_deployment_id):
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    return AutomationCore(
        name=RESUME_AUTOMATION,
        description="Resume a crashed router run (the file's mediator died): back to Scheduled, same run.",
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.id": f"prefect.deployment.{router_deployment_id}"},
            expect={"prefect.flow-run.Crashed"},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
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
            RESUME_AUTOMATION: await _put(client, resume_spec(router.id)),
        }
