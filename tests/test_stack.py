"""`fileflow down` stops what `fileflow up` started, including processes outside the recorded
process groups: Prefect's process worker starts each flow run in a session of its own, so a run
still going when its worker stops is no longer in the worker's group."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from fileflow.server.stack import Stack, members


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_down_stops_a_flow_run_process_left_in_a_session_of_its_own(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "PREFECT_HOME": str(home / "prefect-home")}
    # what a process worker leaves behind: a run's process in its own session, ignoring SIGTERM
    run = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                            "signal.SIG_IGN); print('ready', flush=True); time.sleep(600)"],
                           env=env, start_new_session=True, stdout=subprocess.PIPE, text=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],  # another stack's
                             env={**os.environ, "PREFECT_HOME": str(tmp_path / "elsewhere" / "prefect-home")},
                             start_new_session=True)
    try:
        assert run.stdout.readline().strip() == "ready"
        (home / "stack.json").write_text(json.dumps({"port": 1, "exporter_port": 2, "processes": {}}))
        assert members(home) == [run.pid]
        started = time.monotonic()
        killed = Stack.recorded(home).down(grace_s=1.0)
        run.wait(10)
        assert killed == [f"process {run.pid}"]  # it ignored SIGTERM: killed after the grace
        assert time.monotonic() - started < 10
        assert not _alive(run.pid) and members(home) == []
        assert _alive(other.pid)  # another stack's process is left alone
        assert not (home / "stack.json").exists()
    finally:
        for proc in (run, other):
            proc.kill()
            proc.wait(10)


def test_the_stack_places_light_steps_in_the_mediator_and_heavy_ones_on_their_pools(tmp_path, monkeypatch):
    """``fileflow up`` gives its processes the design's placement; a FILEFLOW_PLACEMENT of the
    caller's own replaces it ("{}": every step on its pool)."""
    import converters
    from fileflow.settings import PipelineSettings

    monkeypatch.delenv("FILEFLOW_PLACEMENT", raising=False)
    monkeypatch.delenv("FILEFLOW_DEFAULT_PLACEMENT", raising=False)
    env = Stack(home=tmp_path).env()
    monkeypatch.setenv("FILEFLOW_PLACEMENT", env["FILEFLOW_PLACEMENT"])
    monkeypatch.setenv("FILEFLOW_DEFAULT_PLACEMENT", env["FILEFLOW_DEFAULT_PLACEMENT"])
    settings = PipelineSettings()  # what the stack's mediator reads
    assert {c for c in converters.BUILTINS if settings.placement_of(c) == "pool"} == set(converters.ON_POOLS)
    assert {settings.placement_of(c) for c in ("inspect", "image_renditions", "text_extract")} == {"local"}
    monkeypatch.setenv("FILEFLOW_PLACEMENT", "{}")
    monkeypatch.setenv("FILEFLOW_PLACEMENT", Stack(home=tmp_path).env()["FILEFLOW_PLACEMENT"])
    assert {PipelineSettings().placement_of(c) for c in converters.BUILTINS} == {"pool"}


def test_a_plain_http_stack_gives_prefect_clients_a_one_certificate_bundle(prefect_server):
    """Prefect builds a verifying SSL context for every API client (15 ms from certifi's bundle):
    on the stack's plain-HTTP API its processes load a bundle of one certificate instead; a
    TLS setting of the user's own, an https API, or FILEFLOW_STACK_PLAIN_HTTP_CA=0 keep Prefect's."""
    import ssl

    from fileflow.home import PLAIN_HTTP_CA_BUNDLE, client_tls_env

    env = client_tls_env("http://127.0.0.1:4200/api", {})
    assert env == {"PREFECT_API_SSL_CERT_FILE": str(PLAIN_HTTP_CA_BUNDLE)}
    assert ssl.create_default_context(cafile=env["PREFECT_API_SSL_CERT_FILE"]).cert_store_stats()["x509_ca"] == 1
    assert client_tls_env("https://prefect.example.com/api", {}) == {}
    assert client_tls_env("http://127.0.0.1:4200/api", {"PREFECT_API_SSL_CERT_FILE": "/etc/ssl/mine.pem"}) == {}
    assert client_tls_env("http://127.0.0.1:4200/api", {"PREFECT_API_TLS_INSECURE_SKIP_VERIFY": "true"}) == {}
    assert client_tls_env("http://127.0.0.1:4200/api", {"FILEFLOW_STACK_PLAIN_HTTP_CA": "0"}) == {}
    # a Prefect client with that bundle talks to a real server over plain HTTP
    script = ("import asyncio\nfrom prefect.client.orchestration import get_client\n"
              "async def main():\n    async with get_client() as client:\n"
              "        print((await client.hello()).status_code)\n"
              "asyncio.run(main())\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PREFECT_API_URL": prefect_server, **env})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[0] == "200"


def test_the_single_process_server_on_postgresql_keeps_a_larger_database_pool(tmp_path):
    """Prefect keeps 5 connections and closes the 10 of a burst on return: a busy server opened
    8-9 PostgreSQL sessions a second (bench/throughput.py, placement pool-dbpool). `fileflow up`
    gives its single-process server on PostgreSQL 20; an operator's own value, SQLite and several
    API processes (each with its own pool) keep theirs."""
    from fileflow.server.stack import DB_POOL_SIZE

    name = "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE"
    pg = "postgresql+asyncpg://postgres@127.0.0.1:5432/fileflow"
    assert Stack(home=tmp_path, database_url=pg).server_env({})[name] == str(DB_POOL_SIZE) == "20"
    assert Stack(home=tmp_path).server_env({"PREFECT_API_DATABASE_CONNECTION_URL": pg})[name] == "20"
    assert Stack(home=tmp_path, database_url=pg).server_env({name: "7"})[name] == "7"
    assert name not in Stack(home=tmp_path).server_env({})  # SQLite, the embedded default
    assert name not in Stack(home=tmp_path, database_url=pg, server_workers=2,
                             redis_url="redis://127.0.0.1:6379/0").server_env({})
