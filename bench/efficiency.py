"""Item 1, efficiency: the price of the mediator on a mixed corpus.

Per round, a fresh deterministic corpus (``common.MIX`` times ``--scale``: pictures, PDFs,
office documents, text, a drawing, a video, an archive; numbered past the previous rounds so
nothing is a cache hit) is processed three ways, in an order that rotates every round. The
corpus is ``light`` (``fileflow.testing.samplegen.corpus``: test-sized files, where the converters cost
least and any price per file weighs most) or ``realistic`` (``bench/realistic.py``: the sizes
users upload: 12-megapixel photos, 12-page PDFs, 10-second 720p videos):

- ``direct``: ``bench/direct.py``, the same converter functions in a process pool of the same
  size as the mediator's child pool, no orchestration (the baseline);
- ``embedded``: ``fileflow process`` (Prefect on SQLite, child processes here);
- ``embedded-postgres`` (``postgres=True``): the same on a fresh PostgreSQL database
  (``PREFECT_API_DATABASE_CONNECTION_URL``): what SQLite's "database is locked" answers cost;
- ``distributed``: ``fileflow submit`` of every file to a running stack (PostgreSQL, one warm
  worker), timed until every router run is final.

Reported: wall times, their ratios to ``direct`` in the same round (median and spread over the
rounds), and the CPU seconds each way used (this process's waited children; the stack's
processes through the sampler).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CORPORA, MIX, PG, ROOT, ProcSampler, StackSampler, make_files, stats


def _timed(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, float, int]:
    """(wall s, CPU s of the command's whole process tree, exit code).

    The CPU is sampled from /proc every 0.2 s over the tree (each process's own time, at its
    last sample): the waited-children count of ``getrusage`` misses what the command's
    children started and never waited for (the converters' warm children, their fork server,
    Prefect's embedded server), which is most of the embedded way's converter work."""
    started = time.perf_counter()
    with open(log, "ab") as fh, ProcSampler({}, interval_s=0.2) as sampler:
        proc = subprocess.Popen(["nice", "-n", "5", *cmd], env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
        sampler.add_root("run", proc.pid)
        code = proc.wait()
    return time.perf_counter() - started, sampler.cpu_seconds().get("run", 0.0), code


def run_direct(corpus: Path, out: Path, work: Path) -> dict:
    wall, cpu, code = _timed([sys.executable, str(ROOT / "bench" / "direct.py"), str(corpus), "--out", str(out)],
                             dict(os.environ), work / "direct.log")
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 2), "exit": code}


def run_embedded(corpus: Path, out: Path, work: Path, database_url: str | None = None) -> dict:
    env = {**os.environ, "PREFECT_HOME": str(work / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    wall, cpu, code = _timed([str(Path(sys.executable).parent / "fileflow"), "process", str(corpus), "--out", str(out)],
                             env, work / ("embedded-postgres.log" if database_url else "embedded.log"))
    manifests = list((out / "manifests").glob("*.json"))
    failed = sum(json.loads(p.read_text())["status"] != "completed" for p in manifests)
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 2), "exit": code, "manifests": len(manifests),
            "failed": failed}


def run_distributed(corpus: Path, stack) -> dict:
    from blocks.storage import StorageConfig, Store
    from fileflow.ops.submit import submit, wait_for

    store = Store(StorageConfig(kind="local", basepath=str(stack.storage_path.resolve())))
    files = sorted(str(p) for p in corpus.iterdir())
    with StackSampler(stack.processes) as sampler:
        started = time.perf_counter()

        async def go():
            runs = await submit(files, store)
            return await wait_for(runs, store, timeout_s=1800)

        manifests = asyncio.run(go())
        wall = time.perf_counter() - started
    return {"wall_s": round(wall, 3), "cpu_s": round(sum(sampler.cpu_seconds().values()), 2),
            "cpu_s_by_role": sampler.cpu_seconds(), "manifests": len(manifests),
            "failed": sum(m["status"] != "completed" for m in manifests)}


PG_DATABASE = "bench_efficiency_embedded"


def run(work: Path, *, rounds: int, scale: int, stack=None, postgres: bool = False, corpus: str = "light") -> dict:
    """``rounds`` rounds at ``scale`` times the mix of ``corpus``; ``stack`` adds the distributed way,
    ``postgres`` the embedded way on PostgreSQL (a fresh database, dropped after)."""
    if corpus not in CORPORA:
        raise ValueError(f"corpus {corpus!r}: one of {', '.join(CORPORA)}")
    work.mkdir(parents=True, exist_ok=True)
    counts = {k: v * scale for k, v in MIX.items()}
    per_round = sum(counts.values())
    pg_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{PG_DATABASE}" if postgres else None
    if postgres:
        subprocess.run(["dropdb", *PG, "--if-exists", PG_DATABASE], check=True, capture_output=True)
        subprocess.run(["createdb", *PG, PG_DATABASE], check=True, capture_output=True)
    try:
        return _run(work, rounds, counts, per_round, stack, pg_url, corpus)
    finally:
        if postgres:
            subprocess.run(["dropdb", *PG, "--if-exists", PG_DATABASE], capture_output=True)


def _run(work: Path, rounds: int, counts: dict, per_round: int, stack, pg_url: str | None, corpus: str) -> dict:
    # warm-up, not counted: Prefect's first start on a fresh PREFECT_HOME (~15 s), first imports
    warm = make_files(work / "warmup", {"text": 1}, offset=90_000)[0].parent
    run_embedded(warm, work / "warmup-out", work)
    if pg_url:  # and the PostgreSQL database's migration to Prefect's schema
        run_embedded(warm, work / "warmup-out-postgres", work, pg_url)
    ways = (["direct", "embedded"] + (["embedded-postgres"] if pg_url else [])
            + (["distributed"] if stack is not None else []))
    raw = []
    for r in range(rounds):
        folder = work / f"corpus-{corpus}-{r}"
        shutil.rmtree(folder, ignore_errors=True)
        make_files(folder, counts, offset=1000 + r * per_round, corpus=corpus)
        order = ways[r % len(ways):] + ways[:r % len(ways)]
        entry = {"round": r, "order": order}
        for way in order:
            out = work / f"out-{corpus}-{way}-{r}"
            shutil.rmtree(out, ignore_errors=True)
            print(f"  efficiency round {r}: {way} ...", flush=True, file=sys.stderr)
            if way == "direct":
                entry[way] = run_direct(folder, out, work)
            elif way == "embedded":
                entry[way] = run_embedded(folder, out, work)
            elif way == "embedded-postgres":
                entry[way] = run_embedded(folder, out, work, pg_url)
            else:
                entry[way] = run_distributed(folder, stack)
            print(f"    {way}: {entry[way]['wall_s']:.1f} s", flush=True, file=sys.stderr)
        raw.append(entry)
    summary = {"corpus": corpus, "files_per_round": per_round, "mix": counts, "rounds": rounds, "ways": ways,
               "corpus_bytes_per_round": sum(p.stat().st_size for p in (work / f"corpus-{corpus}-0").iterdir()),
               "raw": raw}
    for way in ways:
        summary[f"{way}_wall_s"] = stats([e[way]["wall_s"] for e in raw])
        summary[f"{way}_cpu_s"] = stats([e[way]["cpu_s"] for e in raw])
        if way != "direct":
            summary[f"{way}_ratio"] = stats([e[way]["wall_s"] / e["direct"]["wall_s"] for e in raw])
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=Path(".bench/efficiency"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=int, default=1, help="multiplies the mix (14 files at 1)")
    parser.add_argument("--postgres", action="store_true",
                        help="also the embedded way on PostgreSQL at 127.0.0.1:5432 (a database of its own)")
    parser.add_argument("--corpus", choices=CORPORA, default="light",
                        help="light: test-sized files; realistic: the sizes users upload (bench/realistic.py)")
    args = parser.parse_args()
    print(json.dumps(run(args.work, rounds=args.rounds, scale=args.scale, postgres=args.postgres, corpus=args.corpus),
                     indent=2))


if __name__ == "__main__":
    main()
