"""The distributed stack for real: `fileflow up` on PostgreSQL, two workers per converter pool,
storage in an S3 bucket on moto's server, `fileflow submit` as an upload service runs it, the
exporter, `fileflow down`.

Each file's manifest must match what the embedded mode makes of the same file.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import converters
from blocks.storage import StorageConfig, Store
from fileflow.ops.batch import run_batch
from fileflow.settings import PipelineSettings
from fileflow.server.stack import members
from fileflow.testing.receiver import Receiver
from tests.conftest import _free_port, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SAMPLES = Path(__file__).parent / "samples"
SECRET = "stack-test-secret-0123456789"
FILEFLOW = Path(sys.executable).parent / "fileflow"
BATCH = ["photo.jpg", "notes-de.txt", "table.csv", "report.docx", "scan.pdf", "plan.dxf", "clip.mp4", "bundle.zip"]


def fileflow(*args: str, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(FILEFLOW), *args], env={**env, "COLUMNS": "250"}, capture_output=True, text=True, timeout=timeout
    )


BUCKET = "fileflow-stack"


@pytest.fixture(scope="module")
def stack(postgres_url, s3_endpoint, tmp_path_factory):
    import boto3

    root = tmp_path_factory.mktemp("stack")
    port, exporter_port = _free_port(), _free_port()
    # answers meet a receiver down for the first 2 attempts of each delivery
    receiver = Receiver(refuse=2, per_delivery=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FILEFLOW_"))}
    env.update({
        "FILEFLOW_STORAGE_KIND": "s3", "FILEFLOW_STORAGE_BUCKET": BUCKET, "FILEFLOW_STORAGE_PREFIX": "prod",
        "FILEFLOW_STORAGE_ENDPOINT_URL": s3_endpoint, "FILEFLOW_STORAGE_REGION": "us-east-1",
        "FILEFLOW_STORAGE_ACCESS_KEY_ID": "testing", "FILEFLOW_STORAGE_SECRET_ACCESS_KEY": "testing",
        # answers: the webhook and per-upload callbacks to a receiver down at first, retried fast
        "FILEFLOW_NOTIFY_WEBHOOK_URL": f"{receiver.base}/webhook", "FILEFLOW_CALLBACK_SECRET": SECRET,
        "FILEFLOW_CALLBACK_FIRST_RETRY_S": "1", "FILEFLOW_CALLBACK_MAX_RETRY_S": "2",
    })
    prepared = fileflow("storage", "prepare-bucket", env=env, timeout=60)
    assert prepared.returncode == 0, prepared.stderr
    # the bucket notifies a queue of objects created under prod/incoming/ (docs/callbacks.md)
    aws = dict(endpoint_url=s3_endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
               region_name="us-east-1")
    sqs = boto3.client("sqs", **aws)
    queue_url = sqs.create_queue(QueueName="stack-uploads")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    boto3.client("s3", **aws).put_bucket_notification_configuration(
        Bucket=BUCKET, NotificationConfiguration={"QueueConfigurations": [{
            "QueueArn": arn, "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "prod/incoming/"}]}}}]})
    env.update({"FILEFLOW_S3_EVENTS_QUEUE_URL": queue_url, "FILEFLOW_S3_EVENTS_SQS_ENDPOINT_URL": s3_endpoint,
                "FILEFLOW_S3_EVENTS_WAIT_S": "2"})
    up = fileflow(
        "up", "--workers", "2", "--database", postgres_url, "--home", str(root / "home"), "--out", str(root / "out"),
        "--port", str(port), "--exporter-port", str(exporter_port), env=env, timeout=600,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    state = json.loads((root / "home" / "stack.json").read_text())
    env["PREFECT_API_URL"] = state["api_url"]
    # the single-process server on PostgreSQL keeps 20 connections open (Prefect's default is 5)
    server_env = Path(f"/proc/{state['processes']['server']}/environ").read_bytes().split(b"\0")
    assert b"PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE=20" in server_env
    storage = StorageConfig(kind="s3", bucket=BUCKET, prefix="prod", endpoint_url=s3_endpoint, region="us-east-1",
                            access_key_id="testing", secret_access_key="testing")
    yield {"root": root, "env": env, "exporter": f"http://127.0.0.1:{exporter_port}", "state": state,
           "store": Store(storage), "receiver": receiver, "s3_endpoint": s3_endpoint}
    receiver.close()
    down = fileflow("down", "--home", str(root / "home"), env=env, timeout=120)
    assert down.returncode == 0, down.stderr
    time.sleep(1)
    left = [name for name, pid in state["processes"].items() if Path(f"/proc/{pid}").exists()
            and "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]]
    assert not left, f"still running after fileflow down: {left}"
    assert not members(root / "home"), "a process of the stack (a flow run's, say) outlived fileflow down"


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def summary(manifest: dict, read) -> dict:
    """What must be the same whichever mode made it (``read(key)`` -> bytes from its storage)."""
    text = read(manifest["text"]).decode() if manifest["text"] else None
    return {
        "kind": manifest["kind"],
        "status": manifest["status"],
        "roles": sorted((r["role"], r["width"], r["height"]) for r in manifest["renditions"]),
        "language": manifest["language"],
        "text": " ".join(text.split()) if text else None,
        "children": len(manifest["children"]),
    }


#: generated files of every kind in the mixed batch; issue 3 asks for 20 (FILEFLOW_TEST_PER_KIND=20),
#: the default keeps the suite inside CI's budget on a 2-core machine
PER_KIND = int(os.environ.get("FILEFLOW_TEST_PER_KIND", "1"))


@pytest.mark.timeout(3600)
def test_mixed_batch_of_every_kind_completes_on_the_stack_like_the_embedded_mode(stack, prefect_server, tmp_path):
    """The committed samples plus PER_KIND generated files of every kind (image, pdf, office, drawing,
    video, archive, text): every file completes on the stack (heavy steps on their pools, light
    ones in the mediator), and its manifest equals the embedded mode's for the same file."""
    import boto3

    from fileflow.testing.samplegen import corpus

    store = stack["store"]
    generated = corpus.make(tmp_path / "corpus", PER_KIND)
    paths = [SAMPLES / name for name in BATCH] + [p for kind in corpus.KINDS for p in generated[kind]]
    files = [str(p) for p in paths]
    started = time.monotonic()
    result = fileflow("submit", *files, "--wait", "--home", str(stack["root"] / "home"), env=stack["env"],
                      timeout=3600)
    distributed_s = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    s3 = boto3.client("s3", endpoint_url=store.config.endpoint_url, region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="prod/manifests/")["Contents"]]
    distributed = {}
    for key in keys:
        manifest = json.loads(store.get_bytes(key.removeprefix("prod/")))
        distributed[manifest["file_id"]] = {"name": manifest["name"], **summary(manifest, store.get_bytes)}
    from converters.inspect import sha256_of

    submitted = {sha256_of(p): p.name for p in paths}
    assert set(submitted) <= set(distributed), [submitted[d] for d in set(submitted) - set(distributed)]
    not_completed = {d["name"]: d["status"] for d in distributed.values() if d["status"] != "completed"}
    assert not not_completed, not_completed
    # the same files through the embedded mode, for reference
    embedded_out = tmp_path / "embedded"
    started = time.monotonic()
    manifests = asyncio.run(
        run_batch(paths, PipelineSettings(child_processes=2), StorageConfig(basepath=str(embedded_out)))
    )
    embedded_s = time.monotonic() - started
    print(f"\nFIGURES mixed batch: {len(paths)} uploads ({PER_KIND} generated per kind), {len(distributed)} "
          f"manifests with archive members, all completed; distributed (submit --wait) {distributed_s:.0f} s, "
          f"embedded {embedded_s:.0f} s")
    embedded = {m["file_id"]: {"name": m["name"], **summary(m, lambda key: (embedded_out / key).read_bytes())}
                for m in manifests}
    # the stack's placement (converters.design_placement): heavy steps were runs on their pools,
    # light ones ran in the mediator's warm children, with no run of their own
    converters_run_on_pools, offset = set(), 0
    while True:
        body = {"flow_runs": {"deployment_id": {"is_null_": False}}, "offset": offset, "limit": 200}
        request = urllib.request.Request(f"{stack['env']['PREFECT_API_URL']}/flow_runs/filter", method="POST",
                                         data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            page = json.loads(response.read())
        converters_run_on_pools |= {r["parameters"]["converter"] for r in page if "converter" in r["parameters"]}
        if len(page) < 200:
            break
        offset += 200
    # the batch has no audio, so audio_transcode's pool stays idle
    assert converters_run_on_pools == set(converters.ON_POOLS) - {"audio_transcode"}, converters_run_on_pools
    assert embedded.keys() == distributed.keys()
    for file_id in embedded:
        assert distributed[file_id] == embedded[file_id], embedded[file_id]["name"]


def test_the_same_upload_notified_twice_starts_one_run(stack, tmp_path):
    sample = tmp_path / "twice.txt"
    sample.write_text("Dieselbe Datei zweimal gemeldet, aber nur einmal verarbeitet. " * 3)
    runs = []
    for _ in range(2):
        result = fileflow("submit", str(sample), "--home", str(stack["root"] / "home"), env=stack["env"])
        assert result.returncode == 0, result.stderr
        runs.append(result.stderr.split("(")[-1].split(")")[0])
    assert runs[0] == runs[1]
    # twice in one submit, started at once (submit's concurrency): still that one run
    copy = tmp_path / "again" / sample.name
    copy.parent.mkdir()
    copy.write_bytes(sample.read_bytes())
    result = fileflow("submit", str(sample), str(copy), "--home", str(stack["root"] / "home"), env=stack["env"])
    assert result.returncode == 0, result.stderr
    assert re.findall(r"\(([0-9a-f-]{36})\)", result.stderr) == [runs[0], runs[0]], result.stderr


def test_submit_finds_the_stack_from_its_home_alone(stack, tmp_path):
    """No PREFECT_API_URL: `--home` (its stack.json) names the server, and submit starts no
    Prefect server of its own (it once did: Prefect was imported before the URL was set)."""
    sample = tmp_path / "home-only.txt"
    sample.write_text("Only the stack's home says where its Prefect server is. " * 3)
    env = {k: v for k, v in stack["env"].items() if k != "PREFECT_API_URL"}
    result = fileflow("submit", str(sample), "--wait", "--home", str(stack["root"] / "home"), env=env, timeout=600)
    said = result.stdout + result.stderr
    assert result.returncode == 0, said
    assert "temporary server" not in said.lower() and "ephemeral" not in said.lower(), said
    run_id = re.findall(r"\(([0-9a-f-]{36})\)", result.stderr)[0]
    with urllib.request.urlopen(f"{stack['state']['api_url']}/flow_runs/{run_id}", timeout=10) as response:
        assert json.loads(response.read())["state"]["type"] == "COMPLETED"  # on the stack's own server


def test_paused_converter_holds_its_steps_until_resume(stack, tmp_path):
    """An operator pauses a converter (its pool): the mediator holds that converter's steps
    (fileflow/ops/limits.py) instead of piling runs onto the pool, and they run after resume."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolUpdate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from converters.inspect import sha256_of

    pool = "converter-text_extract"
    api = stack["env"]["PREFECT_API_URL"]

    async def set_paused(paused: bool) -> None:
        with temporary_settings({PREFECT_API_URL: api}):
            async with get_client() as client:
                await client.update_work_pool(pool, WorkPoolUpdate(is_paused=paused))

    sample = tmp_path / "queued.txt"
    sample.write_text("This file waits until its converter pool is resumed by the operator. " * 3)
    digest = sha256_of(sample)
    asyncio.run(set_paused(True))
    try:
        result = fileflow("submit", str(sample), "--home", str(stack["root"] / "home"), env=stack["env"])
        assert result.returncode == 0, result.stderr
        # the file's text_extract step says in its run's log that it waits for the paused pool
        wait_until(lambda: _run_logs(api, f"file:{sample.name}", "waiting: converter text_extract is paused"),
                   240, "the text_extract step waiting for its paused pool")
        assert not stack["store"].exists(f"manifests/{digest}.json")
        assert get_json(f"{stack['exporter']}/pools/{pool}")["pending"] == 0  # held, not queued
    finally:
        asyncio.run(set_paused(False))
    run = _wait_for_run(api, f"file:{sample.name}", timeout_s=300)
    assert run["state"]["type"] == "COMPLETED"
    assert json.loads(stack["store"].get_bytes(f"manifests/{digest}.json"))["status"] == "completed"


def _run_logs(api_url: str, run_name: str, text: str) -> list[str]:
    """The log lines of the flow run named ``run_name`` (its task runs' too) that contain ``text``."""
    runs = _post(api_url, "flow_runs/filter", {"flow_runs": {"name": {"any_": [run_name]}}})
    if not runs:
        return []
    logs = _post(api_url, "logs/filter", {"logs": {"flow_run_id": {"any_": [runs[0]["id"]]}}, "limit": 200})
    return [log["message"] for log in logs if text in log["message"]]


def _post(api_url: str, path: str, body: dict):
    request = urllib.request.Request(f"{api_url}/{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _store_original(stack, sample: Path) -> tuple[str, str, int]:
    """What an upload service does before it notifies: the bytes into storage by their digest."""
    from blocks.storage import original_key
    from converters.inspect import sha256_of

    digest = sha256_of(sample)
    stack["store"].put_file(sample, original_key(digest))
    return digest, original_key(digest), sample.stat().st_size


def _wait_for_run(api_url: str, name: str, timeout_s: float = 240) -> dict:
    deadline = time.monotonic() + timeout_s
    body = json.dumps({"flow_runs": {"name": {"any_": [name]}}}).encode()
    while time.monotonic() < deadline:
        request = urllib.request.Request(f"{api_url}/flow_runs/filter", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            runs = json.loads(response.read())
        if runs and runs[0]["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return runs[0]
        time.sleep(1)
    pytest.fail(f"no final run named {name!r} within {timeout_s:g} s")


def test_plain_http_call_starts_the_router_once_per_upload(stack, tmp_path):
    """The curl example of docs/distributed.md, as plain HTTP."""
    api = stack["env"]["PREFECT_API_URL"]
    sample = tmp_path / "via-http.txt"
    sample.write_text("An upload service notifies fileflow over plain HTTP, twice by mistake. " * 3)
    digest, key, size = _store_original(stack, sample)
    deployment = get_json(f"{api}/deployments/name/process-file/process-file")
    body = json.dumps({
        "parameters": {"key": key, "file_id": digest, "name": sample.name, "size": size},
        "idempotency_key": f"upload:{digest}:{sample.name}",
    }).encode()
    ids = []
    for _ in range(2):
        request = urllib.request.Request(f"{api}/deployments/{deployment['id']}/create_flow_run", data=body,
                                         method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            ids.append(json.loads(response.read())["id"])
    assert ids[0] == ids[1]
    run = _wait_for_run(api, f"file:{sample.name}")
    assert run["state"]["type"] == "COMPLETED"


def test_uploaded_event_triggers_the_router(stack, tmp_path):
    from prefect.events import Event
    from prefect.events.clients import PrefectEventsClient

    api = stack["env"]["PREFECT_API_URL"]
    sample = tmp_path / "via-event.txt"
    sample.write_text("Une application émet un événement et fileflow traite le fichier tout seul. " * 3)
    digest, key, size = _store_original(stack, sample)

    async def emit() -> None:
        async with PrefectEventsClient(api_url=api) as client:
            await client.emit(Event(
                event="fileflow.file.uploaded",
                resource={"prefect.resource.id": f"fileflow.upload.{digest}"},
                payload={"key": key, "file_id": digest, "name": sample.name, "size": size},
            ))

    asyncio.run(emit())
    run = _wait_for_run(api, f"file:{sample.name}")
    assert run["state"]["type"] == "COMPLETED"
    manifest = json.loads(stack["store"].get_bytes(f"manifests/{digest}.json"))
    assert manifest["language"] == "fr"


def _runs_named(api_url: str, name: str) -> list[dict]:
    body = json.dumps({"flow_runs": {"name": {"any_": [name]}}}).encode()
    request = urllib.request.Request(f"{api_url}/flow_runs/filter", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_the_same_upload_notified_twice_by_event_is_processed_by_one_run(stack, tmp_path):
    """Prefect starts a run per event; the router lets one run per upload id work."""
    from prefect.events import Event
    from prefect.events.clients import PrefectEventsClient

    from fileflow.engine import uploads

    api = stack["env"]["PREFECT_API_URL"]
    sample = tmp_path / "notified-twice.txt"
    sample.write_text("Die Ablage meldet dieselbe Datei zweimal, verarbeitet wird sie einmal. " * 3)
    digest, key, size = _store_original(stack, sample)

    async def emit() -> None:
        async with PrefectEventsClient(api_url=api) as client:
            for _ in range(2):
                await client.emit(Event(
                    event="fileflow.file.uploaded", resource={"prefect.resource.id": f"fileflow.upload.{digest}"},
                    payload={"key": key, "file_id": digest, "name": sample.name, "size": size, "upload_id": "evt-twice",
                             "options": {"ocr_languages": "deu"}},
                ))

    asyncio.run(emit())
    deadline = time.monotonic() + 300
    runs: list[dict] = []
    while time.monotonic() < deadline:
        runs = _runs_named(api, f"file:{sample.name}")
        if len(runs) == 2 and all(r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED") for r in runs):
            break
        time.sleep(1)
    assert [r["state"]["type"] for r in runs] == ["COMPLETED", "COMPLETED"], runs
    record = uploads.read(stack["store"], "evt-twice")
    assert record.status == "completed" and record.steps_run == 3 and record.options == {"ocr_languages": "deu"}
    idle = [r for r in runs if r["id"] != record.flow_run_id]
    assert len(idle) == 1 and f"processed by run {record.flow_run_id}" in idle[0]["state"]["message"]


def test_an_upload_through_the_api_of_the_stack(stack, tmp_path):
    """What README's curl example does, with httpx: bytes in, 202, the status URL until done."""
    import httpx

    token = (stack["root"] / "home" / "api-token").read_text().strip()
    base = stack["state"]["upload_api_url"]
    body = "Le rapport annuel a été validé par le conseil d'administration sans réserve. ".encode() * 3
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        headers = {"Content-Type": "application/octet-stream", "Idempotency-Key": "api-stack-1"}
        answer = client.post("/uploads", params={"name": "rapport.txt"}, content=body, headers=headers)
        assert answer.status_code == 202, answer.text
        again = client.post("/uploads", params={"name": "rapport.txt"}, content=body, headers=headers)
        assert again.json()["flow_run_id"] == answer.json()["flow_run_id"]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            status = client.get(answer.json()["status_url"]).json()
            if status["status"] in ("completed", "failed"):
                break
            time.sleep(1)
    assert status["status"] == "completed" and status["stage"] == "completed", status
    assert status["manifest"]["language"] == "fr"
    assert status["upload"]["upload_id"] == "api-stack-1" and status["upload"]["name"] == "rapport.txt"


def test_submit_an_object_already_in_s3(stack):
    """An upload service that wrote the object to a bucket passes its s3:// address."""
    import boto3

    store = stack["store"]
    s3 = boto3.client("s3", endpoint_url=store.config.endpoint_url, region_name="us-east-1")
    s3.create_bucket(Bucket="uploads")
    s3.put_object(Bucket="uploads", Key="inbox/memo.md", Body=b"# Memo\n\nThe quarterly figures were reviewed and approved by the board.\n")
    result = fileflow("submit", "s3://uploads/inbox/memo.md", "--wait", "--home", str(stack["root"] / "home"),
                      env=stack["env"])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "memo.md" in result.stdout and "completed" in result.stdout


def test_every_trigger_path_ends_with_a_signed_answer_to_a_receiver_down_at_first(stack, tmp_path):
    """An upload through the API (with its own callback URL), one through ``submit`` and one
    through an S3 notification: each ends with its answer delivered, signed, to an endpoint
    that refused its first two attempts (the webhook for all three, the callback for the API's)."""
    import boto3
    import httpx

    from fileflow.engine.callbacks import verify

    receiver, env = stack["receiver"], stack["env"]
    stamp = str(time.time_ns())
    token = (stack["root"] / "home" / "api-token").read_text().strip()
    with httpx.Client(base_url=stack["state"]["upload_api_url"], headers={"Authorization": f"Bearer {token}"},
                      timeout=30) as client:
        answer = client.post("/uploads", params={"name": "via-api.txt", "callback_url": f"{receiver.base}/cb/api"},
                             content=f"Uploaded through the API at {stamp}.".encode(),
                             headers={"Content-Type": "application/octet-stream", "Idempotency-Key": f"api-{stamp}"})
    assert answer.status_code == 202, answer.text
    submitted = tmp_path / "via-submit.txt"
    submitted.write_text(f"Uploaded through fileflow submit at {stamp}.")
    result = fileflow("submit", str(submitted), "--home", str(stack["root"] / "home"), env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    s3 = boto3.client("s3", endpoint_url=stack["s3_endpoint"], aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    s3.put_object(Bucket=BUCKET, Key="prod/incoming/via-s3.txt", Body=f"Uploaded into the bucket at {stamp}.".encode())

    def webhook_for(name: str) -> list[dict]:
        return [r for r in receiver.accepted("/webhook") if json.loads(r["body"])["file"]["name"] == name]

    deadline = time.monotonic() + 600
    names = ("via-api.txt", "via-submit.txt", "via-s3.txt")
    while time.monotonic() < deadline and not (receiver.accepted("/cb/api") and all(webhook_for(n) for n in names)):
        time.sleep(1)
    callback = receiver.accepted("/cb/api")
    assert callback, [(r["path"], r["code"]) for r in receiver.received]
    body = json.loads(callback[0]["body"])
    assert body["file"]["upload"]["upload_id"] == f"api-{stamp}" and body["file"]["status"] == "completed"
    for name in names:
        delivered = webhook_for(name)
        assert delivered, f"no webhook for {name}: {[(r['path'], r['code']) for r in receiver.received]}"
        upload = json.loads(delivered[0]["body"])["file"]["upload"]
        assert upload and upload["name"] == name
    # down for the first two attempts of each delivery, then delivered; every POST signed
    assert [r["code"] for r in receiver.received if r["path"] == "/cb/api"][:3] == [503, 503, 204]
    for r in receiver.received:
        # checked as the receiver would have on arrival: the module's receiver also holds webhooks
        # of earlier tests, older than the signature's 5 minutes by now on a loaded machine
        assert verify(SECRET, r["headers"], r["body"], now=r["at"]), r["path"]
