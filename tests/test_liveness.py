"""The liveness automations (deployments/liveness.py) act only on runs still in the state they
watch: their definitions, and the resume automation on a real Prefect server (its triggers and
actions services) with one run left Crashed and one moved on by someone else."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from deployments.liveness import HEARTBEAT, STATE_EVENTS, crash_spec, left, pending_spec, resume_spec
from fileflow.settings import LivenessSettings
from fileflow.testing.api import call_api

SETTINGS = LivenessSettings()


@pytest.mark.parametrize("spec, watched", [
    (crash_spec(SETTINGS), {"Running"}),
    (pending_spec(SETTINGS), {"Pending"}),
    (resume_spec(uuid.uuid4(), SETTINGS), {"Crashed"}),
])
def test_every_automation_stands_down_once_the_run_left_the_state_it_watches(spec, watched):
    """Proactive, per run: it acts only if no event of another state came within its window."""
    from prefect.events.schemas.automations import Posture

    trigger = spec.trigger
    assert trigger.posture == Posture.Proactive and trigger.threshold == 1
    assert trigger.for_each == {"prefect.resource.id"}
    assert {f"prefect.flow-run.{s}" for s in watched} & trigger.after  # the window opens on entering it
    assert left(*watched) <= trigger.expect  # any other state closes it without acting
    assert not {f"prefect.flow-run.{s}" for s in watched} & trigger.expect or watched == {"Running"}
    assert len(spec.actions) == 1 and not spec.actions[0].force  # never forced out of a final state


def test_a_heartbeat_keeps_a_running_run_alive_and_a_retry_opens_a_new_window():
    trigger = crash_spec(SETTINGS).trigger
    assert HEARTBEAT in trigger.after and HEARTBEAT in trigger.expect
    assert "prefect.flow-run.Retrying" in trigger.after and "prefect.flow-run.Retrying" in trigger.expect
    assert "prefect.flow-run.Running" not in trigger.expect
    assert left() == STATE_EVENTS


_call = call_api  # fileflow/testing/api.py


def test_resume_sets_scheduled_a_run_still_crashed_and_leaves_one_that_moved_on(prefect_server):
    """Two runs of a deployment crash; one is finished by someone else two seconds later (the
    restarted mediator, the resumer). After the window, only the one still Crashed is Scheduled;
    the finished one stays Completed and the automation reports no failed action."""
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
    from prefect.states import Completed, Crashed, Running

    async def prepare(client):
        flow_id = await client.create_flow_from_name(f"liveness-{uuid.uuid4().hex[:6]}")
        deployment = await client.create_deployment(flow_id=flow_id, name="router")
        spec = resume_spec(deployment, SETTINGS).model_copy(update={"name": f"resume-test-{uuid.uuid4().hex[:6]}"})
        automation = await client.create_automation(spec)
        await asyncio.sleep(3)  # the triggers service loads automations as they change
        runs = [await client.create_flow_run_from_deployment(deployment) for _ in range(2)]
        for run in runs:
            await client.set_flow_run_state(run.id, Running(), force=True)
            await client.set_flow_run_state(run.id, Crashed(message="its mediator died"), force=True)
        await asyncio.sleep(2)
        await client.set_flow_run_state(runs[1].id, Completed(message="settled by someone else"), force=True)
        return automation, runs

    automation, (still_crashed, moved_on) = _call(prefect_server, prepare)

    def state_of(run_id) -> str:
        return _call(prefect_server, lambda c: c.read_flow_run(run_id)).state.type.value

    deadline = time.monotonic() + 90
    while state_of(still_crashed.id) == "CRASHED" and time.monotonic() < deadline:
        time.sleep(1)
    assert state_of(still_crashed.id) == "SCHEDULED"
    time.sleep(SETTINGS.resume_after_s)  # past the other run's window too
    assert state_of(moved_on.id) == "COMPLETED"

    async def actions(client):
        page = await client.read_events(EventFilter(
            event=EventNameFilter(prefix=["prefect.automation.action."]),
            resource=EventResourceFilter(id=[f"prefect.automation.{automation}"])), limit=50)
        return [e.event for e in page.events]

    try:
        done = _call(prefect_server, actions)
        assert "prefect.automation.action.failed" not in done, done
        assert done.count("prefect.automation.action.executed") == 1, done
    finally:
        _call(prefect_server, lambda c: c.delete_automation(automation))
