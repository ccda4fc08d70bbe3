"""Terminal events, batch tags, the archive's progress artifact and the global webhook (through
the callback outbox), on a real Prefect server with real converters; the webhook is received by
a real HTTP server on loopback.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from pathlib import Path

import pytest

from blocks.storage import StorageConfig
from fileflow.ops.batch import run_batch
from fileflow.settings import PipelineSettings
from fileflow.testing.receiver import Receiver

SAMPLES = Path(__file__).parent / "samples"
SETTINGS = PipelineSettings(child_processes=2, max_active_files=4, retry_delay_s=0.1)
# The same files (same content, so same ids) are processed by other tests on the session's
# server: events and artifacts are told apart by this batch's tag, unique per test session.
BATCH = f"test-events-{uuid.uuid4().hex[:8]}"

pytestmark = pytest.mark.timeout(900)  # a shared, busy 2-core machine makes the batch slow


async def _events(resource_ids: list[str], names: tuple[str, ...], expect: int, timeout_s: float = 60) -> list:
    """The persisted events of these resources, once ``expect`` of them are there."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventOccurredFilter,
        EventRelatedFilter,
        EventResourceFilter,
    )
    from prefect.types._datetime import now

    deadline = time.monotonic() + timeout_s
    async with get_client() as client:
        while True:
            page = await client.read_events(
                EventFilter(
                    occurred=EventOccurredFilter(since=now("UTC").replace(year=2000)),
                    event=EventNameFilter(name=list(names)),
                    resource=EventResourceFilter(id=resource_ids),
                    related=EventRelatedFilter(id=[f"prefect.tag.batch:{BATCH}"]),
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
        run_batch(sorted(folder.iterdir()), SETTINGS, StorageConfig(basepath=str(out)), batch_id=BATCH)
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
        upload = event.payload["upload"]  # the upload that ended, and where its record is
        assert upload["name"] == manifest["name"] and event.resource["fileflow.upload"] == upload["upload_id"]
        assert json.loads((out / upload["record"]["key"]).read_text())["status"] == manifest["status"]
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
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"batch:{BATCH}"]))
            )

    runs = {r.name: r for r in asyncio.run(read())}
    for name, manifest in manifests.items():
        assert f"file:{name}" in runs, sorted(runs)  # every router run, members' too
    member = next(m for m in manifests.values() if m["parent"] and m["kind"] == "text")
    member_run = runs[f"file:{member['name']}"]
    assert {t for t in member_run.tags if t.startswith("kind:")} == {"kind:text"}
    assert {t for t in runs["file:bundle.zip"].tags if t.startswith("kind:")} == {"kind:archive"}


def test_archive_run_has_a_progress_artifact_at_100_percent(batch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterTags,
    )

    _, manifests = batch
    archive = manifests["bundle.zip"]

    async def read():
        async with get_client() as client:
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"batch:{BATCH}"])))
            return await client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[f"members-{archive['file_id'][:32]}"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[r.id for r in runs])))

    (artifact,) = asyncio.run(read())
    assert artifact.type == "progress" and float(artifact.data) == 100.0
    assert artifact.flow_run_id is not None


# -- the webhook automation ---------------------------------------------------------------------


@pytest.fixture
def receiver():
    with Receiver(path="/fileflow/done") as endpoint:
        yield endpoint.url, endpoint.received


def test_the_global_webhook_goes_through_the_outbox_signed(prefect_server, receiver, tmp_path, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.events.actions import DoNothing
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    from blocks.storage import Store
    from deployments import notify
    from fileflow.engine.callbacks import Deliverer, record_key, verify
    from fileflow.names import NOTIFY_AUTOMATION
    from fileflow.settings import CallbackSettings

    url, received = receiver
    secret = "webhook-secret-of-some-length"
    monkeypatch.setenv("FILEFLOW_NOTIFY_WEBHOOK_URL", url)
    monkeypatch.setenv("FILEFLOW_NOTIFY_WEBHOOK_HEADERS", '{"X-Fileflow-Token": "s3cret"}')

    async def old_automation():  # what an older setup left: paused by the setup now
        async with get_client() as client:
            for automation in await client.read_automations_by_name(NOTIFY_AUTOMATION):
                await client.delete_automation(automation.id)
            await client.create_automation(AutomationCore(
                name=NOTIFY_AUTOMATION, trigger=EventTrigger(expect={"never.happens"}, posture=Posture.Reactive,
                                                             threshold=1, within=0), actions=[DoNothing()]))
            assert await notify.ensure() == "disabled"
            assert await notify.ensure() == "absent"
            return await client.read_automations_by_name(NOTIFY_AUTOMATION)

    (automation,) = asyncio.run(old_automation())
    assert not automation.enabled

    sample = tmp_path / "notify-me.txt"
    sample.write_text("The upload service wants to know as soon as this file is ready. " * 3)
    out = StorageConfig(basepath=str(tmp_path / "out"))
    (manifest,) = asyncio.run(run_batch([sample], SETTINGS, out))
    store = Store(out)
    (pending,) = store.keys("callbacks/pending/")  # the mediator only wrote to the outbox
    assert not received
    settings = CallbackSettings(secret=secret, first_retry_s=0.05, max_retry_s=0.2, poll_s=0.05)
    with Deliverer(store, settings, webhook_headers={"X-Fileflow-Token": "s3cret"}) as deliverer:
        deliverer.drain()
    (call,) = received
    assert call["path"] == "/fileflow/done" and call["headers"].get("X-Fileflow-Token") == "s3cret"
    assert verify(secret, call["headers"], call["body"])
    body = json.loads(call["body"])
    assert body["event"] == "fileflow.file.completed" and body["event_id"]
    assert body["file"]["file_id"] == manifest["file_id"] and body["file"]["status"] == "completed"
    assert body["file"]["manifest"]["key"] == f"manifests/{manifest['file_id']}.json"
    assert body["flow_run_id"]  # the run that finished it, for a link to the UI
    delivery_id = call["headers"]["X-Fileflow-Delivery"]
    assert delivery_id == f"webhook:{manifest['file_id']}:{body['flow_run_id']}"
    assert store.exists(record_key("delivered", delivery_id))
    assert b"s3cret" not in store.get_bytes(record_key("delivered", delivery_id))  # headers never stored


def test_the_webhook_setting_is_checked():
    from fileflow.settings import NotifySettings

    with pytest.raises(ValueError, match="not an http"):
        NotifySettings(webhook_url="uploads.example/hook")
    with pytest.raises(ValueError, match="unknown events"):
        NotifySettings(webhook_url="http://uploads.example/hook", events=("fileflow.file.done",))


# -- the exporter's file metrics, from the same events ------------------------------------------


def _scrape(url: str) -> dict[tuple[str, tuple], float]:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
        body = response.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert families["fileflow_files"].type == "counter"
    assert families["fileflow_file_failures"].type == "counter"
    assert families["fileflow_step_duration_seconds"].type == "histogram"
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}


def test_exporter_counts_files_failures_and_step_durations(prefect_server, tmp_path):
    from fileflow.server.exporter import start_server

    server = start_server("127.0.0.1", 0, api_url=prefect_server, cache_s=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        before = _scrape(server.url)
        assert not any(name.startswith("fileflow_files_total") for name, _ in before)  # counts from start
        folder = tmp_path / "in"
        folder.mkdir()
        (folder / "counted.txt").write_text("The exporter counts this file once it has reached its end. " * 3)
        (folder / "counted-empty.txt").write_bytes(b"")
        manifests = asyncio.run(run_batch(sorted(folder.iterdir()), SETTINGS, StorageConfig(basepath=str(tmp_path / "out"))))
        done = {m["name"]: m for m in manifests}
        deadline = time.monotonic() + 60
        while True:
            figures = _scrape(server.url)
            total = sum(v for (name, _), v in figures.items() if name == "fileflow_files_total")
            if total >= 2 or time.monotonic() > deadline:
                break
            time.sleep(1)
        text = done["counted.txt"]
        empty = done["counted-empty.txt"]
        assert figures[("fileflow_files_total", (("kind", "text"), ("status", "completed")))] == 1
        assert figures[("fileflow_files_total", (("kind", empty["kind"]), ("status", "failed")))] == 1
        assert total == 2
        assert figures[("fileflow_file_failures_total", (("error", "CorruptInput"), ("kind", empty["kind"])))] == 1
        ran = [s for s in text["steps"] if s["status"] == "completed" and not s["cached"]]
        assert ran, text["steps"]
        for step in ran:
            labels = (("converter", step["name"]),)
            assert figures[("fileflow_step_duration_seconds_count", labels)] == 1
            assert figures[("fileflow_step_duration_seconds_sum", labels)] == pytest.approx(step["duration_s"], abs=1e-5)
            assert figures[("fileflow_step_duration_seconds_bucket", (("converter", step["name"]), ("le", "+Inf")))] == 1
        again = _scrape(server.url)  # a refresh reads the same events again (slack): counted once
        assert sum(v for (name, _), v in again.items() if name == "fileflow_files_total") == 2
    finally:
        server.shutdown()
        server.server_close()
        server.work.close()
