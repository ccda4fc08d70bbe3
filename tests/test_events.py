"""Terminal events, batch tags, the archive's progress artifact and the webhook automation,
on a real Prefect server (its triggers and actions services run the automation) with real
converters; the webhook is received by a real HTTP server on loopback.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from blocks.storage import StorageConfig
from fileflow.batch import run_batch
from fileflow.settings import PipelineSettings

SAMPLES = Path(__file__).parent / "samples"
SETTINGS = PipelineSettings(child_processes=2, max_active_files=4, retry_delay_s=0.1)

pytestmark = pytest.mark.timeout(300)


async def _events(resource_ids: list[str], names: tuple[str, ...], expect: int, timeout_s: float = 60) -> list:
    """The persisted events of these resources, once ``expect`` of them are there."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter
    from prefect.types._datetime import now

    deadline = time.monotonic() + timeout_s
    async with get_client() as client:
        while True:
            page = await client.read_events(
                EventFilter(
                    occurred=EventOccurredFilter(since=now("UTC").replace(year=2000)),
                    event=EventNameFilter(name=list(names)),
                    resource=EventResourceFilter(id=resource_ids),
                ),
                limit=50,
            )
            if len(page.events) >= expect or time.monotonic() > deadline:
                return page.events
            await asyncio.sleep(1)


@pytest.fixture(scope="module")
def batch(prefect_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("events")
    folder = root / "in"
    folder.mkdir()
    (folder / "hello.txt").write_text("Every file that reaches its end tells the upload service about it. " * 3)
    (folder / "empty.txt").write_bytes(b"")
    (folder / "bundle.zip").write_bytes((SAMPLES / "bundle.zip").read_bytes())
    out = root / "out"
    manifests = asyncio.run(
        run_batch(sorted(folder.iterdir()), SETTINGS, StorageConfig(basepath=str(out)), batch_id="test-events-1")
    )
    return out, {m["name"]: m for m in manifests}


def test_every_file_emits_one_terminal_event_with_status_error_and_manifest_location(batch):
    out, manifests = batch
    ids = [f"fileflow.file.{m['file_id']}" for m in manifests.values()]
    events = asyncio.run(_events(ids, ("fileflow.file.completed", "fileflow.file.failed"), len(ids)))
    by_file = {}
    for event in events:
        by_file.setdefault(event.payload["file_id"], []).append(event)
    assert set(by_file) == {m["file_id"] for m in manifests.values()}
    for name, manifest in manifests.items():
        (event,) = by_file[manifest["file_id"]]
        assert event.event == f"fileflow.file.{manifest['status']}", name
        assert event.resource.id == f"fileflow.file.{manifest['file_id']}"
        assert event.payload["status"] == manifest["status"] and event.payload["kind"] == manifest["kind"]
        location = event.payload["manifest"]
        assert location["key"] == f"manifests/{manifest['file_id']}.json"
        assert location["url"] == (out / location["key"]).resolve().as_uri()
        assert json.loads((out / location["key"]).read_text())["status"] == manifest["status"]
        assert "flow-run" in event.resource_in_role, name  # the run that finished the file
        assert [s["name"] for s in event.payload["steps"]] == [s["name"] for s in manifest["steps"]]
    empty = by_file[manifests["empty.txt"]["file_id"]][0]
    assert empty.event == "fileflow.file.failed"
    assert empty.payload["error"]["type"] == "CorruptInput" and empty.payload["error"]["step"] == "inspect"
    hello = by_file[manifests["hello.txt"]["file_id"]][0]
    assert hello.event == "fileflow.file.completed" and hello.payload["error"] is None


def test_runs_carry_the_batch_tag_and_members_only_their_own_kind(batch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    _, manifests = batch

    async def read():
        async with get_client() as client:
            return await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["batch:test-events-1"]))
            )

    runs = {r.name: r for r in asyncio.run(read())}
    for name, manifest in manifests.items():
        assert f"file:{name}" in runs, sorted(runs)  # every router run, members' too
    member = next(m for m in manifests.values() if m["parent"] and m["kind"] == "text")
    kind_run = runs[f"text:{member['name']}"]
    assert {t for t in kind_run.tags if t.startswith("kind:")} == {"kind:text"}
    assert "kind:archive" in runs["archive:bundle.zip"].tags


def test_archive_run_has_a_progress_artifact_at_100_percent(batch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    _, manifests = batch
    archive = manifests["bundle.zip"]

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"members-{archive['file_id'][:32]}"]))
            )

    (artifact,) = asyncio.run(read())
    assert artifact.type == "progress" and float(artifact.data) == 100.0
    assert artifact.flow_run_id is not None


# -- the webhook automation ---------------------------------------------------------------------


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received.append({"path": self.path, "headers": dict(self.headers), "body": body.decode()})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    _Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/fileflow/done", _Receiver.received
    server.shutdown()
    server.server_close()


def test_webhook_automation_posts_the_terminal_event_to_an_http_server(prefect_server, receiver, tmp_path):
    from prefect.client.orchestration import get_client

    from deployments import notify

    url, received = receiver
    settings = notify.NotifySettings(webhook_url=url, webhook_headers={"X-Fileflow-Token": "s3cret"})
    assert asyncio.run(notify.ensure(notify.NotifySettings(webhook_url=None))) in ("absent", "disabled")
    assert asyncio.run(notify.ensure(settings)) == "created"
    assert asyncio.run(notify.ensure(settings)) == "updated"  # idempotent: one automation

    async def automations():
        async with get_client() as client:
            return await client.read_automations_by_name(notify.AUTOMATION_NAME)

    (automation,) = asyncio.run(automations())
    assert automation.enabled
    time.sleep(2)  # the triggers service loads changed automations asynchronously

    sample = tmp_path / "notify-me.txt"
    sample.write_text("The upload service wants to know as soon as this file is ready. " * 3)
    (manifest,) = asyncio.run(run_batch([sample], SETTINGS, StorageConfig(basepath=str(tmp_path / "out"))))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not any(manifest["file_id"] in r["body"] for r in received):
        time.sleep(0.5)
    calls = [r for r in received if manifest["file_id"] in r["body"]]
    assert len(calls) == 1, received
    call = calls[0]
    assert call["path"] == "/fileflow/done" and call["headers"].get("X-Fileflow-Token") == "s3cret"
    body = json.loads(call["body"])
    assert body["event"] == "fileflow.file.completed"
    assert body["file"]["file_id"] == manifest["file_id"] and body["file"]["status"] == "completed"
    assert body["file"]["manifest"]["key"] == f"manifests/{manifest['file_id']}.json"
    assert body["flow_run_id"]  # the run that finished it, for a link to the UI

    assert asyncio.run(notify.ensure(notify.NotifySettings(webhook_url=None))) == "disabled"
    (automation,) = asyncio.run(automations())
    assert not automation.enabled
