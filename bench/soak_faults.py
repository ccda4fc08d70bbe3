"""Soak with faults: many files of mixed kinds through ``fileflow up`` while its processes are
killed on a schedule; nothing may be lost or left behind (issue 20, item 6).

``fileflow up`` on a PostgreSQL database of its own (the design's placement: light steps in the
mediator's warm children, heavy ones on their pools), storage in an S3 bucket on moto's server
reached through a TCP proxy that can be cut (``--s3``, the default; ``--no-s3``: a local folder).
``--files`` distinct light files of every kind (``fileflow/testing/samplegen/corpus``, in the proportions of
``common.MIX``) are submitted in waves of ``--wave``; every ``--fault-every`` seconds the next
fault of ``--faults`` (cycled) is injected while files remain, ``--fault-count`` in all:

=========  ==================================================================================
worker     SIGKILL a warm converter worker (its supervisor starts it again)
child      SIGKILL a warm child process of the mediator (a light step in it ends ``ToolCrashed``
           and is retried)
mediator   SIGKILL the warm mediator (its supervisor starts it again; the new one settles what the
           dead one left)
server     SIGKILL the Prefect server's supervisor and with it the server, 5 s down, then
           ``restart_server`` (an operator's restart)
s3         the S3 endpoint refuses every connection for ``--s3-outage-s`` seconds
=========  ==================================================================================

Every ``--sample-s`` seconds each long-running process's RSS and CPU seconds are read from /proc
(each process under its supervisor, found again after a restart, which shows as a new pid; the
supervisors as ``<name>/supervisor``). Every ``QUEUE_EVERY_S`` the files done and the mediator
pool's runs by state (``Running``, ``Pending``, ``Scheduled`` and ``Late``) are logged, to tell a
slow stretch's cause (a starved mediator, a slow server). The end: every file's manifest (or the
timeout), then up to 5 minutes for every flow and task run to end, ``fileflow audit``, ``fileflow
down``, and the leftovers: processes of the stack still alive after ``down`` (anything that
inherited its ``PREFECT_HOME``), ``fileflow-step-*`` scratch folders in the stack's own temporary
folder, and flow or task runs not in a final state. A table on stderr, the raw figures as JSON.

    .venv/bin/python bench/soak_faults.py --files 300 --fault-every 60 --json .bench/soak_faults.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import MIX, ROOT, emit, machine, make_files, stack

FAULTS = ("worker", "child", "mediator", "server", "s3")
FILEFLOW = Path(sys.executable).parent / "fileflow"
BUCKET = "fileflow-soak"
#: seconds between two counts of the manifests. This process (moto and the proxy included) took
#: 18-30 % of a core in the 3,000-file soak; of its work, the listing is the part that grows with
#: the files done, and a 2 s loop listed 1,800 times an hour
COUNT_EVERY_S = 15.0
#: seconds between two logs of the progress and the mediator pool's runs by state
QUEUE_EVERY_S = 60.0


def say(msg: str) -> None:
    print(f"  soak: {msg}", file=sys.stderr, flush=True)


def mix(files: int) -> dict[str, int]:
    """``files`` split over the kinds of ``MIX`` in its proportions (the rest to the first kinds)."""
    total = sum(MIX.values())
    counts = {kind: files * weight // total for kind, weight in MIX.items()}
    for kind in list(MIX)[: files - sum(counts.values())]:
        counts[kind] += 1
    return {kind: n for kind, n in counts.items() if n}


def schedule(kinds: list[str], every_s: float, until_s: float, count: int | None = None) -> list[tuple[float, str]]:
    """``(seconds after the first submit, fault)``: every ``every_s``, ``kinds`` cycled, at most ``count``."""
    out, t, i = [], every_s, 0
    while kinds and t < until_s and (count is None or i < count):
        out.append((t, kinds[i % len(kinds)]))
        t, i = t + every_s, i + 1
    return out


# -- processes -------------------------------------------------------------------------------

def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and fields[0] != "Z" and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _descendants(pid: int) -> list[int]:
    out, todo = [], _children(pid)
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of the process so far (its children not counted)."""
    fields = _stat(pid)
    if not fields:
        return None
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


SUPERVISOR = "/supervisor"


def long_running(processes: dict[str, int]) -> dict[str, int]:
    """Name -> pid of every long-running process. ``stack.json`` records each process's
    supervisor (``fileflow/server/supervise.py``); the process itself is the supervisor's child,
    under its own name, and the supervisor is ``<name>/supervisor``."""
    out = {}
    for name, pid in processes.items():
        out[f"{name}{SUPERVISOR}"] = pid
        kids = _children(pid)
        if kids:
            out[name] = kids[0]
    return out


class RssLog:
    """RSS of every long-running process every ``interval_s``, in a thread; pids seen per name."""

    def __init__(self, processes, interval_s: float) -> None:
        self.processes, self.interval_s = processes, interval_s  # processes: () -> dict[name, pid]
        self.samples: list[dict] = []
        self.pids: dict[str, list[int]] = {}
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        row = {"s": round(time.monotonic() - self.started, 1), "rss_mib": {}, "cpu_s": {}}
        for name, pid in long_running(self.processes()).items():
            rss = _rss_mib(pid)
            if rss is None:
                continue
            row["rss_mib"][name] = rss
            row["cpu_s"][name] = [pid, _cpu_s(pid)]
            seen = self.pids.setdefault(name, [])
            if pid not in seen:
                seen.append(pid)
        self.samples.append(row)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self):
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def per_process(self) -> dict[str, dict]:
        out = {}
        for name in self.pids:
            series = [row["rss_mib"][name] for row in self.samples if name in row["rss_mib"]]
            last_cpu: dict[int, float] = {}  # each pid's CPU seconds at its last sample
            for row in self.samples:
                pid, cpu = row.get("cpu_s", {}).get(name, (None, None))
                if cpu is not None:
                    last_cpu[pid] = cpu
            out[name] = {"first_mib": series[0], "peak_mib": max(series), "final_mib": series[-1],
                         "samples": len(series), "pids": len(self.pids[name]),
                         "cpu_s": round(sum(last_cpu.values()), 1)}
        return out


# -- faults ----------------------------------------------------------------------------------

def inject(kind: str, s, proxy, outage_s: float) -> str:
    """Inject one fault; what was done, in words ("" when there was nothing to hit)."""
    procs = long_running(s.processes)
    if kind in ("worker", "mediator"):
        name = "worker-mediator" if kind == "mediator" else random.choice(
            [n for n in procs if n.startswith("worker-warm") and not n.endswith(SUPERVISOR)] or [""])
        pid = procs.get(name)
        if not pid:
            return ""
        os.kill(pid, signal.SIGKILL)
        return f"SIGKILL {name} ({pid})"
    if kind == "child":
        mediator = procs.get("worker-mediator")
        children = _descendants(mediator) if mediator else []
        if not children:
            return ""
        pid = random.choice(children)
        os.kill(pid, signal.SIGKILL)
        return f"SIGKILL a process under the mediator ({pid})"
    if kind == "server":
        pid = s.processes["server"]
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        time.sleep(5)
        s.restart_server()
        return f"SIGKILL the server ({pid}), restarted after 5 s"
    if kind == "s3":
        if proxy is None:
            return ""
        proxy.cut()
        threading.Timer(outage_s, proxy.restore).start()
        return f"S3 refused for {outage_s:g} s"
    raise ValueError(kind)


# -- the end ---------------------------------------------------------------------------------

async def _unfinished() -> dict[str, int]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType, TaskRunFilter, TaskRunFilterState,
        TaskRunFilterStateType)
    from prefect.client.schemas.objects import StateType

    open_types = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.CANCELLING, StateType.PAUSED]
    async with get_client() as client:
        flows = await client.count_flow_runs(flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=open_types))))
        # the client has no count of task runs: read them a page at a time
        open_tasks = TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(any_=open_types)))
        tasks: list = []
        while True:
            page = await client.read_task_runs(task_run_filter=open_tasks, limit=200, offset=len(tasks))
            tasks += page
            if len(page) < 200:
                break
        # which ones, for the report: a task run's flow run and state say who left it open
        runs = {r.id: r.name for r in await client.read_flow_runs(flow_run_filter=FlowRunFilter(
            id={"any_": list({t.flow_run_id for t in tasks if t.flow_run_id})[:200]}))} if tasks else {}
        names = [f"{runs.get(t.flow_run_id, t.flow_run_id)}/{t.name}: {t.state_type.value if t.state_type else '?'}"
                 f"{' (mirrors ' + str(t.state.state_details.child_flow_run_id) + ')' if t.state and t.state.state_details.child_flow_run_id else ''}"
                 for t in tasks[:50]]
    return {"flow_runs": flows, "task_runs": len(tasks), "open_task_runs": names}


async def _mediator_runs() -> dict[str, int]:
    """The mediator pool's runs by state name, of those not final."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter, FlowRunFilterState, FlowRunFilterStateName, WorkPoolFilter, WorkPoolFilterName)

    from fileflow.names import MEDIATOR_POOL

    pool = WorkPoolFilter(name=WorkPoolFilterName(any_=[MEDIATOR_POOL]))
    out = {}
    async with get_client() as client:
        for name in ("Running", "Pending", "Scheduled", "Late", "AwaitingRetry"):
            out[name] = await client.count_flow_runs(work_pool_filter=pool, flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(name=FlowRunFilterStateName(any_=[name]))))
    return out


def unfinished(timeout_s: float) -> dict[str, int]:
    """Flow and task runs not final, once they are all final or after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            left = asyncio.run(_unfinished())
        except Exception as exc:  # the API restarting
            left = {"error": str(exc)}
        if left.get("flow_runs") == 0 and left.get("task_runs") == 0 or time.monotonic() > deadline:
            return left
        time.sleep(5)


def restarts(home: Path) -> dict[str, int]:
    """Restarts of each kept worker, as its keeper logged them."""
    return {log.stem: log.read_text(errors="replace").count("starting it again")
            for log in sorted((home / "logs").glob("worker-*.log"))}


def _tried(fn, fallback):
    """``fn()``, or ``fallback`` with the error noted (a broken end must not cost the figures)."""
    try:
        return fn()
    except Exception as exc:
        say(f"{type(exc).__name__}: {exc}")
        return fallback


def audit(home: Path, env: dict[str, str]) -> dict:
    proc = subprocess.run([str(FILEFLOW), "audit", "--home", str(home), "--json"], env=env,
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        report = {"stdout": proc.stdout[-2000:], "stderr": proc.stderr[-2000:]}
    return {"exit_code": proc.returncode, "report": report}


# -- the run ---------------------------------------------------------------------------------

def run(work: Path, *, files: int = 300, wave: int = 100, fault_every_s: float = 60.0,
        faults: list[str] = list(FAULTS), fault_count: int | None = 10, use_s3: bool = True, s3_outage_s: float = 30.0, sample_s: float = 10.0,
        timeout_s: float = 3 * 3600, seed: int = 20) -> dict:
    from blocks.storage import StorageConfig, Store
    from fileflow.ops.submit import submit
    from fileflow.server.stack import members

    random.seed(seed)
    work.mkdir(parents=True, exist_ok=True)
    paths = make_files(work / "corpus", mix(files))
    # made kind by kind; submitted in that order, the rate swung with the kind in flight and each
    # fault hit one kind (the second 3,000-file soak): mixed, as uploads to a data room arrive
    random.shuffle(paths)
    scratch = work / "tmp"  # the stack's TMPDIR: its scratch folders, nobody else's
    scratch.mkdir(exist_ok=True)
    saved_env = dict(os.environ)
    os.environ["TMPDIR"] = str(scratch)
    server = proxy = None
    if use_s3:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per S3 request otherwise

        sys.path.insert(0, str(ROOT))
        from fileflow.testing.tcp_proxy import TcpProxy

        from fileflow.server.stack import free_port

        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        proxy = TcpProxy("127.0.0.1", port)
        os.environ.update({
            "FILEFLOW_STORAGE_KIND": "s3", "FILEFLOW_STORAGE_BUCKET": BUCKET, "FILEFLOW_STORAGE_PREFIX": "soak",
            "FILEFLOW_STORAGE_ENDPOINT_URL": proxy.url, "FILEFLOW_STORAGE_REGION": "us-east-1",
            "FILEFLOW_STORAGE_ACCESS_KEY_ID": "testing", "FILEFLOW_STORAGE_SECRET_ACCESS_KEY": "testing"})
        config = StorageConfig(kind="s3", bucket=BUCKET, prefix="soak", endpoint_url=proxy.url, region="us-east-1",
                               access_key_id="testing", secret_access_key="testing")
        prepared = subprocess.run([str(FILEFLOW), "storage", "prepare-bucket"],
                                  capture_output=True, text=True, cwd=ROOT, env=dict(os.environ))
        if prepared.returncode != 0:
            raise RuntimeError(f"prepare-bucket failed: {prepared.stderr[-2000:]}")
    else:
        config = StorageConfig(kind="local", basepath=str((work / "storage").resolve()))
    store = Store(config)
    home = work / "home"
    shutil.rmtree(home, ignore_errors=True)  # a former run's logs would add to this run's restarts
    injected: list[dict] = []
    result: dict = {"machine": machine(), "files_in": files, "kinds": mix(files), "s3": use_s3,
                    "fault_every_s": fault_every_s, "faults_cycle": faults, "fault_count": fault_count}
    started = time.monotonic()
    try:
        with stack(home, db_name="bench_soak_faults", storage=work / "storage") as s:
            env = s.env()
            with RssLog(lambda: s.processes, sample_s) as rss:
                plan = schedule(faults, fault_every_s, timeout_s, fault_count)
                submitted = 0
                t0 = time.monotonic()
                done = 0
                next_count = 0.0
                next_queue = 0.0
                progress: list[dict] = []
                while done < files and time.monotonic() - started < timeout_s:
                    if submitted < files and submitted - done < wave:  # keep about a wave in flight
                        batch = [str(p) for p in paths[submitted:submitted + wave]]
                        try:
                            asyncio.run(submit(batch, store))
                            submitted += len(batch)
                        except Exception as exc:  # a fault mid-submission: the next loop tries again
                            say(f"submitting failed ({type(exc).__name__}: {exc}); again shortly")
                    now = time.monotonic() - t0
                    while plan and plan[0][0] <= now:
                        at, kind = plan.pop(0)
                        what = inject(kind, s, proxy, s3_outage_s)
                        if what:
                            injected.append({"s": round(now, 1), "fault": kind, "what": what, "files_done": done})
                            say(f"{now:.0f} s, {done} files done: {what}")
                    if time.monotonic() >= next_count or files - done <= wave:  # the last wave: to the second
                        try:
                            done = len(store.keys("manifests/"))
                            next_count = time.monotonic() + COUNT_EVERY_S
                        except Exception:
                            pass  # S3 cut: count again later
                    if time.monotonic() >= next_queue:
                        next_queue = time.monotonic() + QUEUE_EVERY_S
                        row = {"s": round(now, 1), "done": done, "submitted": submitted,
                               "mediator_runs": _tried(lambda: asyncio.run(_mediator_runs()), None)}
                        progress.append(row)
                        say(f"{now:.0f} s: {done} done of {submitted} submitted; mediator pool {row['mediator_runs']}")
                    time.sleep(2)
                result["wall_s_to_last_manifest"] = round(time.monotonic() - t0, 1)
                result["progress"] = progress
                if proxy is not None:
                    proxy.restore()
                result["unfinished_runs"] = unfinished(300)
                result["audit"] = _tried(lambda: audit(home, env), {"exit_code": None})
            result["restarts"] = restarts(home)
            result["files_submitted"] = submitted
            manifests = _tried(lambda: [json.loads(store.get_bytes(k)) for k in store.keys("manifests/")], [])
            result["manifests_out"] = len(manifests)
            result["statuses"] = {st: sum(m["status"] == st for m in manifests) for st in {m["status"] for m in manifests}}
            result["failed"] = [{"name": m["name"], "error": next(({**s["error"], "step": s["name"]} for s in m["steps"]
                                                                  if s.get("error")), None)}
                                for m in manifests if m["status"] != "completed"]  # which, and why
            s.down()
            time.sleep(2)
            result["orphan_processes"] = members(home)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        if proxy is not None:
            proxy.close()
        if server is not None:
            server.stop()
    result["scratch_left"] = sorted(p.name for p in scratch.glob("fileflow-step-*"))
    result["faults_injected"] = injected
    result["rss"] = rss.per_process()
    result["rss_samples"] = rss.samples
    result["wall_s"] = round(time.monotonic() - started, 1)
    return result


def audit_cell(audit_result: dict) -> str:
    """``exit 0``, with what the audit counted: submitted, terminal, lost, findings."""
    report = audit_result.get("report")
    cell = f"exit {audit_result['exit_code']}"
    if isinstance(report, dict) and "submitted" in report:
        cell += (f" ({report['submitted']} submitted, {report['terminal']} terminal, {report['lost']} lost, "
                 f"{len(report['findings'])} findings)")
    return cell


def table(r: dict) -> str:
    """The figures as markdown: one summary table, one row per long-running process."""
    counts: dict[str, int] = {}
    for f in r["faults_injected"]:
        counts[f["fault"]] = counts.get(f["fault"], 0) + 1
    faults = ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"
    left = r["unfinished_runs"]
    lines = [
        "| files in | manifests out | statuses | faults injected | restarts seen | audit | runs not final | "
        "orphan processes | scratch folders left | wall time |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {r['files_in']} | {r['manifests_out']} | "
        f"{', '.join(f'{k} {v}' for k, v in sorted(r['statuses'].items()))} | {faults} | "
        f"{', '.join(f'{k} {v}' for k, v in r['restarts'].items() if v) or 'none'} | "
        f"{audit_cell(r['audit'])} | "
        f"{left.get('flow_runs', '?')} flow, {left.get('task_runs', '?')} task | {len(r['orphan_processes'])} | "
        f"{len(r['scratch_left'])} | {r['wall_s']:.0f} s |",
        "",
        "| process | RSS first (MiB) | peak | final | final / first | samples | pids seen | CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, p in sorted(r["rss"].items()):
        lines.append(f"| {name} | {p['first_mib']} | {p['peak_mib']} | {p['final_mib']} | "
                     f"{p['final_mib'] / p['first_mib']:.2f} | {p['samples']} | {p['pids']} | {p.get('cpu_s', '?')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--wave", type=int, default=100, help="files kept in flight (submitted ahead)")
    parser.add_argument("--fault-every", type=float, default=60.0, help="seconds between two faults")
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"the faults, cycled (of {', '.join(FAULTS)})")
    parser.add_argument("--fault-count", type=int, default=10,
                        help="faults in all (then the files drain undisturbed); 0: no limit")
    parser.add_argument("--s3", action=argparse.BooleanOptionalAction, default=True,
                        help="storage in an S3 bucket on moto's server (faults may cut it)")
    parser.add_argument("--s3-outage-s", type=float, default=30.0)
    parser.add_argument("--sample-s", type=float, default=10.0, help="seconds between two RSS samples")
    parser.add_argument("--timeout-s", type=float, default=3 * 3600)
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "soak_faults")
    parser.add_argument("--json", type=Path, default=ROOT / ".bench" / "soak_faults.json")
    parser.add_argument("--seed", type=int, default=20, help="the order of the files and which worker or child each fault hits")
    args = parser.parse_args()
    kinds = [k for k in args.faults.split(",") if k]
    unknown = set(kinds) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults {sorted(unknown)}; choose from {', '.join(FAULTS)}")
    result = run(args.work.resolve(), files=args.files, wave=args.wave, fault_every_s=args.fault_every, faults=kinds,
                 fault_count=args.fault_count or None,
                 use_s3=args.s3, s3_outage_s=args.s3_outage_s, sample_s=args.sample_s, timeout_s=args.timeout_s,
                 seed=args.seed)
    result["command"] = "python bench/soak_faults.py " + " ".join(sys.argv[1:])
    print(table(result), file=sys.stderr)
    emit(result, args.json)


if __name__ == "__main__":
    main()
