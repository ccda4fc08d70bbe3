"""`fileflow up --redis URL --server-workers 2`: Prefect's server as two API processes plus one
process of loop services, sharing events, messaging caches, concurrency leases and background
tasks through Redis (``prefect-redis``) on PostgreSQL, as Prefect's scaling guide runs it.

Files go through such a stack as through the single-process one; a server restart keeps the
concurrency leases of the files in flight (they live in Redis, not in the server's memory).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fileflow.server.stack import members
from tests.conftest import _free_port, fresh_database, pg_admin, wait_until

SAMPLES = Path(__file__).parent / "samples"
FILEFLOW = Path(sys.executable).parent / "fileflow"


def fileflow(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(FILEFLOW), *map(str, args)], env={**env, "COLUMNS": "250"}, capture_output=True,
                          text=True, timeout=timeout)


def _lease_expirations(redis_url: str) -> dict[str, float]:
    """Every concurrency lease in the Redis of prefect-redis's lease storage, with its expiration
    (its sorted set ``prefect:concurrency:expirations``: lease id -> expiry timestamp)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return {lease.decode(): at for key in client.scan_iter(match="*prefect:concurrency:expirations")
                for lease, at in client.zrange(key, 0, -1, withscores=True)}
    finally:
        client.close()


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FILEFLOW_"))}


@pytest.mark.parametrize("args, message", [
    (["--server-workers", "2"], "needs PostgreSQL"),
    (["--server-workers", "2", "--database", "postgresql+asyncpg://postgres@127.0.0.1:5432/x"], "needs --redis"),
    (["--redis", "http://127.0.0.1:6379/0"], "must be a redis:// or rediss:// URL"),
    (["--server-workers", "0"], "must be at least 1"),
])
def test_up_refuses_a_server_configuration_that_cannot_work(tmp_path, args, message):
    home = tmp_path / "home"
    result = fileflow("up", "--home", home, *args, env=_clean_env(), timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in " ".join((result.stdout + result.stderr).split())
    assert not (home / "stack.json").exists() and not members(home)


def test_up_stops_at_a_redis_that_does_not_answer(tmp_path):
    home = tmp_path / "home"
    silent = f"redis://127.0.0.1:{_free_port()}/0"  # nothing listens there
    result = fileflow("up", "--home", home, "--redis", silent, "--port", _free_port(), env=_clean_env(), timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"Redis at {silent} does not answer" in " ".join((result.stdout + result.stderr).split())
    assert not (home / "stack.json").exists() and not members(home)


@pytest.fixture
def own_database(postgres_url):
    """A PostgreSQL database of this test's own: the session's database holds the storage
    blocks of the stacks of earlier modules (S3), which this stack's local storage must not meet."""
    url, name = fresh_database(postgres_url, "fileflow_redis")
    yield url
    pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _renew_leases(api_url: str, leases: list[str]) -> None:
    """Renew each lease through the API, as the holder's renewal thread does (raises on a 410)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from fileflow.engine.steering import LEASE_S

    async def renew() -> None:
        async with get_client() as client:
            for lease in leases:
                await client.renew_concurrency_lease(lease_id=UUID(lease), lease_duration=LEASE_S)

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        asyncio.run(renew())


def _active_files_slots(api_url: str) -> int:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from fileflow.ops.limits import ACTIVE_FILES

    async def read() -> int:
        async with get_client() as client:
            return (await client.read_global_concurrency_limit_by_name(ACTIVE_FILES)).active_slots

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        return asyncio.run(read())


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_files_go_through_a_two_process_server_on_redis_and_keep_their_leases_over_a_restart(
    own_database, redis_url, tmp_path
):
    import redis

    home, out = tmp_path / "home", tmp_path / "out"
    env = _clean_env()
    port = _free_port()
    up = fileflow("up", "--server-workers", "2", "--redis", redis_url, "--database", own_database, "--home", home,
                  "--out", out, "--port", port, "--exporter-port", _free_port(), env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        state = json.loads((home / "stack.json").read_text())
        assert state["server_workers"] == 2 and state["redis"] == redis_url
        assert {"server", "server-services"} <= state["processes"].keys()
        env["PREFECT_API_URL"] = state["api_url"]

        # a photo (steps in the mediator), a PDF (pdf_text on its pool: a worker woken through
        # the event stream, which now runs through Redis) and a text file
        done = fileflow("submit", "--wait", "--home", home, SAMPLES / "photo.jpg", SAMPLES / "scan.pdf",
                        SAMPLES / "notes-de.txt", env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        manifests = [json.loads(p.read_text()) for p in (out / "manifests").glob("*.json")]
        assert sorted(m["status"] for m in manifests) == ["completed"] * 3, manifests
        pdf = next(m for m in manifests if m["kind"] == "pdf")
        assert any(s["name"] == "pdf_text" and s["status"] == "completed" for s in pdf["steps"])
        client = redis.Redis.from_url(redis_url)
        try:
            streams = [k.decode() for k in client.scan_iter(_type="stream")]
        finally:
            client.close()
        assert streams, "the server's messaging left no stream in Redis"

        # hold two text files at their last step, each with its active-files slot (a lease); the
        # cap exists only once an operator sets it
        capped = fileflow("limits", "set", "active-files", "64", "--home", home, env=env)
        assert capped.returncode == 0, capped.stdout + capped.stderr
        paused = fileflow("limits", "pause", "language", "--home", home, env=env)
        assert paused.returncode == 0, paused.stdout + paused.stderr
        held = []
        for i in range(2):
            held.append(tmp_path / f"held-{i}.txt")
            held[-1].write_text(f"Held file number {i}: it waits at its language step over a server restart. " * 3)
        started = fileflow("submit", "--home", home, *held, env=env)
        assert started.returncode == 0, started.stdout + started.stderr
        wait_until(lambda: _active_files_slots(state["api_url"]) == 2, 180, "two files holding active-files slots")

        restarted = fileflow("restart-server", "--home", home, env=env, timeout=300)
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        # every lease renews through the restarted server: with leases in the server's memory they
        # would be gone and a renewal refused (410). Renewed here, as their holder does every 225 s
        before = _lease_expirations(redis_url)
        assert len(before) >= 2, before
        _renew_leases(state["api_url"], list(before))
        after = _lease_expirations(redis_url)
        assert all(after.get(lease, 0) > at for lease, at in before.items()), (before, after)
        assert _active_files_slots(state["api_url"]) == 2
        mediator_log = (home / "logs" / "worker-mediator.log").read_text()
        assert "no longer reserved" not in mediator_log

        resumed = fileflow("limits", "resume", "language", "--home", home, env=env)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        wait_until(lambda: len(list((out / "manifests").glob("*.json"))) == 5, 300, "the held files' manifests")
        statuses = [json.loads(p.read_text())["status"] for p in (out / "manifests").glob("*.json")]
        assert statuses == ["completed"] * 5
        wait_until(lambda: _active_files_slots(state["api_url"]) == 0, 60, "the held files' slots released")
    finally:
        down = fileflow("down", "--home", home, env=env, timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
        assert not members(home), "a process of the stack outlived fileflow down"
