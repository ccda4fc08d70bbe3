"""Issue 4, faults 1 and 3 on the distributed stack: a process SIGKILLed in the middle of a file
loses nothing.

One stack for the module (`fileflow up --workers 2` on a fresh PostgreSQL database, storage in
an S3 bucket on moto's server). Each test submits a long video (its transcode is the step to
kill, seen `Running` first) and two small text files, kills one process with SIGKILL, waits for
every file's manifest, checks which step runs exist, and ends with `fileflow audit` (exit 0).
Two ways the stack learns of a death: a worker killed alone is started again by its keeper
(its supervisor, `fileflow/server/supervise.py`), which crashes the dead process's runs at once (fault 3); a
worker lost with its keeper (the machine gone) is noticed by nobody, and recovery comes from the
heartbeats and the liveness automations of deployments/liveness.py (fault 1). Either way the
resume automation reschedules a crashed router run (docs/reliability.md, "Distributed faults").

The figures (seconds from the kill to the run's `Crashed` state and to the file's manifest) are
printed, never asserted: `pytest -s` shows them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest

from blocks.storage import StorageConfig, Store
from fileflow.server.stack import members
from tests.conftest import _free_port, fresh_database, pg_admin, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

FILEFLOW = Path(sys.executable).parent / "fileflow"
BUCKET = "fileflow-faults-crash"
VIDEO_STEPS = ["inspect", "video_probe", "video_transcode", "video_poster"]
RESUMES = 1  # FILEFLOW_LIVENESS_MEDIATOR_RESUMES of this stack (2 by default): fewer kills to reach it


def fileflow(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(FILEFLOW), *args], env={**env, "COLUMNS": "250"}, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def stack(postgres_url, s3_endpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("faults-crash")
    database, db_name = fresh_database(postgres_url, "fileflow_faults_crash")
    port, exporter_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FILEFLOW_"))}
    env.update({
        "FILEFLOW_STORAGE_KIND": "s3", "FILEFLOW_STORAGE_BUCKET": BUCKET, "FILEFLOW_STORAGE_PREFIX": "prod",
        "FILEFLOW_STORAGE_ENDPOINT_URL": s3_endpoint, "FILEFLOW_STORAGE_REGION": "us-east-1",
        "FILEFLOW_STORAGE_ACCESS_KEY_ID": "testing", "FILEFLOW_STORAGE_SECRET_ACCESS_KEY": "testing",
        "FILEFLOW_LIVENESS_MEDIATOR_RESUMES": str(RESUMES),
        "FILEFLOW_LIVENESS_PENDING_AFTER_S": "60",  # the stranded-Pending test waits for it
        # every step on its pool: these tests follow each step as a run on its pool and kill its
        # worker (the design's placement, light steps in the mediator, is test_distributed's)
        "FILEFLOW_PLACEMENT": "{}",
    })
    prepared = fileflow("storage", "prepare-bucket", env=env, timeout=60)
    assert prepared.returncode == 0, prepared.stderr
    home = root / "home"
    up = fileflow("up", "--workers", "2", "--database", database, "--home", str(home), "--out", str(root / "out"),
                  "--port", str(port), "--exporter-port", str(exporter_port), env=env)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        state = json.loads((home / "stack.json").read_text())
        env["PREFECT_API_URL"] = state["api_url"]
        storage = StorageConfig(kind="s3", bucket=BUCKET, prefix="prod", endpoint_url=s3_endpoint,
                                region="us-east-1", access_key_id="testing", secret_access_key="testing")
        yield {"home": home, "env": env, "api": state["api_url"], "state": state, "store": Store(storage)}
    finally:
        down = fileflow("down", "--home", str(home), env=env, timeout=120)
        left = members(home)  # flow-run processes in sessions of their own included
        _kill_mediator_sessions(home)
        pg_admin(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        assert down.returncode == 0, down.stderr
        assert not left, f"processes of the stack still running after fileflow down: {left}"


def _kill_mediator_sessions(home: Path) -> None:
    """Prefect's process worker starts each flow run in a session of its own: stop any left."""
    for pid in _pids_with_env("PREFECT_HOME", str(home / "prefect-home")):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _pids_with_env(name: str, value: str) -> list[int]:
    found = []
    needle = f"{name}={value}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return found


# -- the Prefect API, over plain HTTP ------------------------------------------------------------

def api(stack, path: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{stack['api']}{path}", data=data, method="POST" if data else "GET",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def step_runs(stack, file_name: str) -> dict[str, list[dict]]:
    """The ``converter-step`` runs of one file, by converter, oldest first."""
    runs = api(stack, "/flow_runs/filter", {
        "flows": {"name": {"any_": ["converter-step"]}},
        "flow_runs": {"name": {"like_": f":{file_name}"}},
        "sort": "EXPECTED_START_TIME_ASC",
    })
    by_converter: dict[str, list[dict]] = {}
    for run in runs:
        converter, _, label = run["name"].partition(":")
        if label == file_name:
            by_converter.setdefault(converter, []).append(run)
    return by_converter


def router_run(stack, file_name: str) -> dict | None:
    runs = api(stack, "/flow_runs/filter", {"flow_runs": {"name": {"any_": [f"file:{file_name}"]}}})
    return runs[0] if runs else None



def states_of(stack, run_id: str) -> list[tuple[str, str]]:
    states = api(stack, f"/flow_run_states/?flow_run_id={run_id}")
    return [(s["type"], s["timestamp"]) for s in sorted(states, key=lambda s: s["timestamp"])]


def seconds_between(start: float, iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() - start


# -- the files ---------------------------------------------------------------------------------

def make_batch(folder: Path, tag: str, width: int) -> list[Path]:
    """A 60 s 720p-class video (its transcode takes seconds: long enough to be killed in the
    middle) and two small text files."""
    from fileflow.testing.samplegen import media

    folder.mkdir(parents=True, exist_ok=True)
    video = media.video(folder / f"{tag}-long.mp4", width, 720, seconds=60, fps=25,
                        vcodec=["-c:v", "mpeg4", "-q:v", "5"])
    texts = []
    for i in range(2):
        text = folder / f"{tag}-note-{i}.txt"
        text.write_text(f"Note {i} of the {tag} batch: nothing may be lost when a process dies. " * 4)
        texts.append(text)
    return [video, *texts]


def submit(stack, files: list[Path]) -> None:
    result = fileflow("submit", *map(str, files), "--home", str(stack["home"]), env=stack["env"])
    assert result.returncode == 0, result.stdout + result.stderr


def manifests(stack, files: list[Path]) -> dict[str, dict]:
    from converters.inspect import sha256_of

    out = {}
    for path in files:
        key = f"manifests/{sha256_of(path)}.json"
        if stack["store"].exists(key):
            out[path.name] = json.loads(stack["store"].get_bytes(key))
    return out


def wait_for_manifests(stack, files: list[Path], timeout_s: float) -> dict[str, dict]:
    def all_there():
        found = manifests(stack, files)
        return found if len(found) == len(files) else None

    try:
        return wait_until(all_there, timeout_s, "every file's manifest", interval_s=1)
    except pytest.fail.Exception:  # say where each file without a manifest stands
        missing = [f.name for f in files if f.name not in manifests(stack, files)]
        runs = api(stack, "/flow_runs/filter", {"flow_runs": {"name": {"like_": ":"}}, "sort": "EXPECTED_START_TIME_ASC"})
        where = {name: [(r["name"], r["state_type"], ((r["state"] or {}).get("message") or "")[:120],
                         r["infrastructure_pid"]) for r in runs if r["name"].endswith(f":{name}")]
                 for name in missing}
        pytest.fail(f"not within {timeout_s} s: the manifests of {missing}; their runs: {json.dumps(where, indent=1)}")


def running_transcode(stack, video: Path) -> dict | None:
    runs = step_runs(stack, video.name).get("video_transcode", [])
    return runs[-1] if runs and runs[-1]["state_type"] == "RUNNING" and runs[-1]["infrastructure_pid"] else None


def mediator_pids(router: dict) -> list[int]:
    """The live process running a router run: the warm mediator named by the run's
    infrastructure pid (``host:pid:run``), or the engine process of Prefect's process worker."""
    pids = _pids_with_env("PREFECT__FLOW_RUN_ID", router["id"])
    if not pids and router.get("infrastructure_pid"):
        pid = int(router["infrastructure_pid"].split(":")[1])
        if _alive(pid):
            pids = [pid]
    return pids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def kill_mediator(router: dict) -> list[int]:
    """SIGKILL the process running a router run (with its session when it leads one); the pids."""
    mediators = mediator_pids(router)
    assert mediators, "no process runs the router run"
    for pid in mediators:
        try:
            os.killpg(pid, signal.SIGKILL) if os.getpgid(pid) == pid else os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return mediators


def _completed(run: dict | None) -> dict | None:
    return run if run and run["state_type"] == "COMPLETED" else None


def audit_clean(stack) -> None:
    result = fileflow("audit", "--home", str(stack["home"]), "--json", env=stack["env"], timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


# -- the faults --------------------------------------------------------------------------------

@pytest.mark.timeout(900)
def test_fault1_sigkilled_converter_worker_its_step_runs_again_elsewhere(stack, tmp_path):
    """A warm converter worker SIGKILLed while it transcodes, with its keeper (the machine is
    lost): nobody reports the death; the step run's heartbeats stop, the liveness automation marks it Crashed, the mediator retries
    the step (started again within its attempt: a new run) and the other worker completes it."""
    files = make_batch(tmp_path, "f1", 1280)
    video = files[0]
    submit(stack, files)
    run = wait_until(lambda: running_transcode(stack, video), 300, "the video's transcode step running")
    pid = int(run["infrastructure_pid"].split(":")[1])
    workers = {name: p for name, p in stack["state"]["processes"].items() if name.startswith("worker-warm")}
    keeper = _parent(pid)
    assert keeper in workers.values(), (run["infrastructure_pid"], workers)  # a worker under its keeper
    os.kill(pid, signal.SIGKILL)  # the machine is lost: the worker and its keeper, so nothing starts it again
    os.kill(keeper, signal.SIGKILL)
    killed_at = time.time()

    done = wait_for_manifests(stack, files, 600)
    recovered_s = time.time() - killed_at
    assert {name: m["status"] for name, m in done.items()} == {f.name: "completed" for f in files}
    transcodes = step_runs(stack, video.name)["video_transcode"]
    assert [r["state_type"] for r in transcodes] == ["CRASHED", "COMPLETED"], transcodes
    assert "no heartbeat" in transcodes[0]["state"]["message"]  # the automation, not a worker, said so
    assert transcodes[1]["infrastructure_pid"].split(":")[1] != str(pid)  # the other worker ran it
    crashed = [t for kind, t in states_of(stack, transcodes[0]["id"]) if kind == "CRASHED"][0]
    router = wait_until(lambda: _completed(router_run(stack, video.name)), 120, "the router run Completed")
    assert router["run_count"] == 1  # the mediator never died
    print(f"\nFIGURES fault 1: files 3 in, 3 completed, 0 failed, 0 lost; kill -> step run Crashed "
          f"{seconds_between(killed_at, crashed):.1f} s; kill -> all manifests {recovered_s:.1f} s")
    audit_clean(stack)


@pytest.mark.timeout(900)
def test_fault3_sigkilled_mediator_resumes_without_redoing_finished_steps(stack, tmp_path):
    """The warm mediator (the process running the file's run, and every
    other file in flight) is SIGKILLed after `video_probe` finished, while `video_transcode` runs
    on a pool; its keeper starts it again. The same router run is resumed (Crashed -> Scheduled by the automation), `inspect` and
    `video_probe` come from their stored results, the transcode in flight is re-attached, not
    started again: every converter ran exactly once for the file."""
    files = make_batch(tmp_path, "f3", 1264)
    video = files[0]
    submit(stack, files)
    wait_until(lambda: running_transcode(stack, video), 300, "the video's transcode step running")
    router = router_run(stack, video.name)
    assert router["state_type"] == "RUNNING"
    kill_mediator(router)
    killed_at = time.time()

    done = wait_for_manifests(stack, files, 600)
    recovered_s = time.time() - killed_at
    assert {name: m["status"] for name, m in done.items()} == {f.name: "completed" for f in files}
    router = wait_until(lambda: _completed(router_run(stack, video.name)), 120, "the router run Completed")
    history = [kind for kind, _ in states_of(stack, router["id"])]
    assert "CRASHED" in history and history[history.index("CRASHED") + 1] == "SCHEDULED", history
    assert router["run_count"] == 2  # the same run, resumed once
    crash_message = [st for st in api(stack, f"/flow_run_states/?flow_run_id={router['id']}")
                     if st["type"] == "CRASHED"][0]["message"]
    assert "crashed by the worker started in its place" in crash_message  # the keeper's restart, not the silence
    runs = step_runs(stack, video.name)
    assert {c: [r["state_type"] for r in runs.get(c, [])] for c in VIDEO_STEPS} == {
        c: ["COMPLETED"] for c in VIDEO_STEPS}  # exactly one execution of every step
    crashed = [t for kind, t in states_of(stack, router["id"]) if kind == "CRASHED"][0]
    steps = json.loads(stack["store"].get_bytes(
        f"manifests/{done[video.name]['file_id']}.json"))["steps"]
    cached = sorted(s["name"] for s in steps if s.get("cached"))
    print(f"\nFIGURES fault 3: files 3 in, 3 completed, 0 failed, 0 lost; kill -> router run Crashed "
          f"{seconds_between(killed_at, crashed):.1f} s; kill -> all manifests {recovered_s:.1f} s; "
          f"steps from stored results on resume: {cached}")
    audit_clean(stack)


@pytest.mark.timeout(900)
def test_fault3_a_file_that_kills_its_mediator_every_time_ends_failed_not_looping(stack, tmp_path):
    """The mediator dies on every run of one file: the router run is resumed RESUMES times, then
    its next run writes a failed manifest (``ToolCrashed`` in step ``router``) and ends Failed,
    which is not resumed; no run of the file stays Running (a step left by a
    killed process would be crashed by the automation)."""
    from fileflow.testing.samplegen import media

    video = media.video(tmp_path / "f3x-killer.mp4", 1248, 720, seconds=60, fps=25,
                        vcodec=["-c:v", "mpeg4", "-q:v", "5"])
    submit(stack, [video])
    for attempt in range(1, RESUMES + 2):
        def running_attempt():
            run = router_run(stack, video.name)
            ok = run and run["state_type"] == "RUNNING" and run["run_count"] == attempt
            return run if ok and mediator_pids(run) else None

        kill_mediator(wait_until(running_attempt, 300, f"run {attempt} of the router running"))
    manifest = wait_for_manifests(stack, [video], 300)[video.name]
    assert manifest["status"] == "failed"
    assert [(s["name"], s["error"]["type"]) for s in manifest["steps"] if s["status"] == "failed"] == [
        ("router", "ToolCrashed")], manifest["steps"]
    router = wait_until(lambda: (r := router_run(stack, video.name)) and r["state_type"] == "FAILED" and r, 120,
                        "the router run Failed")
    assert router["run_count"] == RESUMES + 2

    def nothing_running():
        runs = api(stack, "/flow_runs/filter", {"flow_runs": {"name": {"like_": video.name}}})
        return all(r["state_type"] not in ("RUNNING", "PENDING", "SCHEDULED") for r in runs) and runs

    runs = wait_until(nothing_running, 300, "every run of the file final", interval_s=2)
    print(f"\nFIGURES resume cap: 1 file in, 0 completed, 1 failed (ToolCrashed), 0 lost; "
          f"{RESUMES + 1} mediators killed, router run count {router['run_count']}; runs: "
          f"{sorted((r['name'], r['state_type']) for r in runs)}")
    audit_clean(stack)


@pytest.fixture(scope="module", autouse=True)
def stranded(stack):
    """A run claimed (``Pending``) by a worker that dies before starting it, made before the
    first test so that the automation's 60 s window passes while the other faults run (checked by
    :func:`test_a_run_claimed_by_a_worker_that_died_before_starting_it_is_crashed`). The test is
    the worker: it claims a step run the way Prefect's workers do (``set_state`` Pending) and
    never starts it. The run is scheduled an hour ahead, so the stack's live workers leave it alone."""
    deployment = api(stack, "/deployments/name/converter-step/inspect")
    later = datetime.fromtimestamp(time.time() + 3600).astimezone().isoformat()
    run = api(stack, f"/deployments/{deployment['id']}/create_flow_run", {
        "name": "inspect:stranded-pending",
        "parameters": {"converter": "inspect", "label": "stranded-pending", "payload": {},
                       "outcome_key": "tmp/steps/stranded-pending.json"},
        "state": {"type": "SCHEDULED", "name": "Scheduled", "state_details": {"scheduled_time": later}},
    })
    claimed = api(stack, f"/flow_runs/{run['id']}/set_state", {"state": {"type": "PENDING", "name": "Pending"}})
    assert claimed["status"] == "ACCEPT", claimed
    return {"run": run, "claimed_at": time.time()}


@pytest.mark.timeout(600)
def test_a_run_claimed_by_a_worker_that_died_before_starting_it_is_crashed(stack, stranded):
    """A worker claims a run (``Pending``) and dies before the run starts: no heartbeat ever
    comes, so the heartbeat automation has nothing to miss, and nobody reports the death. The
    ``fileflow-crash-stranded-pending`` automation sets the run ``Crashed`` after
    ``FILEFLOW_LIVENESS_PENDING_AFTER_S`` (60 s in this stack), which the mediator retries like
    any crash. The run is the ``stranded`` fixture's, claimed before the module's first test."""
    from deployments.liveness import PENDING_AUTOMATION

    run, claimed_at = stranded["run"], stranded["claimed_at"]

    def crashed():
        current = api(stack, f"/flow_runs/{run['id']}")
        return current if current["state_type"] == "CRASHED" else None

    final = wait_until(crashed, 300, "the claimed, never started run Crashed", interval_s=2)
    assert final["state"]["message"].startswith("claimed (Pending) and not started within 60 s"), final["state"]
    assert [kind for kind, _ in states_of(stack, run["id"])] == ["SCHEDULED", "PENDING", "CRASHED"]
    assert [a["name"] for a in api(stack, "/automations/filter", {})].count(PENDING_AUTOMATION) == 1
    crashed_at = [t for kind, t in states_of(stack, run["id"]) if kind == "CRASHED"][0]
    print(f"\nFIGURES stranded Pending: claimed -> Crashed {seconds_between(claimed_at, crashed_at):.1f} s "
          f"(window 60 s, the server's proactive triggers evaluate every few seconds)")


# -- issue 20 item 2: what a killed process left, settled by the one started in its place --------

SETTLED = "settled what dead workers left"


def task_runs_of(stack, flow_run_id: str) -> list[dict]:
    return api(stack, "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})


def _by_id(stack, flow_run_id: str) -> dict[str, dict]:
    return {t["id"]: t for t in task_runs_of(stack, flow_run_id)}


@pytest.mark.timeout(900)
def test_a_restarted_mediator_settles_its_predecessors_step_task_runs_at_once(stack, tmp_path):
    """The mediator SIGKILLed mid-file: the step task runs of the file's run (``video_transcode``
    waiting on its pool run, and whatever else was in flight) would stay ``Running`` for good,
    since a resumed run makes task runs of its own. The mediator its keeper starts again crashes
    them before it takes work, and the file completes within 85 s of that, sooner than the
    heartbeat automation (90 s of silence) could have noticed anything. (The new mediator's own
    start-up is timed apart: on a loaded machine its cold import took minutes.)"""
    from fileflow.testing.samplegen import media

    # a shorter video than make_batch's (its transcode still runs for seconds): generating the
    # 60 s one took over 120 s on a loaded machine
    video = media.video(tmp_path / "s2-long.mp4", 960, 540, seconds=30, fps=25, vcodec=["-c:v", "mpeg4", "-q:v", "5"])
    texts = []
    for i in range(2):
        texts.append(tmp_path / f"s2-note-{i}.txt")
        texts[-1].write_text(f"Note {i}: a restarted mediator settles what the killed one left. " * 4)
    files = [video, *texts]
    submit(stack, files)
    wait_until(lambda: running_transcode(stack, video), 300, "the video's transcode step running")
    router = router_run(stack, video.name)
    # the file's step task runs in flight; a pool step's parent task run (its state names the
    # step's flow run) follows that run, which outlives the mediator, and is not one of them
    left = [t for t in task_runs_of(stack, router["id"]) if t["state_type"] == "RUNNING"
            and not t["state"]["state_details"].get("child_flow_run_id")]
    assert any(t["name"].startswith("video_transcode") for t in left), [t["name"] for t in left]
    log = stack["home"] / "logs" / "worker-mediator.log"
    settles_before = log.read_text(errors="replace").count(SETTLED)
    kill_mediator(router)
    killed_at = time.time()

    # the successor's start-up (a cold `import prefect`, a minute and more on a loaded machine) is
    # the keeper's and the machine's; what is timed against the automation is from its settling on
    ready_at = wait_until(lambda: log.read_text(errors="replace").count(SETTLED) > settles_before and time.time(),
                          600, "the new mediator settling what the killed one left", interval_s=0.5)

    def before_kill(timestamp: str) -> bool:
        return datetime.fromisoformat(timestamp).timestamp() < killed_at

    def settled():
        # a step that was Running when `left` was read may have completed before the kill (its
        # state is written from its event a moment later): nothing was left of it to settle
        now = _by_id(stack, router["id"])
        open_at_kill = [now[t["id"]] for t in left
                        if not (now[t["id"]]["state_type"] == "COMPLETED" and before_kill(now[t["id"]]["state"]["timestamp"]))]
        return open_at_kill if all(t["state_type"] == "CRASHED" for t in open_at_kill) else None

    try:
        crashed = wait_until(settled, 120, "the killed mediator's step task runs Crashed", interval_s=0.5)
    except pytest.fail.Exception:
        now = {t["id"]: (t["name"], t["state_type"], t["state"]["timestamp"], (t["state"].get("message") or "")[:100])
               for t in task_runs_of(stack, router["id"])}
        states = [(s_["type"], s_["timestamp"], (s_.get("message") or "")[:100])
                  for s_ in api(stack, f"/flow_run_states/?flow_run_id={router['id']}")]
        settled_lines = [line[:600] for line in log.read_text(errors="replace").splitlines() if SETTLED in line]
        pytest.fail(f"task runs at the kill: {[now.get(t['id']) for t in left]}; router states: {states}; "
                    f"settle log: {settled_lines}")
    assert any(t["name"].startswith("video_transcode") for t in crashed), crashed
    assert all("settled by a worker starting" in t["state"]["message"] for t in crashed), crashed
    done = wait_for_manifests(stack, files, 300)
    after_ready_s = time.time() - ready_at
    assert {name: m["status"] for name, m in done.items()} == {f.name: "completed" for f in files}
    assert after_ready_s < 85, f"{after_ready_s:.1f} s after the new mediator settled: no faster than the heartbeat automation (90 s)"
    router = wait_until(lambda: _completed(router_run(stack, video.name)), 120, "the router run Completed")
    runs = api(stack, "/flow_runs/filter", {"flow_runs": {"name": {"like_": "s2-"}}})
    still = [(t["name"], t["state_type"]) for run in runs for t in task_runs_of(stack, run["id"])
             if t["state_type"] in ("RUNNING", "PENDING")]
    assert not still, still
    print(f"\nFIGURES settle: {len(left)} step task run(s) Running at the kill; the new mediator settled them "
          f"{ready_at - killed_at:.1f} s after the kill (its start-up); all manifests {after_ready_s:.1f} s later; "
          f"files 3 in, 3 completed, 0 lost; no task run left Running")
    audit_clean(stack)


@pytest.mark.timeout(600)
def test_a_run_claimed_by_a_killed_worker_is_crashed_by_its_successor_not_after_the_pending_window(stack):
    """A run the dead worker had claimed (``Pending``, its name in the state's message, as the warm
    worker claims) and not started has no heartbeat and no infrastructure: the worker its keeper
    starts again finds it by that name and crashes it before it takes work, not the stranded-Pending
    automation after its window (60 s in this stack). The run is scheduled an hour ahead, so no live worker takes it."""
    from fileflow.server.worker.settle import CLAIMED_BY

    deployment = api(stack, "/deployments/name/converter-step/inspect")
    later = datetime.fromtimestamp(time.time() + 3600).astimezone().isoformat()
    run = api(stack, f"/deployments/{deployment['id']}/create_flow_run", {
        "name": "inspect:claimed-by-the-dead",
        "parameters": {"converter": "inspect", "label": "claimed-by-the-dead", "payload": {},
                       "outcome_key": "tmp/steps/claimed-by-the-dead.json"},
        "state": {"type": "SCHEDULED", "name": "Scheduled", "state_details": {"scheduled_time": later}},
    })
    # a converter worker whose keeper lives (fault 1 kills a keeper for good: the machine is lost)
    keepers = {p for name, p in stack["state"]["processes"].items() if name.startswith("worker-warm")}
    from fileflow.server.stack import live_processes

    worker = wait_until(lambda: next((child for child, parent, _ in live_processes() if parent in keepers), None),
                        120, "a converter worker under a live keeper")
    host = os.uname().nodename
    claimed = api(stack, f"/flow_runs/{run['id']}/set_state",
                  {"state": {"type": "PENDING", "name": "Pending", "message": f"{CLAIMED_BY}{host}:{worker}"}})
    assert claimed["status"] == "ACCEPT", claimed
    os.kill(worker, signal.SIGKILL)
    killed_at = time.time()

    def crashed():
        current = api(stack, f"/flow_runs/{run['id']}")
        return current if current["state_type"] == "CRASHED" else None

    final = wait_until(crashed, 300, "the claimed run Crashed", interval_s=0.5)
    crashed_s = time.time() - killed_at
    # by the successor, not by the stranded-Pending automation ("claimed (Pending) and not started ...")
    assert "crashed by the worker started in its place" in final["state"]["message"], final["state"]
    print(f"\nFIGURES settle claimed: worker killed -> its claimed, never started run Crashed {crashed_s:.1f} s")
