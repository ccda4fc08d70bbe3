"""Steps on converter work pools: the ``pool`` placement of a converter.

The mediator starts the converter's deployment with ``run_deployment`` and an idempotency key
made of the file, the step's cache key and the attempt, so a restarted mediator re-attaches to
the run it already started instead of starting a second one. The run's outcome (result or
typed error) comes back through storage, at a key under ``tmp/`` (expired by the bucket's
lifecycle rule). A Crashed run (segfault past the child, worker killed) is a ``ToolCrashed``,
retried by the step task like any transient failure.

Waiting: ``run_deployment``'s own wait polls at a fixed interval (5 s by default). Here the run
is created without waiting, then read back with an adaptive poll that starts at
``FIRST_POLL_S`` and grows by half each time up to ``poll_s``: a step of a few hundred
milliseconds is seen finished within tens of milliseconds, while a long video step costs one
read every ``poll_s``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from prefect.client.orchestration import get_client
from prefect.deployments import arun_deployment

from blocks.storage import Store
from fileflow.errors import ToolCrashed, ToolError, ToolTimeout, rebuild

DEPLOYMENT_FLOW = "converter-step"
FIRST_POLL_S = 0.05


def pool_name(converter: str) -> str:
    return f"converter-{converter}"


def deployment_name(converter: str) -> str:
    return f"{DEPLOYMENT_FLOW}/{converter}"


async def run_on_pool(
    converter: str,
    label: str,
    payload: dict[str, Any],
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
) -> dict[str, Any]:
    outcome_key = f"tmp/steps/{cache_key}-{attempt}.json"
    flow_run = await arun_deployment(
        deployment or deployment_name(converter),
        parameters={
            "converter": converter,
            "label": label,
            "payload": {k: v for k, v in payload.items() if k != "storage"},
            "outcome_key": outcome_key,
        },
        idempotency_key=f"{file_id}:{converter}:{cache_key}:{attempt}" + (f":{scope}" if scope else ""),
        flow_run_name=f"{converter}:{label}",  # named while it waits, not only once it starts
        work_queue_name=work_queue_name,  # None: the deployment's own (default) queue
        timeout=0,
        tags=[f"converter:{converter}"],
    )
    flow_run = await _wait(flow_run, timeout_s=timeout_s, poll_s=poll_s)
    state = flow_run.state
    if state is None or not state.is_final():
        raise ToolTimeout(
            f"the step on pool {pool_name(converter)} did not finish within {timeout_s:g} s "
            f"(run {flow_run.name} is {state.name if state else 'unknown'})"
        )
    if state.is_crashed():
        raise ToolCrashed(f"the step's run {flow_run.name} on {pool_name(converter)} crashed: {state.message}")
    record = None
    if await asyncio.to_thread(store.exists, outcome_key):
        record = json.loads(await asyncio.to_thread(store.get_bytes, outcome_key))
    if state.is_completed() and record and "result" in record:
        return record["result"]
    if record and "error" in record:
        raise rebuild(record["error"]["type"], record["error"]["message"])
    raise ToolError(f"the step's run {flow_run.name} ended {state.name}: {state.message}")


async def _wait(flow_run, *, timeout_s: float, poll_s: float):
    """Read the run back until it is final or ``timeout_s`` passed; an adaptive poll."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    interval = min(FIRST_POLL_S, poll_s)
    async with get_client() as client:
        while not (flow_run.state and flow_run.state.is_final()) and loop.time() < deadline:
            await asyncio.sleep(min(interval, max(0.0, deadline - loop.time())))
            flow_run = await client.read_flow_run(flow_run.id)
            interval = min(interval * 1.5, poll_s)
    return flow_run
