"""Create what the distributed mode needs on a Prefect server, idempotently.

1. the work pools: ``fileflow-mediator`` and ``converter-<name>`` for every registered
   converter (process pools), and the Kubernetes pools of ``K8S_POOLS`` (type ``kubernetes``,
   base job template from this folder; creating one needs no prefect-kubernetes here, only the
   worker that serves it does). Existing pools are left as they are, so an operator's pause or
   concurrency limit survives a re-run;
2. on every pool a ``reprocess`` work queue served after the pool's others (priority 100,
   one run at a time), and fileflow's global concurrency limits (``fileflow-active-files``,
   ``fileflow-reprocess``, ``fileflow-reprocess-rate``, ``fileflow-converter-<name>``); existing
   ones are left as they are (see fileflow/ops/limits.py). ``FILEFLOW_SETUP_LIMITS`` (JSON, set by
   the Helm chart's setup hook) adds or replaces limits by name: ``{"fileflow-active-files":
   null, "fileflow-converter-ocr": 200}`` creates no active-files limit (no cap) and an ocr cap
   of 200 (the pool's maxReplicaCount), so that a limit never stops KEDA from scaling;
3. the deployments of ``prefect.yaml`` (``prefect deploy --all``, which updates in place);
4. the webhook automation of older setups paused (the webhook now goes through the callback
   outbox, docs/callbacks.md; see notify.py);
5. the liveness automations: a run without heartbeats is marked Crashed, a crashed router run
   is resumed (see liveness.py and docs/reliability.md).

Run ``python -m deployments.setup`` with ``PREFECT_API_URL`` pointing at the server; running it
twice changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import converters
from fileflow.names import K8S_POOLS, MEDIATOR_POOL, pool_name

ROOT = Path(__file__).resolve().parents[1]

#: Kubernetes work pools (one Job per flow run, served by a Prefect Kubernetes worker in a
#: cluster): name -> base job template. See prefect.yaml (video_transcode-k8s).
K8S_POOL_TEMPLATES: dict[str, dict] = {
    name: json.loads((ROOT / "deployments" / "k8s-video-job-template.json").read_text()) for name in K8S_POOLS
}


def pool_names() -> list[str]:
    return [MEDIATOR_POOL, *(pool_name(c) for c in converters.BUILTINS)]


async def ensure_pools() -> list[str]:
    """Create the missing work pools; the names of those created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    created = []
    async with get_client() as client:
        for name in pool_names():
            try:
                await client.read_work_pool(name)
            except ObjectNotFound:
                await client.create_work_pool(
                    WorkPoolCreate(name=name, type="process", base_job_template=template)
                )
                created.append(name)
        for name, k8s_template in K8S_POOL_TEMPLATES.items():
            try:
                await client.read_work_pool(name)
            except ObjectNotFound:
                await client.create_work_pool(
                    WorkPoolCreate(name=name, type="kubernetes", base_job_template=k8s_template)
                )
                created.append(name)
    return created


def deploy(env: dict[str, str] | None = None) -> None:
    """Apply prefect.yaml from the project root (its working directory becomes the pull step)."""
    cmd = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file", "prefect.yaml"]
    result = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"prefect deploy failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def limit_specs(env: dict[str, str] | None = None) -> list:
    """The limits to create when missing: fileflow's defaults (reprocessing's), with
    ``FILEFLOW_SETUP_LIMITS`` (a JSON object name -> integer, or null for no limit at all) adding
    or replacing limits by name."""
    from fileflow.names import ACTIVE_FILES, converter_limit
    from fileflow.ops.limits import LimitSpec, default_limits

    raw = (os.environ if env is None else env).get("FILEFLOW_SETUP_LIMITS", "").strip()
    specs = {spec.name: spec for spec in default_limits()}
    if not raw:
        return list(specs.values())
    overrides = json.loads(raw)
    described = {ACTIVE_FILES: "uploaded files processed at once",
                 **{converter_limit(c): f"steps of converter {c} at once" for c in converters.BUILTINS}}
    known = set(specs) | set(described)
    if not isinstance(overrides, dict) or set(overrides) - known:
        raise ValueError(f"FILEFLOW_SETUP_LIMITS: a JSON object with names among {sorted(known)}, got {raw!r}")
    for name, value in overrides.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"FILEFLOW_SETUP_LIMITS: {name} must be an integer >= 0 or null, got {value!r}")
        if value is None:
            specs.pop(name, None)
        elif name in specs:
            spec = specs[name]
            specs[name] = LimitSpec(name, value, spec.description, spec.slot_decay_per_second)
        else:
            specs[name] = LimitSpec(name, value, described[name])
    return list(specs.values())


async def ensure_steering() -> tuple[list[str], list[str]]:
    """The reprocess queues and the limits; (pools given a queue, limits created)."""
    from prefect.client.orchestration import get_client

    from fileflow.ops.limits import ensure_limits, ensure_reprocess_queues

    specs = limit_specs()
    async with get_client() as client:
        queues = await ensure_reprocess_queues(client, [*pool_names(), *K8S_POOLS])
        return queues, await ensure_limits(client, specs) if specs else []


def apply(env: dict[str, str] | None = None) -> tuple[list[str], list[str], list[str]]:
    from deployments import liveness, notify

    created = asyncio.run(ensure_pools())
    queues, limits = asyncio.run(ensure_steering())
    deploy(env)
    asyncio.run(notify.ensure())
    asyncio.run(liveness.ensure())
    return created, queues, limits


if __name__ == "__main__":  # pragma: no cover
    made, queues, limits = apply()
    print(f"work pools created: {', '.join(made) or 'none (all existed)'}; deployments applied")
    print(f"reprocess queues created on {len(queues)} pools; limits created: {', '.join(limits) or 'none'}")
