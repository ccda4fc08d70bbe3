"""Run-once converter pods do not pile up Prefect worker rows (issue 21).

Every ScaledJob pod runs `prefect worker start --pool converter-<name> --name converter-<name>
--run-once` (the chart's arguments, read from the rendered manifest here). Prefect keeps one
worker row per (pool, name), so 50 pods leave one row; with Prefect's default name (a new UUID
per process) they leave 50. The 50 workers are Prefect's own ProcessWorker run exactly as
`--run-once` runs it (``start(run_once=True)``), in this process to spare 50 interpreter starts;
one more is the real CLI with the chart's arguments.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(300)

POOL = "converter-ocr"
ROWS_POOL = "worker-rows-default-names"


def _chart_worker_args() -> list[str]:
    from tests.test_helm import MINIMAL, of_kind, render

    sj = next(s for s in of_kind(render(MINIMAL), "ScaledJob").values()
              if f"/pools/{POOL}" in s["spec"]["triggers"][0]["metadata"]["url"])
    return sj["spec"]["jobTargetRef"]["template"]["spec"]["containers"][0]["args"]


async def _run_once_workers(pool: str, count: int, name: str | None) -> int:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    async with get_client() as client:
        await client.create_work_pool(WorkPoolCreate(name=pool, type="process"), overwrite=True)
    for _ in range(count):
        kwargs = {"name": name} if name else {}
        await ProcessWorker(work_pool_name=pool, limit=1, **kwargs).start(run_once=True, printer=lambda *a, **k: None)
    async with get_client() as client:
        return len(await client.read_workers_for_work_pool(pool, limit=200))


@pytest.fixture
def cleanup(prefect_server):
    """The pools these tests make are removed afterwards (other tests count the session's pools)."""
    yield

    async def remove() -> None:
        from prefect.client.orchestration import get_client
        from prefect.exceptions import ObjectNotFound

        async with get_client() as client:
            for pool in (POOL, ROWS_POOL):
                try:
                    await client.delete_work_pool(pool)
                except ObjectNotFound:
                    pass

    asyncio.run(remove())


def test_fifty_run_once_pods_leave_one_worker_row(prefect_server, cleanup):
    args = _chart_worker_args()
    assert args[:3] == ["prefect", "worker", "start"] and "--run-once" in args
    name = args[args.index("--name") + 1]
    assert name == POOL and args[args.index("--pool") + 1] == POOL

    assert asyncio.run(_run_once_workers(POOL, 49, name)) == 1
    # the 50th: the real CLI, with the chart's own arguments
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "PREFECT_WORKER_QUERY_SECONDS": "1"}
    proc = subprocess.run([sys.executable, "-m", "prefect", *args[1:]], env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert asyncio.run(_run_once_workers(POOL, 0, None)) == 1


def test_without_a_stable_name_every_run_once_worker_leaves_a_row(prefect_server, cleanup):
    """What the chart's --name prevents (and what makes the test above able to fail)."""
    assert asyncio.run(_run_once_workers(ROWS_POOL, 50, None)) == 50
