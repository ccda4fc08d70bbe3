"""What one file costs the Prefect server: API calls by route, events, trigger evaluations, runs.

A ``fileflow up`` stack on a PostgreSQL database of its own, with the server's access log on
(``PREFECT_SERVER_LOGGING_LEVEL=INFO``: one line per API call), takes ``--files`` distinct small
text files through ``fileflow submit --wait`` (routed like any upload: ``inspect``, then
``text_extract`` and ``language``), once per placement:

- ``light-local``: the design's placement (light steps in the mediator's warm children);
- ``pool``: every step on its converter's pool (``FILEFLOW_PLACEMENT={}``).

Counted per file, between the first submit and the last manifest:

- API calls by method and route (ids folded to ``{id}``), from the access log; the calls an idle
  stack makes in as long a time (polls, heartbeats), measured first, are given beside them;
- events written, by name (Prefect's ``events`` table);
- trigger evaluations: for each automation, the events its trigger expects (or waits after),
  each of which Prefect's trigger service evaluates against it;
- flow runs and task runs created.

Only the stack's command line is used (``fileflow up/submit/down``), so ``--fileflow`` can point
at another checkout's console script and measure that checkout the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from common import emit

PG = ["-h", "127.0.0.1", "-U", "postgres"]
PLACEMENTS = {"light-local": None, "pool": "{}"}
ACCESS = re.compile(r'"(GET|POST|PATCH|PUT|DELETE) (\S+) HTTP/1\.[01]" (\d{3})')
WEBSOCKET = re.compile(r'"WebSocket (\S+)" \[accepted\]')
ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def route(path: str) -> str:
    return ID.sub("{id}", path.split("?", 1)[0])


def calls_in(log: Path, offset: int) -> Counter:
    """API calls in ``log`` after byte ``offset``, by ``METHOD route``."""
    with log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    found = Counter(f"{m[1]} {route(m[2])}" for m in ACCESS.finditer(text))
    found.update(f"WS {route(m[1])}" for m in WEBSOCKET.finditer(text))
    return found


def psql(db: str, sql: str) -> list[list[str]]:
    out = subprocess.run(["psql", *PG, "-d", db, "-At", "-F", "\t", "-c", sql], check=True, capture_output=True,
                         text=True).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def make_files(folder: Path, n: int, offset: int) -> list[Path]:
    """``n`` distinct small text files (the store is content-addressed: a repeat is a cache hit)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(offset, offset + n):
        path = folder / f"note-{i:05d}.txt"
        path.write_text(f"Note {i} of the server-calls bench.\nThe quarterly report lists {i * 7} invoices "
                        f"from {i % 13} suppliers, checked on day {i % 28 + 1}.\n")
        paths.append(path)
    return paths


def trigger_evaluations(db: str, events: Counter) -> dict[str, int]:
    """Per automation: how many of the events written its trigger expects or waits after."""
    found = {}
    for name, trigger in psql(db, "SELECT name, trigger::text FROM automation"):
        spec = json.loads(trigger)
        watched = set(spec.get("expect") or []) | set(spec.get("after") or [])
        if not watched:  # compound and sequence triggers: their parts
            for part in spec.get("triggers") or []:
                watched |= set(part.get("expect") or []) | set(part.get("after") or [])
        found[name] = sum(count for event, count in events.items()
                          if any(event == w or (w.endswith("*") and event.startswith(w[:-1])) for w in watched))
    return found


def measure(placement: str, files: int, fileflow: Path, work: Path, idle_s: float, timeout_s: float) -> dict:
    db = f"bench_calls_{placement.replace('-', '_')}"
    home, storage = work / f"home-{placement}", work / f"storage-{placement}"
    subprocess.run(["dropdb", *PG, "--if-exists", db], check=True, capture_output=True)
    subprocess.run(["createdb", *PG, db], check=True, capture_output=True)
    env = {**os.environ, "PREFECT_SERVER_LOGGING_LEVEL": "INFO",
           "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db}"}
    for own in ("PREFECT_API_URL", "FILEFLOW_STORAGE_PATH"):  # the stack's, from its stack.json
        env.pop(own, None)
    if PLACEMENTS[placement] is not None:
        env["FILEFLOW_PLACEMENT"] = PLACEMENTS[placement]
    cwd = fileflow.resolve().parents[2]  # <checkout>/.venv/bin/fileflow
    up = subprocess.run([str(fileflow), "up", "--home", str(home), "--port", str(free_port()),
                         "--exporter-port", str(free_port()), "--out", str(storage)],
                        env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    try:
        if up.returncode != 0:
            raise RuntimeError(f"fileflow up failed: {up.stdout[-2000:]}{up.stderr[-2000:]}")
        log = home / "logs" / "server.log"
        time.sleep(5)  # the workers' start-up calls are not the files'
        start = log.stat().st_size
        time.sleep(idle_s)
        idle = calls_in(log, start)
        before = log.stat().st_size
        base = {t: int(psql(db, f"SELECT count(*) FROM {t}")[0][0]) for t in ("flow_run", "task_run", "events")}
        paths = make_files(work / f"files-{placement}", files, offset=0)
        began = time.monotonic()
        api = {"PREFECT_API_URL": json.loads((home / "stack.json").read_text())["api_url"]}
        done = subprocess.run([str(fileflow), "submit", "--home", str(home), "--wait", *map(str, paths)],
                              env={**env, **api}, cwd=cwd, capture_output=True, text=True, timeout=timeout_s)
        wall = time.monotonic() - began
        if done.returncode != 0:
            raise RuntimeError(f"fileflow submit failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
        time.sleep(3)  # the last runs' final calls (states, events) reach the log
        calls = calls_in(log, before)
        after = {t: int(psql(db, f"SELECT count(*) FROM {t}")[0][0]) for t in ("flow_run", "task_run", "events")}
        events = Counter({e: int(n) for e, n in psql(
            db, f"SELECT event, count(*) FROM (SELECT event FROM events ORDER BY occurred DESC "
                f"LIMIT {after['events'] - base['events']}) AS new GROUP BY event")})
        evaluations = trigger_evaluations(db, events)
    finally:
        subprocess.run([str(fileflow), "down", "--home", str(home)], env=env, cwd=cwd, capture_output=True, timeout=120)
        subprocess.run(["dropdb", *PG, "--if-exists", db, "--force"], capture_output=True)
    window = wall + 3
    idle_in_window = sum(idle.values()) * window / idle_s
    per = lambda n: round(n / files, 2)  # noqa: E731
    return {
        "placement": placement, "files": files, "wall_s": round(wall, 1),
        "api_calls_per_file": per(sum(calls.values())),
        "idle_api_calls_per_file": per(idle_in_window),
        "api_calls_by_route_per_file": {r: per(n) for r, n in calls.most_common()},
        "events_per_file": per(sum(events.values())),
        "events_by_name_per_file": {e: per(n) for e, n in events.most_common()},
        "trigger_evaluations_per_file": {a: per(n) for a, n in sorted(evaluations.items())},
        "flow_runs_per_file": per(after["flow_run"] - base["flow_run"]),
        "task_runs_per_file": per(after["task_run"] - base["task_run"]),
    }


def run(work: Path, *, files: int = 20, placements: list[str] | None = None, fileflow: Path | None = None,
        before: Path | None = None, idle_s: float = 10.0, timeout_s: float = 1200.0) -> dict:
    """Each placement measured for this checkout (``fileflow``, default this interpreter's) and,
    with ``before``, for another checkout's console script right after it, side by side."""
    fileflow = fileflow or Path(sys.executable).parent / "fileflow"
    found: dict = {"files": files, "this": [], "before": [] if before else None,
                   "before_checkout": str(before.resolve().parents[2]) if before else None}
    for placement in placements or list(PLACEMENTS):
        found["this"].append(measure(placement, files, fileflow, work / "this" / placement, idle_s, timeout_s))
        if before:
            found["before"].append(measure(placement, files, before, work / "before" / placement, idle_s, timeout_s))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--placements", nargs="+", default=list(PLACEMENTS), choices=list(PLACEMENTS))
    parser.add_argument("--fileflow", type=Path, default=Path(sys.executable).parent / "fileflow",
                        help="the console script of the checkout to measure")
    parser.add_argument("--work", type=Path, default=Path(".bench/server_calls"))
    parser.add_argument("--idle-s", type=float, default=20.0)
    parser.add_argument("--timeout-s", type=float, default=1200.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    args.work = args.work.resolve()
    results = []
    for placement in args.placements:
        print(f"server calls: {placement}, {args.files} files", file=sys.stderr, flush=True)
        result = measure(placement, args.files, args.fileflow, args.work / placement, args.idle_s, args.timeout_s)
        results.append(result)
        print(f"  {result['api_calls_per_file']} API calls/file (idle stack {result['idle_api_calls_per_file']}), "
              f"{result['events_per_file']} events/file, {result['flow_runs_per_file']} flow runs/file, "
              f"{result['task_runs_per_file']} task runs/file", file=sys.stderr, flush=True)
    emit(results, args.json)


if __name__ == "__main__":
    main()
