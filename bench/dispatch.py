"""Step dispatch time, side by side in one run: the same no-work step (``inspect`` on an 8-byte
file) run

- ``local``: in a warm child process of this process (the embedded default's placement);
- ``warm``: on pool ``converter-inspect``, served by the stack's warm worker (``fileflow.server.worker``);
- ``process``: on a pool of its own served by Prefect's process worker
  (``prefect worker start --type process``, with fileflow's 1 s query interval), which the
  benchmark creates and stops itself.

The three are interleaved (one of each per round), so a busy machine slows all of them alike;
the report gives medians, 95th percentiles and the ratios of the medians.

Needs a stack: ``fileflow up`` first (its API URL and storage are read from its stack.json).
Usage: ``.venv/bin/python bench/dispatch.py [--home .fileflow/stack] [-n 20] [--json out.json]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROCESS_POOL = "bench-dispatch-process"


def stats(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]
    return {"median_ms": round(statistics.median(xs) * 1000, 1), "p95_ms": round(p95 * 1000, 1),
            "min_ms": round(xs[0] * 1000, 1), "max_ms": round(xs[-1] * 1000, 1), "n": len(xs)}


async def ensure_process_pool() -> None:
    """A process pool with a converter-step deployment for Prefect's own worker."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    async with get_client() as client:
        try:
            await client.create_work_pool(WorkPoolCreate(
                name=PROCESS_POOL, type="process", base_job_template=ProcessWorker.get_default_base_job_template()))
        except ObjectAlreadyExists:
            pass
        flow_id = await client.create_flow_from_name("converter-step")
        await client.create_deployment(flow_id=flow_id, name=PROCESS_POOL, work_pool_name=PROCESS_POOL,
                                       entrypoint="flows/step.py:converter_step", path=str(ROOT))


#: where a pool step's time goes, by the server's state timestamps: the mediator creating the
#: run, a worker claiming it (Pending), starting it (Running), the step itself, and the mediator
#: noticing its end (woken by the end event or its own read)
PHASES = ("create", "claim", "start", "run", "notice")


async def phases_of(name: str, started_at: float, took: float) -> dict[str, float]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    async with get_client() as client:
        run = (await client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name]))))[0]
        at = {s.type.value: s.timestamp.timestamp() for s in await client.read_flow_run_states(run.id)}
    created = run.created.timestamp()
    return {"create": created - started_at, "claim": at["PENDING"] - created, "start": at["RUNNING"] - at["PENDING"],
            "run": at["COMPLETED"] - at["RUNNING"], "notice": started_at + took - at["COMPLETED"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", type=Path, default=Path(".fileflow/stack"))
    parser.add_argument("-n", type=int, default=20, help="rounds (one step of each kind per round)")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args()
    state = json.loads((args.home / "stack.json").read_text())
    os.environ["PREFECT_API_URL"] = state["api_url"]
    if state.get("storage_path"):
        os.environ["FILEFLOW_STORAGE_PATH"] = state["storage_path"]

    from fileflow.engine.pools import run_on_pool
    from fileflow.engine.step import StepRequest
    from blocks.storage import Store, original_key
    from converters.inspect import sha256_of
    from fileflow.engine.isolation import ChildPool
    from fileflow.settings import PipelineSettings, StorageSettings
    from fileflow.server.stack import WORKER_ENV

    storage = StorageSettings().config()
    store = Store(storage)
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / "tiny.txt"
        sample.write_text("dispatch")
        digest = sha256_of(sample)
        store.put_file(sample, original_key(digest))
    payload = StepRequest(converter="inspect", storage=storage, input_key=original_key(digest), input_ext="bin",
                          output_prefix=f"derived/{digest}/inspect")
    poll = PipelineSettings().pool_poll_s

    asyncio.run(ensure_process_pool())
    log = open(args.home / "logs" / "bench-process-worker.log", "ab")
    worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--type", "process", "--pool",
                               PROCESS_POOL], env={**os.environ, **WORKER_ENV}, cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)

    phases: dict[str, list[dict[str, float]]] = {"warm": [], "process": []}

    async def on_pool(deployment: str, kind: str | None = None) -> float:
        label = f"bench-{time.time_ns()}"
        started_at, started = time.time(), time.perf_counter()
        await run_on_pool("inspect", label, payload, store=store, cache_key=label,
                          file_id=digest, attempt=1, timeout_s=300, poll_s=poll, deployment=deployment)
        took = time.perf_counter() - started
        if kind:
            phases[kind].append(await phases_of(f"inspect:{label}", started_at, took))
        return took

    async def measure() -> dict[str, list[float]]:
        times: dict[str, list[float]] = {"local": [], "warm": [], "process": []}
        with ChildPool(1) as children:
            # one of each first, not counted: a child, the worker's child, Prefect's worker start
            await children.acall("fileflow.engine.execute:run_step", payload, timeout_s=60, memory_mb=1024)
            await on_pool("converter-step/inspect")
            await on_pool(f"converter-step/{PROCESS_POOL}")
            for _ in range(args.n):
                started = time.perf_counter()
                await children.acall("fileflow.engine.execute:run_step", payload, timeout_s=60, memory_mb=1024)
                times["local"].append(time.perf_counter() - started)
                times["warm"].append(await on_pool("converter-step/inspect", "warm"))
                times["process"].append(await on_pool(f"converter-step/{PROCESS_POOL}", "process"))
        return times

    try:
        times = asyncio.run(measure())
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:  # Prefect's worker can take long to stop on a busy machine
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(30)
    figures = {name: stats(values) for name, values in times.items()}
    breakdown = {kind: {phase: round(statistics.median(r[phase] for r in rows) * 1000, 1) for phase in PHASES}
                 for kind, rows in phases.items() if rows}
    print(f"steps measured: {args.n} of each, interleaved; load average {os.getloadavg()[0]:.1f} at the end")
    for name, label in (("local", "local (warm child process)"), ("warm", "pool, warm worker"),
                        ("process", "pool, Prefect process worker")):
        f = figures[name]
        print(f"{label:32s} median {f['median_ms']:8.1f} ms   p95 {f['p95_ms']:8.1f} ms   min {f['min_ms']:8.1f} ms")
    ratio_warm = figures["warm"]["median_ms"] / figures["local"]["median_ms"]
    ratio_process = figures["process"]["median_ms"] / figures["warm"]["median_ms"]
    print(f"warm pool / local median: {ratio_warm:.1f}x; process pool / warm pool median: {ratio_process:.1f}x")
    for kind, medians in breakdown.items():
        print(f"{kind} pool, median ms by phase: " + ", ".join(f"{p} {medians[p]:.0f}" for p in PHASES))
    if args.json:
        args.json.write_text(json.dumps({"figures": figures, "phases_median_ms": breakdown, "raw_s": times,
                                         "load_average": os.getloadavg()}, indent=2))


if __name__ == "__main__":
    main()
