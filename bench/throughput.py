"""Item 3, orchestration throughput, and item 5's memory of the stack's processes.

The distributed stack on a fresh PostgreSQL database, with 1, 2 and 4 warm workers per
converter pool, each time ``--files`` distinct small text files submitted at once (``fileflow
submit``). A text file is routed like every upload (``process-file`` flow: ``inspect``, then
the ``text`` subflow: ``text_extract`` then ``language``): three steps on the converter pools,
each a deployment run picked up by a warm worker, whose converter work is a few milliseconds
(measured: the steps' own ``duration_s`` from the manifests is reported next to the wall
time), so what is measured is the orchestration.

Figures: files per hour at steady state (completions between 20 % and 80 % of the batch, so
the stack's start and the last stragglers are left out) and over the whole batch; every file
must end with a manifest (count in = count out). Where the time goes: CPU seconds per file of
each process tree (server, mediator worker with its flow-run processes, converter workers,
the submitting client), sampled from ``/proc``; the largest one is the bottleneck on a machine
whose cores are all busy. Peak RSS of each (item 5) comes from the same sampler.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import resource
import shutil
import statistics
import sys
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, StackSampler, count_manifests, db_sessions, make_files, manifests_in, stack

import converters


def steady_rate(series: list[tuple[float, int]], total: int, low: float = 0.2, high: float = 0.8) -> float | None:
    """Files per second between the moments ``low`` and ``high`` of ``total`` were done."""
    first = next(((t, c) for t, c in series if c >= low * total), None)
    last = next(((t, c) for t, c in series if c >= high * total), None)
    if not first or not last or last[0] <= first[0]:
        return None
    return (last[1] - first[1]) / (last[0] - first[0])


def start_profiles(py_spy: str, roots: dict[str, int], folder: Path, seconds: int) -> list:
    """py-spy on each root (with its subprocesses) for ``seconds``: collapsed stacks per role."""
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    return [(role, folder / f"{role}.txt", subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--subprocesses", "--duration", str(seconds), "--rate", "50",
         "--nonblocking", "--format", "raw", "--output", str(folder / f"{role}.txt")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)) for role, pid in roots.items()]


INTERESTING = ("prefect/server/api/", "prefect/server/models/", "prefect/server/services/", "prefect/server/events/",
               "prefect/server/orchestration/", "prefect/runner/", "prefect/flow_engine", "prefect/task_engine",
               "prefect/workers/", "prefect/deployments/", "fileflow/", "flows/", "ssl.py", "source_to_code",
               "_compile_bytecode")


def summarise_profile(path: Path, top: int = 15) -> dict:
    """Share of samples per frame: leaf frames (where the CPU was), and the inclusive share of
    frames in Prefect's server API and models, its runner and engines, and fileflow's code."""
    leaf: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    if not path.exists():
        return {}
    for line in path.read_text().splitlines():
        stack_text, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        total += int(n)
        frames = [_frame(f) for f in stack_text.split(";")[1:]]  # the first is the process
        if frames:
            leaf[frames[-1]] = leaf.get(frames[-1], 0) + int(n)
        for name in set(frames):
            if any(k in name for k in INTERESTING):
                inclusive[name] = inclusive.get(name, 0) + int(n)
    if not total:
        return {}

    def rank(counts: dict[str, int]) -> list:
        return [(name, round(100 * c / total, 1)) for name, c in sorted(counts.items(), key=lambda kv: -kv[1])[:top]]

    return {"samples": total, "top_leaf": rank(leaf), "top_inclusive": rank(inclusive)}


def _frame(frame: str) -> str:
    """``func (…/site-packages/prefect/server/api/workers.py:123)`` -> ``func (prefect/server/api/workers.py)``."""
    func, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0].split("site-packages/")[-1].split("/lib/python3.11/")[-1]
    return f"{func} ({where.replace(str(ROOT) + '/', '')})"


#: where the steps of a text file run: ``pool`` every step on its converter pool; ``light-local``
#: the design's placement, what ``fileflow up`` does by default (``converters.design_placement``:
#: the light steps, all three of a text file's, in the mediator's warm child processes);
#: ``pool-certifi`` is ``pool`` with the Prefect clients of the stack's processes loading
#: certifi's CA bundle, Prefect's default, instead of the stack's one-certificate bundle
#: (``FILEFLOW_STACK_PLAIN_HTTP_CA=0``, docs/distributed.md): the price of those SSL contexts
#: ``light-local-2api`` is ``light-local`` on ``fileflow up --redis ... --server-workers 2``: the
#: server's API in two processes and its loop services in a third, sharing Redis;
#: ``pool-dbpool`` is ``pool`` with the server keeping 20 database connections instead of
#: Prefect's 5 (its 10 overflow connections are closed on return, so a busy server connects to
#: PostgreSQL again several times a second, each a backend start and asyncpg's type introspection);
#: ``light-local-2api-dbpool`` is ``light-local-2api`` with each of the server's processes keeping
#: 10 database connections instead of Prefect's 5 (``fileflow up`` sets 20 only for one process)
PLACEMENTS = {"pool": {}, "light-local": converters.design_placement(), "pool-certifi": {},
              "light-local-2api": converters.design_placement(), "pool-dbpool": {},
              "light-local-2api-dbpool": converters.design_placement()}
VARIANT_ENV = {"pool-certifi": {"FILEFLOW_STACK_PLAIN_HTTP_CA": "0"},
               "pool-dbpool": {"PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE": "20"},
               "light-local-2api-dbpool": {"PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE": "10"}}
#: the bench's own Redis database (emptied before each stack that uses it)
BENCH_REDIS_URL = "redis://127.0.0.1:6379/14"
VARIANT_STACK = {"light-local-2api": {"server_workers": 2, "redis_url": BENCH_REDIS_URL},
                 "light-local-2api-dbpool": {"server_workers": 2, "redis_url": BENCH_REDIS_URL}}


def run_one(work: Path, workers: int, files: int, offset: int, timeout_s: float, py_spy: str | None = None,
            profile_s: int = 60, idle_s: float = 15.0, mediator: str = "warm", placement: str = "pool",
            in_flight: int | None = None) -> dict:
    tag = f"{mediator}-w{workers}" + ("" if placement == "pool" else f"-{placement}") + (
        f"-f{in_flight}" if in_flight else "")
    env = {"FILEFLOW_PLACEMENT": json.dumps(PLACEMENTS[placement]), **VARIANT_ENV.get(placement, {})}
    before = {name: os.environ.get(name) for name in env}
    os.environ.update(env)  # the stack's processes inherit them
    try:
        result = _run_one(work, tag, workers, files, offset, timeout_s, py_spy, profile_s, idle_s, mediator, in_flight,
                          stack_args=VARIANT_STACK.get(placement, {}))
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return {"placement": placement, **result}


def _run_one(work: Path, tag: str, workers: int, files: int, offset: int, timeout_s: float, py_spy: str | None,
             profile_s: int, idle_s: float, mediator: str, in_flight: int | None = None,
             stack_args: dict | None = None) -> dict:
    """``in_flight``: the warm mediator takes up to that many files at once (``--mediator-limit``)
    and the active-files limit is raised to it (``fileflow limits set``, as an operator would).
    Files finish about as fast as the server starts them, so to have one mediator process hold
    that many the converter ``language`` (a text file's last step) is paused, as an operator
    does in an incident, until that many router runs are Running (or ``HOLD_S`` passed), then
    resumed; the peak of router runs Running is sampled."""
    from blocks.storage import StorageConfig, Store
    from fileflow.ops.submit import submit

    storage = work / f"storage-{tag}"
    corpus = work / f"text-{tag}"
    # a run is timed until its storage holds ``files`` manifests: an earlier run's storage (the same
    # --work and tag) would end it early, and its own files, made again, would be cache hits
    for left in (storage, corpus):
        shutil.rmtree(left, ignore_errors=True)
    paths = make_files(corpus, {"text": files}, offset=offset)
    db_name = "bench_throughput_" + tag.replace("-", "_")
    with stack(work / f"home-{tag}", workers=workers, db_name=db_name,
               storage=storage, mediator=mediator, mediator_limit=in_flight or 32, **(stack_args or {})) as s:
        if in_flight:
            raised = subprocess.run([str(Path(sys.executable).parent / "fileflow"), "limits", "set", "active-files",
                                     str(in_flight)], env={**os.environ, "PREFECT_API_URL": s.api_url},
                                    capture_output=True, text=True, timeout=120)
            if raised.returncode != 0:
                raise RuntimeError(f"fileflow limits set active-files {in_flight}: {raised.stderr[-500:]}")
            steer(s.api_url, "pause", HELD)
        store = Store(StorageConfig(kind="local", basepath=str(storage.resolve())))
        series: list[tuple[float, int]] = []
        running: list[int] = []
        held: dict = {}
        done = threading.Event()
        # the idle stack's own cost first: polls, heartbeats, event streams, with no work at all
        with StackSampler(s.processes) as idle:
            time.sleep(idle_s)
        idle_cpu = {role: round(v / idle_s, 3) for role, v in idle.cpu_seconds().items()}
        with StackSampler(s.processes) as sampler:
            self_cpu = resource.getrusage(resource.RUSAGE_SELF)
            redis_before = redis_server_cpu() if (stack_args or {}).get("redis_url") else None
            sessions_before = db_sessions(db_name)
            started = time.perf_counter()
            held_since = [started if in_flight else None]

            watch_errors: list[str] = []

            def hold_step() -> None:
                """Every 2 s while files are held: count them, end the hold when it is time. A
                saturated API may drop the count's request: that sample is skipped (and counted)."""
                try:
                    running.append(routers_running(s.api_url))
                except (OSError, http.client.HTTPException, ValueError) as exc:
                    held["api_errors"] = held.get("api_errors", 0) + 1
                    held["last_api_error"] = f"{type(exc).__name__}: {exc}"
                    if not running:
                        return
                now = time.perf_counter()
                if running[-1] > held.get("best", (-1, 0))[0]:
                    held["best"] = (running[-1], now)
                reason = ("reached" if running[-1] >= in_flight else "longest hold" if now - started > HOLD_S
                          else "plateau" if now - held["best"][1] > PLATEAU_S else None)
                if held_since[0] is not None and reason:
                    steer(s.api_url, "resume", HELD)  # a failure here is tried again 2 s later
                    held.update(peak=max(running), held_s=round(now - held_since[0], 1), resumed=reason)
                    held_since[0] = None

            def watch() -> None:
                try:
                    while not done.is_set():
                        series.append((time.perf_counter() - started, count_manifests(storage)))
                        if in_flight and len(series) % 4 == 1:
                            try:
                                hold_step()
                            except (RuntimeError, subprocess.SubprocessError) as exc:  # `fileflow limits resume` failed
                                held["resume_errors"] = held.get("resume_errors", 0) + 1
                                held["last_resume_error"] = str(exc)[-300:]
                        if series[-1][1] >= files or series[-1][0] > timeout_s:
                            break
                        time.sleep(0.5)
                except BaseException as exc:  # the run must not end as if it had finished
                    watch_errors.append(f"{type(exc).__name__}: {exc}")
                    raise

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            profiles = start_profiles(py_spy, {"server": s.processes["server"],
                                               "mediator": s.processes["worker-mediator"]},
                                      work / f"profile-{tag}", profile_s) if py_spy else []
            try:
                runs = asyncio.run(submit([str(p) for p in paths], store))
                submitted_s = time.perf_counter() - started
                watcher.join()
            finally:  # interrupted (Ctrl-C) or failed: the watcher stops too, and the stack is stopped
                done.set()
            if watch_errors:
                raise RuntimeError(f"the watcher of the run stopped: {watch_errors[0]}")
            wall = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_SELF)
            redis_after = redis_server_cpu() if redis_before is not None else None
            sessions = db_sessions(db_name) - sessions_before
        done.set()
        for _, _, proc in profiles:
            proc.wait()
        manifests = manifests_in(storage)
    rate = steady_rate(series, files)
    steps = [st for m in manifests for st in m["steps"]]
    converter_s = sum(st.get("duration_s") or 0 for st in steps)
    cpu = sampler.cpu_seconds()
    cpu["submitter"] = round(after.ru_utime + after.ru_stime - self_cpu.ru_utime - self_cpu.ru_stime, 2)
    if redis_before is not None:  # the machine's Redis, outside the stack: its share of the work
        cpu["redis"] = round(redis_after - redis_before, 2)
    return {
        "mediator": mediator, "workers_per_pool": workers, "files_in": files, "runs_submitted": len(runs),
        "manifests_out": len(manifests), "completed": sum(m["status"] == "completed" for m in manifests),
        "wall_s": round(wall, 2), "submit_s": round(submitted_s, 2),
        "steady_files_per_hour": round(rate * 3600) if rate else None,
        "overall_files_per_hour": round(len(manifests) / wall * 3600) if wall else None,
        "steps": len(steps), "converter_s_total": round(converter_s, 2),
        "converter_ms_per_step_median": round(statistics.median([st.get("duration_s") or 0 for st in steps]) * 1000, 1)
        if steps else None,
        "db_sessions": sessions, "db_sessions_per_s": round(sessions / wall, 2) if wall else None,
        "idle_cpu_s_per_s": idle_cpu, "cpu_s": cpu, "cpu_s_per_file": {k: round(v / max(files, 1), 3) for k, v in cpu.items()},
        "memory": sampler.memory_mib(),
        **({"in_flight_limit": in_flight, "routers_running_peak": max(running, default=0),
            "held": {"converter": HELD, **{k: v for k, v in held.items() if k != "best"}}} if in_flight else {}),
        "profile": {role: summarise_profile(path) for role, path, _ in profiles},
        "series": [(round(t, 1), c) for t, c in series],
    }


#: the converter paused while the mediator fills up (``in_flight``), the longest pause, and how
#: long the count of held files may stay below its peak before the pause ends anyway (the
#: server saturates: the held runs' own heartbeats and polls take what starting more needs)
HELD, HOLD_S, PLATEAU_S = "language", 1800.0, 180.0


def redis_server_cpu() -> float:
    """CPU seconds used so far by this machine's redis-server processes (user + system)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, rest = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
        if name == "redis-server":
            total += (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    return total


def steer(api_url: str, verb: str, converter: str) -> None:
    """``fileflow limits pause|resume <converter>``, as an operator runs it."""
    done = subprocess.run([str(Path(sys.executable).parent / "fileflow"), "limits", verb, converter],
                          env={**os.environ, "PREFECT_API_URL": api_url}, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"fileflow limits {verb} {converter}: {done.stderr[-500:]}")
    print(f"    {verb}d {converter}", flush=True, file=sys.stderr)


def routers_running(api_url: str) -> int:
    """How many ``process-file`` runs are Running: the files one mediator holds at this moment."""
    body = {"flow_runs": {"tags": {"all_": ["upload"]}, "state": {"type": {"any_": ["RUNNING"]}}}}
    request = urllib.request.Request(f"{api_url}/flow_runs/count", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(json.loads(response.read()))


def configurations(workers: list[int], mediators: list[str],
                   placements: list[str] = ("pool",)) -> list[tuple[str, int, str]]:
    """The warm mediator with the first placement at every worker count; the other mediators and
    the other placements side by side at the first worker count."""
    out = [(m, w, placements[0]) for w in workers for m in mediators if m == mediators[0] or w == workers[0]]
    return out + [(mediators[0], workers[0], p) for p in placements[1:]]


def run(work: Path, *, workers: list[int], files: int, timeout_s: float = 3600, py_spy: str | None = None,
        on_result=None, mediators: list[str] = ("warm", "process"), placements: list[str] = ("pool",),
        in_flight: int | None = None) -> dict:
    """One run per configuration; ``on_result(partial)`` after each, so an interrupted run keeps its figures.

    The first mediator type (fileflow's warm mediator) runs at every worker count; the others
    (Prefect's process worker) and the other placements at the first worker count, in the same
    run, for the ratio."""
    work.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    for i, (mediator, w, placement) in enumerate(configurations(list(workers), list(mediators), list(placements))):
        print(f"  throughput: {mediator} mediator, {w} worker(s) per pool, placement {placement}, {files} files ...",
              flush=True, file=sys.stderr)
        try:
            result = run_one(work, w, files, offset=10_000 + i * files, timeout_s=timeout_s,
                             py_spy=py_spy if (w, placement) == (workers[0], placements[0]) else None,
                             mediator=mediator, placement=placement, in_flight=in_flight)
        except Exception as exc:
            print(f"    {mediator}/{w}/{placement} failed: {type(exc).__name__}: {exc}", flush=True, file=sys.stderr)
            continue
        print(f"    steady {result['steady_files_per_hour']} files/h, {result['manifests_out']}/{files} "
              f"manifests, CPU s/file {result['cpu_s_per_file']}, {result['db_sessions_per_s']} new database "
              f"sessions/s", flush=True, file=sys.stderr)
        results.append(result)
        if on_result:
            on_result({"files_per_run": files, "runs": results})
    return {"files_per_run": files, "runs": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=Path(".bench/throughput"))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--files", type=int, default=150)
    parser.add_argument("--mediators", nargs="+", default=["warm", "process"], choices=["warm", "process"],
                        help="mediator types: the first at every worker count, the others at the first")
    parser.add_argument("--placements", nargs="+", default=["pool"], choices=list(PLACEMENTS),
                        help="where a text file's steps run: the first everywhere, the others at the first worker count")
    parser.add_argument("--in-flight", type=int, help="files one warm mediator holds at once (its limit and the "
                        "active-files limit; default 32 and 64): item 5's mediator with 1,000 files in flight")
    parser.add_argument("--py-spy", help="path of py-spy: profile the server and mediator at the first worker count")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    figures = run(args.work, workers=args.workers, files=args.files, py_spy=args.py_spy, mediators=args.mediators,
                  placements=args.placements, in_flight=args.in_flight)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps({**figures, "runs": [{k: v for k, v in r.items() if k != "series"} for r in figures["runs"]]},
                     indent=2))


if __name__ == "__main__":
    main()
