"""Steps on converter work pools: the ``pool`` placement of a converter.

The mediator starts the converter's deployment with ``run_deployment`` and an idempotency key
made of the file, the step's cache key and the attempt, so a restarted mediator re-attaches to
the run it already started instead of starting a second one. The run's outcome (result or
typed error) comes back through storage, at a key under ``tmp/`` (expired by the bucket's
lifecycle rule). A Crashed run (segfault past the child, worker killed) is a ``ToolCrashed``,
retried by the step task like any transient failure.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from prefect.deployments import arun_deployment

from blocks.storage import Store
from fileflow.errors import ToolCrashed, ToolError, ToolTimeout, rebuild

DEPLOYMENT_FLOW = "converter-step"


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
) -> dict[str, Any]:
    outcome_key = f"tmp/steps/{cache_key}-{attempt}.json"
    flow_run = await arun_deployment(
        deployment_name(converter),
        parameters={
            "converter": converter,
            "label": label,
            "payload": {k: v for k, v in payload.items() if k != "storage"},
            "outcome_key": outcome_key,
        },
        idempotency_key=f"{file_id}:{converter}:{cache_key}:{attempt}",
        flow_run_name=f"{converter}:{label}",  # named while it waits, not only once it starts
        timeout=timeout_s,
        poll_interval=poll_s,
        tags=[f"converter:{converter}"],
    )
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
