"""Soak: many light files through one warm mediator, its memory and threads sampled over time.

A mediator runs for months: what it keeps per file must not grow with the files it has seen.
``fileflow up`` on a PostgreSQL database of its own (light steps in the mediator's warm
children, as designed) takes ``--files`` distinct small text files, submitted in waves of
``--wave`` (so that the mediator is never handed more than it holds at once), and after every
``--every`` finished files the warm mediator process (the worker under its keeper, without its
children) is sampled: RSS and threads from /proc. The figure of merit is its RSS after all
files against its RSS after the first ``--every``: within 10 % is flat.

    .venv/bin/python bench/soak.py --files 10000 --every 1000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from common import count_manifests, emit, make_files, stack


def _mediator_worker(keeper: int) -> int | None:
    """The warm mediator itself: the child of its supervisor (fileflow/server/supervise.py)."""
    for task in Path(f"/proc/{keeper}/task").iterdir():
        children = (task / "children").read_text().split()
        if children:
            return int(children[0])
    return None


def _status(pid: int) -> dict[str, int]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss_kib": int(fields["VmRSS"].split()[0]), "threads": int(fields["Threads"])}


def run(work: Path, *, files: int = 10_000, every: int = 1_000, wave: int = 200, timeout_s: float = 4 * 3600) -> dict:
    from blocks.storage import StorageConfig, Store
    from fileflow.ops.submit import submit

    storage, corpus = work / "storage", work / "text"
    paths = make_files(corpus, {"text": files})
    samples: list[dict] = []
    started = time.monotonic()
    with stack(work / "home", db_name="bench_soak", storage=storage) as s:
        keeper = s.processes["worker-mediator"]
        store = Store(StorageConfig(kind="local", basepath=str(storage.resolve())))
        next_sample = every
        for first in range(0, files, wave):
            asyncio.run(submit([str(p) for p in paths[first:first + wave]], store))
            while True:  # the wave drains before the next one; samples as files finish
                done = count_manifests(storage)
                while done >= next_sample:
                    worker = _mediator_worker(keeper)
                    if worker is not None:
                        samples.append({"files_done": done, "s": round(time.monotonic() - started, 1),
                                        "pid": worker, **_status(worker)})
                        print(f"  soak: {done} files, mediator {samples[-1]['rss_kib'] / 1024:.1f} MiB, "
                              f"{samples[-1]['threads']} threads", file=sys.stderr, flush=True)
                    next_sample += every
                if done >= min(first + wave, files) or time.monotonic() - started > timeout_s:
                    break
                time.sleep(1)
            if time.monotonic() - started > timeout_s:
                break
        done = count_manifests(storage)
    restarts = len({x["pid"] for x in samples}) - 1
    first, last = (samples[0], samples[-1]) if samples else (None, None)
    return {
        "files_in": files, "manifests_out": done, "wall_s": round(time.monotonic() - started, 1),
        "samples": samples, "mediator_restarts_seen": restarts,
        "rss_growth": round(last["rss_kib"] / first["rss_kib"], 3) if first else None,
        "threads_first_last": [first["threads"], last["threads"]] if first else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=1_000)
    parser.add_argument("--wave", type=int, default=200)
    parser.add_argument("--work", type=Path, default=Path(".bench/soak"))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    result = run(args.work.resolve(), files=args.files, every=args.every, wave=args.wave)
    emit(result, args.json)


if __name__ == "__main__":
    main()
