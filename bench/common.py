"""What the benchmarks share: statistics, the machine, a distributed stack on a fresh
PostgreSQL database, distinct generated files, and a sampler of CPU time and memory per process.

The sampler reads ``/proc`` (no extra dependency): every ``interval_s`` it walks the process
tree under each root (the stack's server, mediator worker, warm workers ...) and keeps, per
role, the peak of the summed RSS, the peak RSS of any single process, and the CPU time of
every process it saw (user + system, the last value read before it exited, so a process
that lives shorter than one interval can be missed: say so where it matters).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/x.py` finds fileflow, fileflow.testing.samplegen ...

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def emit(result, json_path: Path | None) -> None:
    """Print a bench item's figures as JSON, and write them to ``json_path`` too when given."""
    text = json.dumps(result, indent=2)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(text)
    print(text)


def stats(xs: list[float], unit: float = 1.0) -> dict[str, float]:
    """Median, 95th percentile (nearest rank), min, max and n, in ``unit`` (1000 for ms)."""
    xs = sorted(xs)
    if not xs:
        return {"n": 0}
    p95 = xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]
    return {"median": round(statistics.median(xs) * unit, 3), "p95": round(p95 * unit, 3),
            "min": round(xs[0] * unit, 3), "max": round(xs[-1] * unit, 3), "n": len(xs)}


def machine() -> dict:
    mem_kb = int(next(line for line in open("/proc/meminfo") if line.startswith("MemTotal")).split()[1])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True)
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    return {"date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "cores": os.cpu_count(), "cpu": model, "ram_gib": round(mem_kb / 2**20, 1),
            "python": platform.python_version(), "commit": commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else ""),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


class _Sampler:
    """Calls ``sample()`` every ``interval_s`` seconds in a thread, between ``with`` and its end."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class LoadSampler(_Sampler):
    """The 1-minute load average, sampled while a benchmark runs (the machine is shared)."""

    def __init__(self, interval_s: float = 5.0) -> None:
        super().__init__(interval_s)
        self.values: list[float] = []

    def sample(self) -> None:
        self.values.append(os.getloadavg()[0])

    def summary(self) -> dict:
        return {"min": round(min(self.values), 2), "median": round(statistics.median(self.values), 2),
                "max": round(max(self.values), 2)} if self.values else {}


# ---------------------------------------------------------------------------------------
# CPU and memory per process tree
# ---------------------------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, float, int]]:
    """pid -> (parent pid, CPU seconds, RSS bytes) of every process we can read."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if fields[0] == "Z":
            continue
        # fields[1] = ppid; [11], [12] = utime, stime (ticks); [21] = rss (pages)
        table[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK, int(fields[21]) * PAGE)
    return table


def _tree(table: dict[int, tuple[int, float, int]], root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            found.append(pid)
            todo.extend(children.get(pid, ()))
    return found


class ProcSampler(_Sampler):
    """Peak RSS and CPU seconds per role, each role a process tree under a root pid."""

    def __init__(self, roots: dict[str, int], interval_s: float = 0.5) -> None:
        super().__init__(interval_s)
        self.roots = dict(roots)
        self.peak_rss: dict[str, int] = {r: 0 for r in roots}  # sum over the tree, at its peak
        self.peak_proc_rss: dict[str, int] = {r: 0 for r in roots}  # the largest single process
        self.peak_root_rss: dict[str, int] = {r: 0 for r in roots}  # the root process itself
        self.cpu: dict[str, dict[int, float]] = {r: {} for r in roots}  # role -> pid -> CPU s
        self.processes_seen: dict[str, int] = {r: 0 for r in roots}
        self.first_cpu: dict[str, float] | None = None  # CPU already used when sampling began
        self._lock = threading.Lock()

    def sample(self) -> None:
        table = _proc_table()
        with self._lock:
            for role, root in self.roots.items():
                pids = _tree(table, root)
                rss = sum(table[p][2] for p in pids)
                if root in table:
                    self.peak_root_rss[role] = max(self.peak_root_rss[role], table[root][2])
                self.peak_rss[role] = max(self.peak_rss[role], rss)
                if pids:
                    self.peak_proc_rss[role] = max(self.peak_proc_rss[role], max(table[p][2] for p in pids))
                for pid in pids:
                    self.cpu[role][pid] = max(self.cpu[role].get(pid, 0.0), table[pid][1])
                self.processes_seen[role] = len(self.cpu[role])
            self._mark_start()

    def __enter__(self) -> ProcSampler:
        self.sample()  # the starting point, before the caller does anything
        return super().__enter__()

    def add_root(self, role: str, pid: int) -> None:
        """Sample the tree under ``pid`` too, from now on: for a process started after
        sampling began, whose CPU time all counts."""
        with self._lock:
            self.roots[role] = pid
            for table in (self.peak_rss, self.peak_proc_rss, self.peak_root_rss, self.processes_seen):
                table[role] = 0
            self.cpu[role] = {}

    def _mark_start(self) -> None:
        if self.first_cpu is None:
            self.first_cpu = {role: sum(per.values()) for role, per in self.cpu.items()}

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used per role since sampling began (not since each process started)."""
        with self._lock:
            first = self.first_cpu or {}
            return {role: round(sum(per.values()) - first.get(role, 0.0), 2) for role, per in self.cpu.items()}

    def memory_mib(self) -> dict[str, dict[str, float]]:
        return {role: {"peak_tree_rss_mib": round(self.peak_rss[role] / 2**20, 1),
                       "peak_process_rss_mib": round(self.peak_proc_rss[role] / 2**20, 1),
                       "peak_root_rss_mib": round(self.peak_root_rss[role] / 2**20, 1),
                       "processes_seen": self.processes_seen[role]} for role in self.roots}


def role_of(process_name: str) -> str:
    """The stack's process names, grouped: every warm worker is one 'converter workers' role."""
    return "converter-workers" if process_name.startswith("worker-warm-") or (
        process_name.startswith("worker-converter")) else process_name


def group_roots(processes: dict[str, int]) -> dict[str, list[int]]:
    roles: dict[str, list[int]] = {}
    for name, pid in processes.items():
        roles.setdefault(role_of(name), []).append(pid)
    return roles


class StackSampler(ProcSampler):
    """A ProcSampler whose roles group several roots (all warm workers as one role)."""

    def __init__(self, processes: dict[str, int], interval_s: float = 0.5) -> None:
        self.groups = group_roots(processes)
        super().__init__({role: pids[0] for role, pids in self.groups.items()}, interval_s)

    def sample(self) -> None:
        table = _proc_table()
        with self._lock:
            for role, roots in self.groups.items():
                pids = [p for root in roots for p in _tree(table, root)]
                self.peak_rss[role] = max(self.peak_rss[role], sum(table[p][2] for p in pids))
                if pids:
                    self.peak_proc_rss[role] = max(self.peak_proc_rss[role], max(table[p][2] for p in pids))
                for pid in pids:
                    self.cpu[role][pid] = max(self.cpu[role].get(pid, 0.0), table[pid][1])
                self.processes_seen[role] = len(self.cpu[role])
            self._mark_start()


# ---------------------------------------------------------------------------------------
# A distributed stack on a database of its own
# ---------------------------------------------------------------------------------------

PG = ["-h", "127.0.0.1", "-U", "postgres"]


def db_sessions(db_name: str) -> int:
    """Sessions PostgreSQL has opened on ``db_name`` since its statistics were reset: each is a
    backend started and, for Prefect's asyncpg driver, its type introspection run again."""
    out = subprocess.run(["psql", *PG, "-At", "-v", f"db={db_name}"],  # psql quotes the name (:'db', stdin only)
                         input="SELECT sessions FROM pg_stat_database WHERE datname = :'db'", check=True,
                         capture_output=True, text=True).stdout.strip()
    return int(out or 0)


@contextlib.contextmanager
def stack(home: Path, *, workers: int = 1, db_name: str, storage: Path, port: int | None = None,
          mediator: str = "warm", mediator_limit: int = 32, server_workers: int = 1,
          redis_url: str | None = None) -> Iterator:
    """``fileflow up`` on a fresh PostgreSQL database (and, with ``redis_url``, an emptied Redis
    database); everything stopped and dropped after.

    Inside, this process talks to the stack's API (Prefect's temporary settings)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from fileflow.server.stack import Stack, free_port

    subprocess.run(["dropdb", *PG, "--if-exists", db_name], check=True, capture_output=True)
    subprocess.run(["createdb", *PG, db_name], check=True, capture_output=True)
    home.mkdir(parents=True, exist_ok=True)
    (home / "stack.json").unlink(missing_ok=True)
    if redis_url:
        import redis

        client = redis.Redis.from_url(redis_url)
        try:
            client.flushdb()  # a new stack must not read an old one's event streams
        finally:
            client.close()
    s = Stack(home=home.resolve(), port=port or free_port(), workers_per_pool=workers,
              database_url=f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db_name}", storage_path=storage,
              exporter_port=free_port(), mediator_type=mediator, mediator_limit=mediator_limit,
              server_workers=server_workers, redis_url=redis_url)
    # this process's storage while the stack runs, and only then: a later item's `fileflow submit`
    # inherits this environment, and a storage path in it outranks its own stack's stack.json
    former = os.environ.get("FILEFLOW_STORAGE_PATH")
    os.environ["FILEFLOW_STORAGE_PATH"] = str(storage.resolve())
    try:
        s.up(progress=lambda msg: print(f"  stack: {msg}", flush=True, file=sys.stderr))
        with temporary_settings(updates={PREFECT_API_URL: s.api_url}):
            yield s
    finally:
        if former is None:
            os.environ.pop("FILEFLOW_STORAGE_PATH", None)
        else:
            os.environ["FILEFLOW_STORAGE_PATH"] = former
        # Prefect's process worker starts each flow run's engine in a session of its own, which
        # stopping the worker's process group does not reach: every descendant is noted first
        table = _proc_table()
        descendants = {p for pid in s.processes.values() for p in _tree(table, pid)}
        killed = s.down()
        if killed:
            print(f"  stack: had to kill {killed}", flush=True, file=sys.stderr)
        survivors = [p for p in descendants if p in _proc_table()]
        for pid in survivors:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if survivors:
            print(f"  stack: killed {len(survivors)} processes left behind by `down`", flush=True, file=sys.stderr)
        subprocess.run(["dropdb", *PG, "--if-exists", db_name], capture_output=True)


# ---------------------------------------------------------------------------------------
# Distinct files (fileflow is content-addressed: a repeated file would be a cache hit)
# ---------------------------------------------------------------------------------------

# a mix like an upload day's: mostly pictures and documents, a few drawings, videos, archives
MIX = {"image": 4, "pdf": 3, "office": 2, "text": 2, "drawing": 1, "video": 1, "archive": 1}


#: the corpora: ``light`` (fileflow.testing.samplegen.corpus: test-sized files), ``realistic``
#: (bench/realistic.py: the sizes users upload)
CORPORA = ("light", "realistic")


def make_files(folder: Path, counts: dict[str, int], offset: int = 0, corpus: str = "light") -> list[Path]:
    """``counts[kind]`` files of each kind of ``corpus``, numbered from ``offset`` (so rounds never repeat)."""
    if corpus == "realistic":
        import realistic

        makers = realistic.MAKERS
    else:
        from fileflow.testing.samplegen import corpus as light

        makers = light._MAKERS
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for kind, count in counts.items():
        maker, ext = makers[kind]
        for i in range(offset, offset + count):
            made.append(maker(folder / f"{kind}-{i:05d}.{ext}", i))
    return made


def manifests_in(storage: Path) -> list[dict]:
    folder = storage / "manifests"
    out = []
    for path in folder.glob("*.json") if folder.exists() else ():
        with contextlib.suppress(ValueError, OSError):
            out.append(json.loads(path.read_text()))
    return out


def count_manifests(storage: Path) -> int:
    folder = storage / "manifests"
    return sum(1 for _ in folder.glob("*.json")) if folder.exists() else 0
