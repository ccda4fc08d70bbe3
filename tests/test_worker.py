"""The warm worker (``python -m fileflow.server.worker``) against a real Prefect server: it runs a
converter step of its pool, and on SIGTERM it finishes the step in progress, takes no new one,
and leaves no run Running."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from blocks.storage import StorageConfig, Store, original_key
from converters.inspect import sha256_of
from fileflow.server.stack import live_processes
from tests.conftest import _free_port, wait_until
from fileflow.testing.tcp_proxy import TcpProxy
from fileflow.testing.api import call_api

ROOT = Path(__file__).resolve().parents[1]
SLEEPY = "tests.extra_converters.sleepy"


_client_call = call_api  # fileflow/testing/api.py


@pytest.fixture
def sleepy_pool(prefect_server, tmp_path):
    """A process work pool with a ``converter-step`` deployment, storage with one input."""
    from prefect.client.schemas.actions import WorkPoolCreate

    pool = f"converter-sleepy-{uuid.uuid4().hex[:6]}"

    async def make(client):
        await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        flow_id = await client.create_flow_from_name("converter-step")
        return await client.create_deployment(flow_id=flow_id, name=pool, work_pool_name=pool,
                                              entrypoint="flows/step.py:converter_step")

    deployment_id = _client_call(prefect_server, make)
    storage = StorageConfig(basepath=str(tmp_path / "store"))
    sample = tmp_path / "input.txt"
    sample.write_text("anything")
    digest = sha256_of(sample)
    Store(storage).put_file(sample, original_key(digest))
    return {"pool": pool, "deployment_id": deployment_id, "storage": storage, "digest": digest,
            "api": prefect_server, "done": tmp_path / "done.txt", "log": tmp_path / "worker.log"}


def _start_worker(ctx, grace: float, limit: int = 2) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FILEFLOW_"))}
    env.update({"PREFECT_API_URL": ctx["api"], "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "FILEFLOW_STORAGE_KIND": "local", "FILEFLOW_STORAGE_PATH": ctx["storage"].basepath})
    log = open(ctx["log"], "ab")
    return subprocess.Popen([sys.executable, "-m", "fileflow.server.worker", "--pool", ctx["pool"], "--children", "1",
                             "--grace", str(grace), "--limit", str(limit)], env=env, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT)


def _submit(ctx, seconds: float, label: str):
    digest = ctx["digest"]
    parameters = {
        "converter": SLEEPY, "label": label, "outcome_key": f"tmp/steps/{label}.json",
        "payload": {"converter": SLEEPY, "input_key": original_key(digest), "input_ext": "txt",
                    "output_prefix": f"derived/{digest}/sleepy",
                    "options": {"seconds": seconds, "done": str(ctx["done"])}},
    }
    return _client_call(ctx["api"], lambda c: c.create_flow_run_from_deployment(ctx["deployment_id"],
                                                                                 parameters=parameters))


def _state(ctx, run_id) -> str:
    async def read(client):
        return (await client.read_flow_run(run_id)).state.type.value

    return _client_call(ctx["api"], read)


def _run_log(ctx, run_id) -> list[str]:
    """The messages of a run's log lines in the API, oldest first."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async def read(client):
        return await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))

    return [log.message for log in _client_call(ctx["api"], read)]


def _wait_state(ctx, run_id, wanted: set[str], timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = _state(ctx, run_id)
        if state in wanted:
            return state
        time.sleep(0.2)
    pytest.fail(f"run {run_id} still {state} after {timeout_s:g} s; worker log:\n{ctx['log'].read_text()[-3000:]}")


def test_sigterm_finishes_the_step_in_progress_and_takes_no_new_one(sleepy_pool):
    ctx = sleepy_pool
    worker = _start_worker(ctx, grace=120)
    try:
        first = _submit(ctx, seconds=4, label="first")
        _wait_state(ctx, first.id, {"RUNNING"})
        worker.send_signal(signal.SIGTERM)
        second = _submit(ctx, seconds=0, label="second")
        assert worker.wait(timeout=120) == 0, ctx["log"].read_text()[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()
    assert _state(ctx, first.id) == "COMPLETED"
    assert ctx["done"].read_text().split() == ["done"]  # the step ran to its end, once
    # the run's log in the API (flushed as the worker stopped) and the worker's own output: the
    # engine's lines, and none of the two it writes around the worker's bookkeeping hook per run
    logged, output = _run_log(ctx, first.id), ctx["log"].read_text()
    assert any("Finished in state Completed" in m for m in logged), logged
    assert "Beginning flow run" in output and "Finished in state Completed" in output, output[-3000:]
    assert not [line for line in [*logged, *output.splitlines()] if "hook" in line.lower()], output[-3000:]
    assert _state(ctx, second.id) == "SCHEDULED"  # submitted after SIGTERM: left for another worker

    # another worker picks up what the stopped one left
    worker = _start_worker(ctx, grace=5)
    try:
        assert _wait_state(ctx, second.id, {"COMPLETED", "FAILED", "CRASHED"}) == "COMPLETED"
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)


def test_a_worker_with_a_large_limit_claims_a_few_runs_at_a_time(sleepy_pool):
    """A worker allowed 24 runs finds 24 waiting: it claims (sets Pending) at most CLAIM_BATCH of
    them before those have started, so no claimed run waits behind a long queue of claims (the
    stranded-Pending automation crashes a run Pending too long). All 24 run."""
    from fileflow.server.worker import CLAIM_BATCH

    ctx = sleepy_pool
    runs = [_submit(ctx, seconds=0, label=f"batch-{i}") for i in range(24)]
    worker = _start_worker(ctx, grace=5, limit=24)
    try:
        for run in runs:
            assert _wait_state(ctx, run.id, {"COMPLETED", "FAILED", "CRASHED"}, timeout_s=240) == "COMPLETED"
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)

    async def histories(client):
        return [await client.read_flow_run_states(run.id) for run in runs]

    claimed = []  # (Pending, Running) of every run, by the server's state timestamps
    for states in _client_call(ctx["api"], histories):
        pending = min(st.timestamp for st in states if st.type.value == "PENDING")
        running = min(st.timestamp for st in states if st.type.value == "RUNNING")
        claimed.append((pending, running))
    most = max(sum(p <= at < r for p, r in claimed) for at, _ in claimed)
    assert 1 <= most <= CLAIM_BATCH, sorted(claimed)


def _health(port: int, path: str = "/health") -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None  # not listening (yet)


def test_health_port_answers_200_while_the_pool_is_polled_and_503_when_polling_stops(sleepy_pool):
    """`--health-port` (the Helm chart's mediator liveness probe): 200 while the poll loop polls
    the pool, 503 once it has not polled for 3 fallback intervals (the API cut), 200 again after."""
    ctx = sleepy_pool
    api = urllib.parse.urlsplit(ctx["api"])
    relay = TcpProxy(api.hostname, api.port)  # the API going away, as the worker sees it
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FILEFLOW_"))}
    env.update({"PREFECT_API_URL": f"{relay.url}/api", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "FILEFLOW_STORAGE_KIND": "local", "FILEFLOW_STORAGE_PATH": ctx["storage"].basepath})
    log = open(ctx["log"], "ab")
    worker = subprocess.Popen([sys.executable, "-m", "fileflow.server.worker", "--pool", ctx["pool"], "--children", "1",
                               "--grace", "5", "--poll", "0.5", "--health-port", str(port)],
                              env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _health(port) == 200, 90, "the worker's health endpoint answering 200")
        assert _health(port, "/ready") == 200  # the chart's readiness probe
        # fileflow's INFO lines reach the log, under Prefect's logging setup (fileflow/server/logs.py)
        assert re.search(r"INFO.*fileflow\.server\.worker.*warm worker serving", ctx["log"].read_text()), \
            ctx["log"].read_text()[-3000:]
        relay.cut()
        wait_until(lambda: _health(port) == 503, 60, "503 once the worker cannot poll the API")
        assert _health(port, "/ready") == 503
        relay.restore()
        wait_until(lambda: _health(port) == 200, 120, "200 again once the API is back")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, ctx["log"].read_text()[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()
        relay.close()


def test_a_step_outliving_the_grace_period_ends_crashed_never_running(sleepy_pool):
    ctx = sleepy_pool
    worker = _start_worker(ctx, grace=1)
    try:
        run = _submit(ctx, seconds=60, label="long")
        _wait_state(ctx, run.id, {"RUNNING"})
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=90) == 0, ctx["log"].read_text()[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()
    assert _state(ctx, run.id) == "CRASHED"  # the mediator retries a Crashed step elsewhere
    assert not ctx["done"].exists()


def _children(pid: int) -> list[int]:
    return [child for child, parent, _ in live_processes() if parent == pid]


def _wait_child(keeper: subprocess.Popen, ctx, other_than: int | None = None, timeout_s: float = 60) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        kids = [p for p in _children(keeper.pid) if p != other_than]
        if kids:
            return kids[0]
        assert keeper.poll() is None, ctx["log"].read_text()[-3000:]
        time.sleep(0.2)
    pytest.fail(f"the keeper started no worker within {timeout_s:g} s:\n{ctx['log'].read_text()[-3000:]}")


def test_keep_alive_starts_a_killed_worker_again_and_sigterm_stops_both(sleepy_pool):
    """`--keep-alive` (the supervisor `fileflow up` runs every worker under, outside a stack): a worker SIGKILLed is started again and serves
    the pool; SIGTERM to the keeper drains the worker and ends both, exit code 0."""
    ctx = sleepy_pool
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FILEFLOW_"))}
    env.update({"PREFECT_API_URL": ctx["api"], "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "FILEFLOW_STORAGE_KIND": "local", "FILEFLOW_STORAGE_PATH": ctx["storage"].basepath})
    log = open(ctx["log"], "ab")
    keeper = subprocess.Popen([sys.executable, "-m", "fileflow.server.worker", "--keep-alive", "--pool", ctx["pool"],
                               "--children", "1", "--grace", "5"], env=env, cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        first = _wait_child(keeper, ctx)
        os.kill(first, signal.SIGKILL)
        second = _wait_child(keeper, ctx, other_than=first)
        run = _submit(ctx, seconds=0, label="after-restart")
        assert _wait_state(ctx, run.id, {"COMPLETED", "FAILED", "CRASHED"}) == "COMPLETED"
        infrastructure = _client_call(ctx["api"], lambda c: c.read_flow_run(run.id)).infrastructure_pid
        assert infrastructure.split(":")[1] == str(second)  # the new worker ran it
        keeper.send_signal(signal.SIGTERM)
        assert keeper.wait(timeout=60) == 0, ctx["log"].read_text()[-3000:]
    finally:
        if keeper.poll() is None:
            keeper.kill()
    assert "died (signal SIGKILL); starting it again" in ctx["log"].read_text()
    assert not _children(keeper.pid) and not Path(f"/proc/{second}").exists()


def test_a_run_claimed_while_the_api_is_down_is_crashed_once_it_answers(sleepy_pool):
    """The engine fails under a claimed run when the API goes away (a server restart): the
    worker sets the run Crashed as soon as the API answers again, so the mediator retries a
    step and the resumer resumes a file, instead of the run staying Pending with nobody on it."""
    from urllib.parse import urlsplit

    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Pending

    from fileflow.server.worker import WarmWorker

    ctx = sleepy_pool
    run = _submit(ctx, seconds=0, label="claimed")
    _client_call(ctx["api"], lambda c: c.set_flow_run_state(run.id, Pending(), force=True))  # as a claim does
    api = urlsplit(ctx["api"])
    proxy = TcpProxy(api.hostname, api.port)
    proxy.cut()

    async def crash_through_outage():
        with temporary_settings({PREFECT_API_URL: f"{proxy.url}/api"}):
            worker = WarmWorker(ctx["pool"])
            crashing = asyncio.create_task(worker._crash_once_recorded(run, ConnectionError("the API went away")))
            await asyncio.sleep(3)
            assert not crashing.done()  # still trying while the API is unreachable
            proxy.restore()
            await asyncio.wait_for(crashing, 60)

    try:
        asyncio.run(crash_through_outage())
    finally:
        proxy.close()
    state = _client_call(ctx["api"], lambda c: c.read_flow_run(run.id)).state
    assert state.type.value == "CRASHED" and "the API went away" in state.message, state
