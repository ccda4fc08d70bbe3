"""A step on a converter pool (fileflow/engine/pools.py) against a real Prefect server, the test
playing the pool's worker: a run whose process was lost (``Crashed``) is started again within the
same attempt, up to ``INFRA_RESTARTS`` times; only then does the attempt fail as ``ToolCrashed``.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from blocks.storage import StorageConfig, Store
from fileflow.engine.pools import INFRA_RESTARTS, run_on_pool
from fileflow.engine.step import StepOutcome, StepRequest
from fileflow.errors import ToolCrashed

LOST = "its worker process vm:4242 died (signal SIGKILL); crashed by the worker started in its place"


@pytest.fixture
def deployment(prefect_server):
    """``converter-step/<name>`` on a pool no worker serves: its runs wait for this test."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    name = f"pools-{uuid.uuid4().hex[:6]}"

    async def make():
        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(name=name, type="process"))
            flow_id = await client.create_flow_from_name("converter-step")
            await client.create_deployment(flow_id=flow_id, name=name, work_pool_name=name,
                                           entrypoint="flows/step.py:converter_step")
        return f"converter-step/{name}"

    return asyncio.run(make())


async def _play_worker(deployment: str, store: Store, crashes: int) -> list:
    """Crash the first ``crashes`` runs of ``deployment`` as a lost worker would leave them,
    complete the next with an outcome; the runs, in the order they came."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
    from prefect.states import Completed, Crashed

    seen: list = []
    async with get_client() as client:
        target = await client.read_deployment_by_name(deployment)
        for _ in range(600):
            runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=[target.id])))
            for run in sorted(runs, key=lambda r: r.created):
                if run.id in {r.id for r in seen}:
                    continue
                seen.append(run)
                if len(seen) <= crashes:
                    await client.set_flow_run_state(run.id, Crashed(message=LOST), force=True)
                else:
                    outcome = StepOutcome(converter="text_extract", converter_version="9.9", duration_s=0.1,
                                          metadata={"started": len(seen)})
                    store.put_bytes(json.dumps({"result": outcome.to_dict()}).encode(), run.parameters["outcome_key"])
                    await client.set_flow_run_state(run.id, Completed(), force=True)
                    return seen
            if len(seen) > INFRA_RESTARTS:  # every start crashed: nothing more to serve
                return seen
            await asyncio.sleep(0.1)
    return seen


def _step(deployment: str, store: Store, label: str):
    request = StepRequest(converter="text_extract", input_key="originals/aa/aa", input_ext="txt",
                          output_prefix="derived/aa/text_extract")
    return run_on_pool("text_extract", label, request, store=store, cache_key=f"text_extract-9.9-{label}",
                       file_id="a" * 64, attempt=1, timeout_s=120, poll_s=0.5, deployment=deployment)


def test_a_step_whose_worker_was_lost_is_started_again_within_its_attempt(deployment, tmp_path):
    store = Store(StorageConfig(basepath=str(tmp_path)))

    async def scene():
        return await asyncio.gather(_step(deployment, store, "lost-twice"), _play_worker(deployment, store, crashes=2))

    outcome, runs = asyncio.run(scene())
    assert outcome.metadata == {"started": 3}  # the third start's outcome: the crashes cost no retry
    assert len(runs) == 3 and len({r.idempotency_key for r in runs}) == 3
    assert runs[0].idempotency_key.endswith(":1") and runs[2].idempotency_key.endswith(":1-r2")
    assert len({r.parameters["outcome_key"] for r in runs}) == 3  # a late writer never answers for another start


def test_a_step_lost_every_time_fails_its_attempt_as_tool_crashed(deployment, tmp_path):
    store = Store(StorageConfig(basepath=str(tmp_path)))

    async def scene():
        return await asyncio.gather(_step(deployment, store, "lost-always"),
                                    _play_worker(deployment, store, crashes=INFRA_RESTARTS + 1),
                                    return_exceptions=True)

    error, runs = asyncio.run(scene())
    assert isinstance(error, ToolCrashed), error
    assert f"crashed {INFRA_RESTARTS + 1} times in a row" in str(error) and "vm:4242" in str(error)
    assert len(runs) == INFRA_RESTARTS + 1


def test_a_step_re_attached_to_its_earlier_run_leaves_no_task_run_pending(deployment, tmp_path):
    """A resumed file's step finds its run by the idempotency key: the task run ``run_deployment``
    made for it again is deleted, not left ``Pending`` for good (the 3,000-file fault soak left two)."""
    from prefect import flow, get_client, task
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.context import FlowRunContext

    from fileflow.engine.pools import PLACEHOLDER_KEY_PREFIX, REATTACH_MARGIN_S

    store = Store(StorageConfig(basepath=str(tmp_path)))

    @task(name="ocr-step")
    async def step() -> StepOutcome:
        return await _step(deployment, store, "re-attached")

    @flow(name="pools-reattach")
    async def file_run():
        first = await asyncio.gather(step(), _play_worker(deployment, store, crashes=0))
        await asyncio.sleep(REATTACH_MARGIN_S + 1)  # the resumed attempt comes later
        again = await step()  # same file, step, attempt: the same idempotency key
        return FlowRunContext.get().flow_run.id, first[0], again, first[1]

    async def placeholders(flow_run_id):
        async with get_client() as client:
            tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        return [t for t in tasks if t.task_key.startswith(PLACEHOLDER_KEY_PREFIX)]

    flow_run_id, first, again, runs = asyncio.run(file_run())
    assert len(runs) == 1 and first.metadata == again.metadata == {"started": 1}  # one run, its outcome twice
    left = asyncio.run(placeholders(flow_run_id))
    assert [t.state.type.value for t in left] == ["COMPLETED"], [(t.id, t.state) for t in left]
    assert left[0].state.state_details.child_flow_run_id == runs[0].id
