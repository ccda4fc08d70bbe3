"""Shared fixtures: a real Prefect server (the test harness, on SQLite), S3 on moto's server."""

from __future__ import annotations

import os
import socket
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")

import pytest

#: ``make test`` runs modules side by side (pytest-xdist, ``-n 4 --dist loadfile``): each module is
#: one unit of work on one worker, so its module-scoped stack or batch is built once. Every worker
#: is a pytest session of its own: its own Prefect test server, moto server, PostgreSQL database
#: (``postgres_url``), Redis database (``redis_url``) and temporary folders, and every port is a free
#: one; what a module leaves in its session's server is seen only by the modules after it on that
#: worker, as in a serial run. Modules named here share one unit of work, so they run one after the
#: other on one worker:
SERIAL_GROUPS = {
    # the four modules that start a whole `fileflow up` stack each (server, exporter, workers,
    # mediator, LibreOffice), in two units of about 780 and 600 s on a busy machine: at most two
    # stacks run at once beside the rest, which two cores carry (docs/architecture.md, "Tests")
    "test_faults_crash": "stacks-1", "test_stack_redis": "stacks-1",
    "test_distributed": "stacks-2", "test_faults_stack": "stacks-2",
}
#: units of work that take longest (the two stack units first), handed out first so that no
#: worker is left alone with one at the end; every other module follows in file order
LONGEST_FIRST = ["stacks-1", "stacks-2", "test_deployments_setup", "test_pipeline_dataroom", "test_hostile",
                 "test_pipeline", "test_reprocess", "test_worker", "test_browser", "test_events", "test_audit",
                 "test_converters_media", "test_converters_documents", "test_exporter", "test_cli"]


def _unit_of(module_path: str) -> str:
    return SERIAL_GROUPS.get(Path(module_path).stem, module_path)


def _rank(module_path: str) -> int:
    unit = SERIAL_GROUPS.get(Path(module_path).stem, Path(module_path).stem)
    return LONGEST_FIRST.index(unit) if unit in LONGEST_FIRST else len(LONGEST_FIRST)


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: a run without xdist installed ignores it
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadfile``, with the modules of :data:`SERIAL_GROUPS` as one unit. (xdist's own
    ``loadgroup`` marks do not group under pytest 9.2: xdist 3.8 renames ``item._nodeid``, which
    pytest no longer reads.)"""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class ModuleGroupScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit_of(nodeid.split("::", 1)[0])

    return ModuleGroupScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In xdist's workers: the units of :data:`LONGEST_FIRST` first (xdist hands units out in
    collection order under ``--no-loadscope-reorder``); a module's tests keep their order."""
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: _rank(item.nodeid.split("::", 1)[0]))


@pytest.fixture(scope="session")
def prefect_server():
    """A real Prefect server for the session (SQLite in a temporary folder); its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=300):
        yield PREFECT_API_URL.value()


def wait_until(condition, timeout_s: float, what: str, interval_s: float = 0.5):
    """``condition()``'s first truthy value; the test fails after ``timeout_s`` without one."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    pytest.fail(f"not within {timeout_s:g} s: {what}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on loopback: the one stand-in, since no real S3 installs here."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint, request):
    import boto3

    name = "fileflow-" + request.node.name.lower().replace("_", "-")[:40]
    client = boto3.client(
        "s3", endpoint_url=s3_endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=name)
    return name


def _service_missing(what: str, why: str):
    """Skip with the reason on a machine without the service; in CI a missing service fails."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} is required in CI but unavailable: {why}")
    pytest.skip(f"{what} unavailable: {why}")


@pytest.fixture(scope="session")
def postgres_url():
    """A fresh database on the PostgreSQL at 127.0.0.1:5432 (trust auth); its asyncpg URL."""
    import asyncio
    import uuid

    try:
        import asyncpg
    except ImportError as exc:  # pragma: no cover
        _service_missing("PostgreSQL", f"asyncpg is not installed ({exc})")
    name = f"fileflow_test_{uuid.uuid4().hex[:8]}"
    try:
        pg_admin(f'CREATE DATABASE "{name}"')
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
        _service_missing("PostgreSQL at 127.0.0.1:5432", str(exc))
    yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_admin(sql: str) -> None:
    """Run one statement as postgres on the server's maintenance database (CREATE/DROP DATABASE)."""
    import asyncio

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=5432, user="postgres", database="postgres", timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def fresh_database(postgres_url: str, prefix: str) -> tuple[str, str]:
    """A new database beside ``postgres_url``'s (no other module's runs or blocks in it): (URL, name).
    Drop it with ``pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')``."""
    import uuid

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    pg_admin(f'CREATE DATABASE "{name}"')
    return postgres_url.rsplit("/", 1)[0] + f"/{name}", name


#: the Redis databases the tests own, one per pytest-xdist worker (``gw0``, ``gw1``, ...; 15 in a
#: serial run): each is emptied before and after use, and a stack's Prefect server keeps its event
#: streams and leases there, so two workers sharing one would empty each other's under a running
#: stack. 14 is bench/throughput.py's.
REDIS_TEST_DBS = (15, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1)
REDIS_TEST_URL = f"redis://127.0.0.1:6379/{REDIS_TEST_DBS[int(os.environ.get('PYTEST_XDIST_WORKER', 'gw0')[2:])]}"


@pytest.fixture
def redis_url():
    """This worker's Redis database on 127.0.0.1:6379, empty; emptied again after the test."""
    import redis

    client = redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        _service_missing("Redis at 127.0.0.1:6379", str(exc))
    client.flushdb()
    try:
        yield REDIS_TEST_URL
    finally:
        client.flushdb()
        client.close()
