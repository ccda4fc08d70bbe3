"""``converter-step``: one step run by a worker of the converter's own work pool.

The mediator starts it with ``run_deployment`` (deployment ``converter-step/<converter>`` on
pool ``converter-<converter>``) when the converter's placement is ``pool``. The step runs in a
child process here too, with the converter's timeout and memory limit, so a hang or a
memory hog ends as a typed failure and a segfault costs only the child; the outcome (result or
typed error) is written to storage under the key the mediator chose, because flow parameters
and states are visible to every operator and carry no file content and no credentials.
Storage is configured by the worker's own environment (``FILEFLOW_STORAGE_*``).
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import replace
from typing import Any

from prefect import flow

import converters
from fileflow.engine.isolation import ChildPool
from fileflow.engine.services import Services
from fileflow.engine.step import StepRequest
from fileflow.errors import FileflowError
from fileflow.names import STEP_FLOW
from fileflow.settings import PipelineSettings, StorageSettings


_shared_pool: ChildPool | None = None


def share_child_pool(pool: ChildPool | None) -> None:
    """Let the steps of this process use a warm child pool (the warm worker's) instead of a new one."""
    global _shared_pool
    _shared_pool = pool


@flow(name=STEP_FLOW, flow_run_name="{converter}:{label}", persist_result=False)
async def converter_step(converter: str, label: str, payload: dict[str, Any], outcome_key: str) -> dict:
    import asyncio

    from blocks.storage import Store

    # the module comes from this worker's own settings, never from the run's parameters
    settings = PipelineSettings()
    module = settings.module_of(converter)
    spec = converters.implementation(converter, module).SPEC
    storage = StorageSettings().config()
    request = replace(StepRequest.from_dict(payload), converter=module, storage=storage)
    store = Store(storage)
    with ExitStack() as stack:
        pool = _shared_pool or stack.enter_context(ChildPool(1))
        if spec.services:  # this machine's (e.g. its warm LibreOffice), else started for this step
            services = Services(settings, attach=True)
            stack.callback(services.close)
            request = request.with_options(await asyncio.to_thread(services.options, spec.services))
        try:
            outcome = await pool.acall(
                "fileflow.engine.execute:run_step", request, timeout_s=spec.timeout_s, memory_mb=spec.memory_mb
            )
        except FileflowError as exc:
            record = {"error": {"type": type(exc).__name__, "message": str(exc)}}
            await asyncio.to_thread(store.put_bytes, json.dumps(record).encode(), outcome_key)
            raise
    await asyncio.to_thread(store.put_bytes, json.dumps({"result": outcome.to_dict()}).encode(), outcome_key)
    return {"outcome_key": outcome_key, "duration_s": outcome.duration_s}
