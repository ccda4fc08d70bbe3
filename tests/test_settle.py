"""fileflow/server/worker/settle.py against a real Prefect server: a worker that starts crashes the
flow runs its dead predecessor held (``Running``, or claimed ``Pending`` and not started) and the
task runs of attempts that are over, and leaves alone what a live process holds."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import uuid
from datetime import datetime, timedelta, timezone

import pytest

import fileflow.server.worker.settle as settling
from fileflow.testing.api import call_api

HOST = socket.gethostname()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


_on = call_api  # fileflow/testing/api.py


@pytest.fixture
def pool(prefect_server):
    from prefect.client.schemas.actions import WorkPoolCreate

    name = f"settle-{uuid.uuid4().hex[:6]}"

    async def make(client):
        await client.create_work_pool(WorkPoolCreate(name=name, type="process"))
        flow_id = await client.create_flow_from_name("settle-test")
        return await client.create_deployment(flow_id=flow_id, name=name, work_pool_name=name,
                                              entrypoint="flows/step.py:converter_step")

    return {"name": name, "deployment": _on(prefect_server, make), "api": prefect_server}


async def _run(client, pool, name: str, state, infrastructure_pid: str | None = None):
    run = await client.create_flow_run_from_deployment(pool["deployment"], name=name)
    await client.set_flow_run_state(run.id, state, force=True)
    if infrastructure_pid:
        await client.update_flow_run(run.id, infrastructure_pid=infrastructure_pid)
    return run


async def _task(client, flow_run, name: str, child_flow_run_id=None):
    """A task run of ``flow_run`` set Running now (the server stamps states with its own time);
    with ``child_flow_run_id``, as the server sets a subflow's parent task run."""
    from prefect.states import Running

    task = await client.create_task_run(_noop_task(name), flow_run_id=flow_run.id, dynamic_key=name)
    state = Running()
    state.state_details.child_flow_run_id = child_flow_run_id
    await client.set_task_run_state(task.id, state, force=True)
    return task


def _noop_task(name: str):
    from prefect import task

    @task(name=name)
    def noop() -> None:
        return None

    return noop


def test_a_starting_worker_settles_what_dead_holders_left_and_only_that(pool):
    from prefect.states import Pending, Running

    dead = _dead_pid()
    live = subprocess.Popen(["sleep", "120"])

    async def scene(client):
        runs = {
            "claimed-by-dead": await _run(client, pool, "claimed-by-dead",
                                          Pending(message=f"{settling.CLAIMED_BY}{HOST}:{dead}")),
            "running-dead": await _run(client, pool, "running-dead", Running(),
                                       f"{HOST}:{dead}:x"),
            "running-live": await _run(client, pool, "running-live", Running(), f"{HOST}:{live.pid}:x"),
            "claimed-by-live": await _run(client, pool, "claimed-by-live",
                                          Pending(message=f"{settling.CLAIMED_BY}{HOST}:{live.pid}")),
            "elsewhere": await _run(client, pool, "elsewhere", Running(), f"another-host:{dead}:x"),
            "claimed-unnamed": await _run(client, pool, "claimed-unnamed", Pending()),
        }
        tasks = {
            "dead-step": await _task(client, runs["running-dead"], "dead-step"),
            # a task of an earlier attempt of the live run (its attempt is over) ...
            "stale-step": await _task(client, runs["running-live"], "stale-step"),
            # the parent task run of a pool step's flow run: the server mirrors that run onto it
            "pool-step": await _task(client, runs["running-dead"], "pool-step",
                                     child_flow_run_id=runs["running-live"].id),
        }
        await asyncio.sleep(settling.CLOCK_MARGIN_S + 0.2)
        await client.set_flow_run_state(runs["running-live"].id, Running(), force=True)  # ... the next attempt
        tasks["live-step"] = await _task(client, runs["running-live"], "live-step")
        return runs, tasks

    try:
        runs, tasks = _on(pool["api"], scene)
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: pool["api"]}):
            flows, steps = asyncio.run(settling.settle([pool["name"]]))
        assert sorted(flows) == ["claimed-by-dead", "running-dead"]

        async def states(client):
            out = {}
            for name, run in runs.items():
                out[name] = (await client.read_flow_run(run.id)).state
            for name, task in tasks.items():
                out[name] = (await client.read_task_run(task.id)).state
            return out

        found = _on(pool["api"], states)
        assert {name: state.type.value for name, state in found.items()} == {
            "claimed-by-dead": "CRASHED", "running-dead": "CRASHED", "running-live": "RUNNING",
            "claimed-by-live": "PENDING", "elsewhere": "RUNNING", "claimed-unnamed": "PENDING",
            "dead-step": "CRASHED", "live-step": "RUNNING", "stale-step": "CRASHED", "pool-step": "RUNNING"}
        assert "crashed by the worker started in its place" in found["running-dead"].message
        assert sorted(steps) == [f"running-dead/{tasks['dead-step'].name}", f"running-live/{tasks['stale-step'].name}"]
    finally:
        live.kill()
        live.wait()


async def _subflow(client, parent, name: str, state):
    """An in-process subflow run of ``parent`` (an archive member's ``process-file`` run: no
    deployment; its parent task run in ``parent``), in ``state``."""
    task = await _task(client, parent, f"{name}-parent-task")
    return await client.create_flow_run(_noop_flow(), name=name, parent_task_run_id=task.id, state=state)


def _noop_flow():
    from prefect import flow

    @flow(name="settle-member")
    def member() -> None:
        return None

    return member


def test_the_members_of_a_dead_mediators_archive_are_settled_with_it_and_pool_steps_are_not(pool):
    """An archive's members run as subflows in the mediator's process: when it dies they are as
    dead as the archive's run (and their step task runs), at any depth; a pool step's run,
    a child with a deployment held by a worker of its own, is not settled here."""
    from prefect.states import Running

    dead = _dead_pid()
    live = subprocess.Popen(["sleep", "120"])

    async def scene(client):
        archive = await _run(client, pool, "archive", Running(), f"{HOST}:{dead}:x")
        member = await _subflow(client, archive, "archive/member.txt", Running())
        nested = await _subflow(client, member, "archive/inner.zip/deep.txt", Running())
        done = await _subflow(client, archive, "archive/done.txt", Running())
        from prefect.states import Completed

        await client.set_flow_run_state(done.id, Completed(), force=True)
        # a pool step of the archive: a child with a deployment, held by a live worker
        step_task = await _task(client, archive, "pool-step-parent")
        pool_step = await client.create_flow_run_from_deployment(pool["deployment"], name="archive/pool-step",
                                                                 parent_task_run_id=step_task.id, state=Running())
        await client.update_flow_run(pool_step.id, infrastructure_pid=f"{HOST}:{live.pid}:x")
        member_step = await _task(client, member, "member-step")
        return {"archive": archive, "member": member, "nested": nested, "done": done, "pool_step": pool_step}, member_step

    try:
        runs, member_step = _on(pool["api"], scene)
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: pool["api"]}):
            flows, steps = asyncio.run(settling.settle([pool["name"]]))
    finally:
        live.kill()
        live.wait()
    assert sorted(flows) == ["archive", "archive/inner.zip/deep.txt", "archive/member.txt"]

    async def states(client):
        out = {name: (await client.read_flow_run(run.id)).state.type.value for name, run in runs.items()}
        out["member-step"] = (await client.read_task_run(member_step.id)).state.type.value
        return out

    assert _on(pool["api"], states) == {"archive": "CRASHED", "member": "CRASHED", "nested": "CRASHED",
                                        "done": "COMPLETED", "pool_step": "RUNNING", "member-step": "CRASHED"}
    assert f"archive/member.txt/{member_step.name}" in steps


def test_the_keepers_word_names_the_predecessor_even_on_a_pid_that_lives_again(pool):
    """The keeper's ``host:pid|how`` is believed as it is: the pid may already be another process."""
    from prefect.states import Running

    live = subprocess.Popen(["sleep", "120"])
    try:
        run = _on(pool["api"], lambda c: _run(c, pool, "kept", Running(), f"{HOST}:{live.pid}:x"))
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: pool["api"]}):
            flows, _ = asyncio.run(settling.settle([pool["name"]], f"{HOST}:{live.pid}|signal SIGKILL"))
        assert flows == ["kept"]
        state = _on(pool["api"], lambda c: c.read_flow_run(run.id)).state
        assert state.type.value == "CRASHED" and "(signal SIGKILL)" in state.message
    finally:
        live.kill()
        live.wait()


def test_the_warm_worker_names_itself_in_the_pending_state_it_claims_with(pool):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from fileflow.server.worker import WarmWorker

    run = _on(pool["api"], lambda c: c.create_flow_run_from_deployment(pool["deployment"], name="to-claim"))

    async def claim():
        with temporary_settings({PREFECT_API_URL: pool["api"]}):
            async with WarmWorker(pool["name"]) as worker:
                return await worker.claim(run), await worker.claim(run)  # the second loses

    assert asyncio.run(claim()) == (True, False)
    claimed = _on(pool["api"], lambda c: c.read_flow_run(run.id))
    assert claimed.state.type.value == "PENDING"
    assert settling.holder_of(claimed) == settling.identity()


def test_a_task_of_a_finished_run_waits_for_late_events():
    from prefect.states import Completed, Running

    now = datetime.now(timezone.utc)
    task_started = now - timedelta(seconds=40)
    assert not settling.attempt_over(task_started, Completed(timestamp=now - timedelta(seconds=5)), now)
    assert settling.attempt_over(task_started, Completed(timestamp=now - timedelta(seconds=35)), now)
    assert not settling.attempt_over(now, Running(timestamp=now - timedelta(seconds=0.5)), now)


def _states(api_url: str, run_id) -> list:
    return _on(api_url, lambda c: c.read_flow_run_states(run_id))


def test_the_process_mediator_settles_its_predecessors_claims_names_its_own_and_stops_cleanly(pool, tmp_path):
    """``python -m fileflow.server.worker.process`` (``fileflow up --mediator-type process``): a run
    its dead predecessor had claimed and not started is crashed before it polls (not after the
    stranded-Pending window); a run it takes is claimed in its name and its engine recorded as
    ``host:pid``; SIGTERM ends it with exit 0."""
    import os
    import signal
    import sys
    import time
    from pathlib import Path

    from prefect.states import Pending

    from fileflow.server.supervise import PREDECESSOR_ENV

    root = Path(__file__).resolve().parents[1]
    dead = _dead_pid()
    left = _on(pool["api"], lambda c: _run(c, pool, "claimed-by-the-dead",
                                            Pending(message=f"{settling.CLAIMED_BY}{HOST}:{dead}")))

    async def deployment_to_run(client):  # as prefect.yaml's: the repository as the working directory
        flow_id = await client.create_flow_from_name("converter-step")
        deployment = await client.create_deployment(
            flow_id=flow_id, name=f"{pool['name']}-run", work_pool_name=pool["name"],
            entrypoint="flows/step.py:converter_step",
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(root)}}])
        # an empty payload: the step fails in its engine, which is all this needs of it
        return await client.create_flow_run_from_deployment(deployment, name="to-run", parameters={
            "converter": "inspect", "label": "to-run", "payload": {}, "outcome_key": "tmp/steps/to-run.json"})

    env = {**os.environ, "PREFECT_API_URL": pool["api"], "PREFECT_WORKER_QUERY_SECONDS": "1",
           PREDECESSOR_ENV: f"{HOST}:{dead}|signal SIGKILL"}
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "fileflow.server.worker.process", "--pool", pool["name"],
                                   "--limit", "2", "--grace", "20"], env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while _on(pool["api"], lambda c: c.read_flow_run(left.id)).state.type.value != "CRASHED":
            assert time.monotonic() < deadline and worker.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        assert "crashed by the worker started in its place" in _on(
            pool["api"], lambda c: c.read_flow_run(left.id)).state.message
        run = _on(pool["api"], deployment_to_run)
        while not (current := _on(pool["api"], lambda c: c.read_flow_run(run.id))).state.is_final():
            assert time.monotonic() < deadline + 120 and worker.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        claims = [s.message for s in _states(pool["api"], run.id) if s.type.value == "PENDING"]
        assert f"{settling.CLAIMED_BY}{HOST}:{worker.pid}" in claims, claims
        host, _, engine = (current.infrastructure_pid or "").partition(":")
        assert host == HOST and engine.isdigit() and int(engine) != worker.pid, current.infrastructure_pid
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
