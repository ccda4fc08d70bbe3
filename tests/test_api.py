"""The upload API (fileflow/server/api.py) served by uvicorn on loopback, called with httpx.

Its Prefect is the test harness's real server with the ``process-file`` deployment registered
and no worker: runs stay Scheduled, which is what these tests look at (202, idempotency, stage,
auth, bad input). tests/test_distributed.py runs an upload through the API of a whole stack.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from blocks.storage import StorageConfig, Store, original_key
from fileflow.settings import ApiSettings
from tests.conftest import _free_port

TOKEN = "t0ken-for-the-tests"
LIMIT = 256 * 1024


async def _register_router_deployment() -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    from fileflow.names import MEDIATOR_POOL, ROUTER_FLOW

    async with get_client() as client:
        try:
            await client.create_work_pool(WorkPoolCreate(name=MEDIATOR_POOL, type="process"))
        except ObjectAlreadyExists:
            pass
        flow_id = await client.create_flow_from_name(ROUTER_FLOW)
        await client.create_deployment(flow_id=flow_id, name="process-file", work_pool_name=MEDIATOR_POOL,
                                       entrypoint="flows/router.py:process_file")


@pytest.fixture(scope="module")
def api(prefect_server, tmp_path_factory):
    import uvicorn

    from fileflow.server.api import create_app

    asyncio.run(_register_router_deployment())
    out = tmp_path_factory.mktemp("api-storage")
    store = Store(StorageConfig(basepath=str(out)))
    app = create_app(ApiSettings(tokens=[TOKEN], max_upload_bytes=LIMIT), store)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    # the harness's Prefect settings live in this context: the server's thread runs in a copy of it
    thread = threading.Thread(target=contextvars.copy_context().run, args=(server.run,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.started
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"},
                      timeout=30) as client:
        yield client, out, store
    server.should_exit = True
    thread.join(10)


def test_bytes_are_accepted_with_an_id_a_status_url_and_a_scheduled_run(api):
    client, out, _ = api
    body = b"Quarterly figures, approved by the board. " * 20
    answer = client.post("/uploads", params={"name": "figures.txt", "ocr_languages": "deu"}, content=body,
                         headers={"Content-Type": "application/octet-stream"})
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    digest = hashlib.sha256(body).hexdigest()
    assert accepted["file_id"] == digest and accepted["size"] == len(body) and not accepted["repeated"]
    assert answer.headers["Location"] == accepted["status_url"].replace("http://testserver", "")
    assert accepted["status_url"].endswith(f"/uploads/{accepted['upload_id']}")
    assert (out / original_key(digest)).read_bytes() == body
    status = client.get(f"/uploads/{accepted['upload_id']}").json()
    assert status["stage"] == "queued" and status["status"] == "received" and status["manifest"] is None
    assert status["upload"]["name"] == "figures.txt" and status["upload"]["options"] == {"ocr_languages": "deu"}
    assert status["upload"]["flow_run_id"] == accepted["flow_run_id"]
    run = client.get(f"{_prefect_url()}/flow_runs/{accepted['flow_run_id']}").json()
    assert run["parameters"]["upload_id"] == accepted["upload_id"]
    assert run["parameters"]["options"] == {"ocr_languages": "deu"}
    assert run["state"]["type"] == "SCHEDULED"


def _prefect_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def test_the_same_idempotency_key_is_the_same_upload_and_run(api):
    client, _, _ = api
    body = b"Sent twice by a retrying client. " * 10
    headers = {"Content-Type": "application/octet-stream", "Idempotency-Key": "svc-42:doc-7",
               "Authorization": f"Bearer {TOKEN}"}
    first = client.post("/uploads", params={"name": "twice.txt"}, content=body, headers=headers).json()
    second = client.post("/uploads", params={"name": "twice.txt"}, content=body, headers=headers).json()
    assert first["upload_id"] == second["upload_id"] == "svc-42:doc-7"
    assert first["flow_run_id"] == second["flow_run_id"] and second["repeated"]
    other = client.post("/uploads", params={"name": "twice.txt"}, content=b"other bytes", headers=headers)
    assert other.status_code == 409 and "other bytes" in other.json()["detail"]


def test_an_object_already_in_storage_is_adopted_by_its_key(api):
    client, out, store = api
    body = b"# Memo\n\nWritten to the bucket by the upload service itself.\n"
    store.put_bytes(body, "incoming/memo.md")
    answer = client.post("/uploads", json={"key": "incoming/memo.md", "callback_url": "https://svc.example/done",
                                           "options": {"preview_sizes": [320]}})
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    assert accepted["file_id"] == hashlib.sha256(body).hexdigest()
    record = client.get(f"/uploads/{accepted['upload_id']}").json()["upload"]
    assert record["name"] == "memo.md" and record["callback_url"] == "https://svc.example/done"
    assert record["options"] == {"preview_sizes": [320]}
    assert (out / original_key(accepted["file_id"])).read_bytes() == body


def test_tokens_missing_or_wrong_are_refused(api):
    client, _, _ = api
    bare = httpx.Client(base_url=client.base_url, timeout=10)
    missing = bare.post("/uploads", params={"name": "x.txt"}, content=b"x")
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    wrong = bare.get("/uploads/u-1", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    assert bare.get("/healthz").status_code == 200
    assert bare.get("/readyz").json() == {"status": "ready", "problems": []}
    spec = bare.get("/openapi.json").json()
    assert "/uploads" in spec["paths"] and "/uploads/{upload_id}" in spec["paths"]
    assert set(spec["paths"]["/uploads"]["post"]["requestBody"]["content"]) == {"application/octet-stream",
                                                                                "application/json"}


@pytest.mark.parametrize("request_kwargs, status, says", [
    ({"params": {"name": "big.bin"}, "content": b"x" * (LIMIT + 1)}, 413, "accepted"),
    ({"params": {"name": "big.bin"}, "content": (b"x" * 65536 for _ in range(LIMIT // 65536 + 1))}, 413, "larger"),
    ({"content": b"no name"}, 400, "name the upload"),
    ({"params": {"name": "empty.txt"}, "content": b""}, 400, "no bytes"),
    ({"params": {"name": "x.txt", "ocr_languages": "de u"}, "content": b"x"}, 422, "Tesseract language"),
    ({"params": {"name": "x.txt", "preview_sizes": "0"}, "content": b"x"}, 422, "between 1 and 8192"),
    ({"params": {"name": "x.txt", "callback_url": "ftp://x"}, "content": b"x"}, 422, "callback_url"),
    ({"params": {"name": "x.txt"}, "content": b"x", "headers": {"Idempotency-Key": "../etc"}}, 422, "invalid upload id"),
    ({"params": {"name": "x.txt"}, "content": b"x", "headers": {"Content-Type": "text/plain"}}, 415, "octet-stream"),
    ({"json": {"key": "../secret"}}, 422, "invalid storage key"),
    ({"json": {"key": "manifests/x.json"}}, 422, "fileflow's own prefixes"),
    ({"json": {"key": "incoming/absent.txt"}}, 404, "no object"),
    ({"json": {"name": "x"}}, 422, "key: Field required"),
    ({"json": {"key": "incoming/x", "colour": "red"}}, 422, "colour"),
])
def test_bad_uploads_get_a_clear_4xx(api, request_kwargs, status, says):
    client, _, _ = api
    kwargs = {**request_kwargs}
    headers = {"Content-Type": "application/octet-stream", **kwargs.pop("headers", {})} if "json" not in kwargs else {}
    answer = client.post("/uploads", headers=headers, **kwargs)
    assert answer.status_code == status, answer.text
    assert says in answer.json()["detail"], answer.json()


def test_unknown_and_malformed_upload_ids(api):
    client, _, _ = api
    assert client.get("/uploads/u-nothing-here").status_code == 404
    assert client.get("/uploads/..x").status_code == 422


def test_the_api_refuses_to_start_without_a_token(tmp_path):
    from fileflow.server.api import create_app

    with pytest.raises(ValueError, match="FILEFLOW_API_TOKENS"):
        create_app(ApiSettings(tokens=[]), Store(StorageConfig(basepath=str(tmp_path))))


def test_fileflow_api_refuses_to_start_without_a_token(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("FILEFLOW_", "PREFECT_"))}
    done = subprocess.run([str(Path(sys.executable).parent / "fileflow"), "api", "--home", str(tmp_path)],
                          env={**env, "COLUMNS": "200"}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "FILEFLOW_API_TOKENS" in done.stderr, done.stderr
