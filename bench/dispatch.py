"""Step dispatch time: the same no-work step (``inspect`` on a tiny file) run locally in a warm
child process and on its converter pool, side by side in one run.

Needs a stack: ``fileflow up`` first (its API URL and storage are read from its stack.json).
Usage: ``.venv/bin/python bench/dispatch.py [--home .fileflow/stack] [-n 10]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", type=Path, default=Path(".fileflow/stack"))
    parser.add_argument("-n", type=int, default=10)
    args = parser.parse_args()
    state = json.loads((args.home / "stack.json").read_text())
    os.environ["PREFECT_API_URL"] = state["api_url"]
    os.environ["FILEFLOW_STORAGE_PATH"] = state["storage_path"]

    from blocks.storage import Store, original_key
    from converters.inspect import sha256_of
    from fileflow.isolation import ChildPool
    from fileflow.pools import run_on_pool
    from fileflow.settings import PipelineSettings, StorageSettings

    storage = StorageSettings().config()
    store = Store(storage)
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / "tiny.txt"
        sample.write_text("dispatch")
        digest = sha256_of(sample)
        store.put_file(sample, original_key(digest))
    payload = {"converter": "inspect", "storage": storage.to_dict(), "input_key": original_key(digest),
               "input_ext": "bin", "output_prefix": f"derived/{digest}/inspect", "options": {}}
    poll = PipelineSettings().pool_poll_s

    async def measure() -> tuple[list[float], list[float]]:
        local, pool = [], []
        with ChildPool(1) as children:
            await children.acall("fileflow.execute:run_step", payload, timeout_s=60, memory_mb=1024)  # warm
            for i in range(args.n):
                t = time.perf_counter()
                await children.acall("fileflow.execute:run_step", payload, timeout_s=60, memory_mb=1024)
                local.append(time.perf_counter() - t)
                t = time.perf_counter()
                await run_on_pool("inspect", "bench", payload, store=store, cache_key=f"bench-{time.time_ns()}",
                                  file_id=digest, attempt=1, timeout_s=300, poll_s=poll)
                pool.append(time.perf_counter() - t)
        return local, pool

    local, pool = asyncio.run(measure())

    def stats(xs: list[float]) -> str:
        xs = sorted(xs)
        p95 = xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]
        return f"median {statistics.median(xs) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, min {xs[0] * 1000:.0f} ms"

    print(f"steps measured: {args.n} each, interleaved")
    print(f"local (warm child process): {stats(local)}")
    print(f"pool  (converter-inspect):  {stats(pool)}")
    print(f"pool / local median ratio: {statistics.median(pool) / statistics.median(local):.0f}x")


if __name__ == "__main__":
    main()
