"""The results block (where step results are persisted) saved by several processes at once on a
Prefect server on PostgreSQL: every process gets the block, none fails or logs a
UniqueViolation, and one block document of that name exists (issue 20, item 5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import _free_port, fresh_database, pg_admin, wait_until

pytestmark = [pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[1]
PROCESSES = 6


@pytest.fixture(scope="module")
def pg_server(postgres_url, tmp_path_factory):
    """A Prefect server of its own on a fresh PostgreSQL database: its API URL and its log."""
    root = tmp_path_factory.mktemp("blocks-pg")
    database, db_name = fresh_database(postgres_url, "fileflow_blocks")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FILEFLOW_"))}
    env.update({"PREFECT_API_DATABASE_CONNECTION_URL": database, "PREFECT_HOME": str(root / "prefect-home"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    log = root / "server.log"
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                               str(port)], env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            assert server.poll() is None, log.read_text()[-3000:]
            return False

    try:
        wait_until(healthy, 180, "the Prefect server on PostgreSQL answering")
        yield {"api": api, "log": log, "root": root}
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)
        pg_admin(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


SAVE = """
import asyncio, json, sys, time
from blocks.storage import StorageConfig
from fileflow.engine.mediator import Runtime
from fileflow.settings import PipelineSettings

config = StorageConfig(**json.loads(sys.argv[1]))
start_at = float(sys.argv[2])
time.sleep(max(0.0, start_at - time.time()))  # every process saves at the same moment
rt = Runtime(PipelineSettings(child_processes=1), config)
block = asyncio.run(rt.results_block())
print("SAVED", rt.results_slug, type(block).__name__, f"{time.time() - start_at:.1f} s after the start")
rt.close()
"""


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_several_processes_saving_the_results_block_at_once_do_not_collide(pg_server, kind, tmp_path):
    if kind == "local":
        config = {"kind": "local", "basepath": str(tmp_path / "store")}
    else:
        config = {"kind": "s3", "bucket": f"results-{tmp_path.name[-8:].lower().replace('_', '-')}",
                  "endpoint_url": "http://127.0.0.1:9", "region": "us-east-1", "access_key_id": "testing",
                  "secret_access_key": "testing"}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FILEFLOW_"))}
    env.update({"PREFECT_API_URL": pg_server["api"], "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_HOME": str(tmp_path / "prefect-home")})
    logged_before = len(pg_server["log"].read_text())
    start_at = time.time() + 8  # after every process has imported Prefect
    procs = [subprocess.Popen([sys.executable, "-c", SAVE, json.dumps(config), str(start_at)], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(PROCESSES)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, output in zip(procs, outputs):
        assert p.returncode == 0 and "SAVED" in output, output[-3000:]
        assert "Traceback" not in output and "UniqueViolation" not in output, output[-3000:]
    slugs = {line.split()[1] for output in outputs for line in output.splitlines() if line.startswith("SAVED")}
    assert len(slugs) == 1, slugs
    server_said = pg_server["log"].read_text()[logged_before:]
    assert "UniqueViolation" not in server_said and "IntegrityError" not in server_said, server_said[-3000:]

    slug = slugs.pop()
    block_type, name = slug.split("/")
    body = json.dumps({"block_documents": {"name": {"any_": [name]}}}).encode()
    request = urllib.request.Request(f"{pg_server['api']}/block_documents/filter", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        documents = json.loads(response.read())
    assert len(documents) == 1, documents
