"""The callback outbox and its deliverer, against real HTTP receivers on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from blocks.storage import StorageConfig, Store
from fileflow.engine import callbacks
from fileflow.engine.callbacks import Deliverer, enqueue, record_key, verify
from fileflow.settings import CallbackSettings
from fileflow.testing.receiver import Receiver
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[1]
SECRET = "a-shared-secret-of-32-characters"


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(StorageConfig(basepath=str(tmp_path / "storage")))


def fast(**more) -> CallbackSettings:
    values = {"secret": SECRET, "first_retry_s": 0.05, "max_retry_s": 0.2, "retry_window_s": 30, "poll_s": 0.05,
              "timeout_s": 5, **more}
    return CallbackSettings(**values)


def drain_until(deliverer: Deliverer, done, timeout_s: float = 30):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        deliverer.drain()
        if done():
            return
        time.sleep(0.05)
    pytest.fail("the outbox did not reach the expected state")


def test_a_receiver_down_for_its_first_attempts_gets_the_delivery_signed(store):
    receiver = Receiver(refuse=3)
    try:
        body = {"upload_id": "u-1", "status": "completed", "name": "Straße.pdf"}
        assert enqueue(store, delivery_id="upload:u-1", url=receiver.url, body=body)
        with Deliverer(store, fast()) as deliverer:
            drain_until(deliverer, lambda: store.exists(record_key("delivered", "upload:u-1")))
        assert len(receiver.received) == 4
        assert len({r["body"] for r in receiver.received}) == 1  # every attempt sends the same bytes
        last = receiver.received[-1]
        assert json.loads(last["body"]) == body
        assert last["headers"]["X-Fileflow-Delivery"] == "upload:u-1"
        assert last["headers"]["X-Fileflow-Signature"].startswith("sha256=")
        assert verify(SECRET, last["headers"], last["body"])
        assert not verify("another-secret-of-some-length", last["headers"], last["body"])
        assert not verify(SECRET, last["headers"], last["body"] + b" ")  # one byte changed
        assert not store.keys("callbacks/pending/")
        record = json.loads(store.get_bytes(record_key("delivered", "upload:u-1")))
        assert record["attempts"] == 4 and record["last_error"] is None
    finally:
        receiver.close()


def test_the_signature_binds_the_timestamp():
    body = b'{"a":1}'
    headers = callbacks.signed_headers(SECRET, "d", body, now=1_000_000)
    assert verify(SECRET, headers, body, now=1_000_100)
    assert not verify(SECRET, headers, body, now=1_000_000 + 301)  # too old: a replay
    forged = {**headers, "X-Fileflow-Timestamp": str(1_000_200)}  # a fresh time on an old signature
    assert not verify(SECRET, forged, body, now=1_000_200)


def test_a_receiver_that_never_accepts_ends_failed_and_is_reported(store, prefect_server):
    import asyncio
    from datetime import timedelta

    from fileflow.ops.audit import audit
    from fileflow.ops.status import callbacks_of

    receiver = Receiver(refuse=10**6, status=500)
    try:
        assert enqueue(store, delivery_id="upload:never", url=receiver.url, body={"upload_id": "never"})
        settings = fast(retry_window_s=3.0)
        with Deliverer(store, settings) as deliverer:
            drain_until(deliverer, lambda: store.exists(record_key("failed", "upload:never")))
        assert len(receiver.received) >= 2  # retried inside its window
    finally:
        receiver.close()
    assert not store.keys("callbacks/pending/")
    shown = callbacks_of(store)
    assert shown["pending"] == 0 and shown["failed"] == 1
    (failed,) = shown["failed_latest"]
    assert failed["delivery_id"] == "upload:never" and failed["url"] == receiver.url
    assert "HTTP 500" in failed["last_error"]
    from fileflow.ops.status import collect, render
    from rich.console import Console

    status = asyncio.run(collect(timedelta(hours=1), store=store))
    assert status["callbacks"]["failed"] == 1
    console = Console(record=True, width=200)
    render(status, console)
    shown_text = console.export_text()
    assert "1 failed for good" in shown_text and "upload:never" in shown_text
    report = asyncio.run(audit(store, stuck_after=timedelta(minutes=15), heartbeat_after=timedelta(minutes=10)))
    (finding,) = [f for f in report.findings if f.kind == "callback_failed"]
    assert finding.name == "upload:never" and receiver.url in finding.detail and not report.ok
    # fixed receiver: an operator puts it back, it is delivered
    receiver = Receiver()
    try:
        record = json.loads(store.get_bytes(record_key("failed", "upload:never")))
        record["url"] = receiver.url  # the receiver moved to a new port in this test
        store.put_bytes(json.dumps(record).encode(), record_key("failed", "upload:never"))
        assert callbacks.retry_failed(store) == ["upload:never"]
        with Deliverer(store, fast()) as deliverer:
            drain_until(deliverer, lambda: store.exists(record_key("delivered", "upload:never")))
        assert not callbacks.failed_deliveries(store)
    finally:
        receiver.close()


def test_a_refused_connection_is_retried_like_an_error_answer(store):
    receiver = Receiver()
    url = receiver.url
    receiver.close()  # nothing listens there any more
    assert enqueue(store, delivery_id="down", url=url, body={"x": 1})
    with Deliverer(store, fast(retry_window_s=3.0)) as deliverer:
        drain_until(deliverer, lambda: store.exists(record_key("failed", "down")))
    (failed,) = callbacks.failed_deliveries(store)
    assert "ConnectError" in failed["last_error"] and failed["attempts"] >= 2


def test_a_delivery_enqueued_twice_is_sent_once(store):
    receiver = Receiver()
    try:
        assert enqueue(store, delivery_id="upload:dup", url=receiver.url, body={"n": 1})
        assert not enqueue(store, delivery_id="upload:dup", url=receiver.url, body={"n": 2})
        with Deliverer(store, fast()) as deliverer:
            drain_until(deliverer, lambda: store.exists(record_key("delivered", "upload:dup")))
            assert not enqueue(store, delivery_id="upload:dup", url=receiver.url, body={"n": 3})  # after delivery too
            deliverer.drain()
        assert [json.loads(r["body"]) for r in receiver.received] == [{"n": 1}]
    finally:
        receiver.close()


def test_concurrent_enqueues_of_one_id_write_one_record(store):
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        enqueue(store, delivery_id="race", url="http://127.0.0.1:9/x", body={}))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]


def test_enqueue_never_touches_the_network(store):
    started = time.monotonic()
    assert enqueue(store, delivery_id="offline", url="http://10.255.255.1:81/unroutable", body={"a": 1})
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("kwargs, message", [
    ({"delivery_id": "", "url": "http://x.example/", "body": {}}, "non-empty delivery_id"),
    ({"delivery_id": "d", "url": "ftp://x.example/", "body": {}}, r"not an http\(s\) URL"),
    ({"delivery_id": "d", "url": "http:///nohost", "body": {}}, r"not an http\(s\) URL"),
    ({"delivery_id": "d", "url": "http://x.example/", "body": [1, 2]}, "JSON object"),
    ({"delivery_id": "d", "url": "http://x.example/", "body": {"t": object()}}, "not JSON"),
    ({"delivery_id": "d", "url": "http://x.example/", "body": {"n": float("nan")}}, "not JSON"),
])
def test_bad_input_is_refused_clearly(store, kwargs, message):
    with pytest.raises(ValueError, match=message):
        enqueue(store, **kwargs)
    assert not store.keys("callbacks/pending/")


def test_a_short_secret_is_refused():
    with pytest.raises(ValueError, match="at least 16 characters"):
        CallbackSettings(secret="short")


def test_a_deliverer_killed_mid_post_loses_nothing(store, tmp_path):
    hanging = Receiver(hang_s=30)
    env = {**os.environ, "FILEFLOW_STORAGE_PATH": store.config.basepath, "FILEFLOW_CALLBACK_SECRET": SECRET,
           "FILEFLOW_CALLBACK_POLL_S": "0.1", "FILEFLOW_CALLBACK_TIMEOUT_S": "60"}
    try:
        assert enqueue(store, delivery_id="upload:kill", url=hanging.url, body={"upload_id": "kill"})
        deliverer = subprocess.Popen([sys.executable, "-m", "fileflow.server.deliverer"], env=env, cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: hanging.received, 60, "the deliverer's POST", interval_s=0.1)
        finally:
            deliverer.send_signal(signal.SIGKILL)
            deliverer.wait(10)
        assert store.keys("callbacks/pending/") == [record_key("pending", "upload:kill")]
        assert not store.keys("callbacks/delivered/") and not store.keys("callbacks/failed/")
    finally:
        hanging.close()
    receiver = Receiver()
    try:  # the receiver came back on another port: point the record there, as a moved service would be
        key = record_key("pending", "upload:kill")
        record = json.loads(store.get_bytes(key))
        store.put_bytes(json.dumps({**record, "url": receiver.url}).encode(), key)
        with Deliverer(store, fast()) as again:
            drain_until(again, lambda: store.exists(record_key("delivered", "upload:kill")))
        assert json.loads(receiver.received[0]["body"]) == {"upload_id": "kill"}
    finally:
        receiver.close()


def test_a_crash_between_delivered_and_removing_pending_sends_nothing_twice(store):
    receiver = Receiver()
    try:
        assert enqueue(store, delivery_id="half", url=receiver.url, body={})
        pending = store.get_bytes(record_key("pending", "half"))
        with Deliverer(store, fast()) as deliverer:
            drain_until(deliverer, lambda: store.exists(record_key("delivered", "half")))
            store.put_bytes(pending, record_key("pending", "half"))  # as if the removal never happened
            deliverer.drain()
        assert len(receiver.received) == 1 and not store.keys("callbacks/pending/")
    finally:
        receiver.close()


def test_the_outbox_works_on_s3(s3_endpoint, s3_bucket):
    receiver = Receiver(refuse=1)
    store = Store(StorageConfig(kind="s3", bucket=s3_bucket, prefix="ff", endpoint_url=s3_endpoint,
                                region="us-east-1", access_key_id="testing", secret_access_key="testing"))
    try:
        assert enqueue(store, delivery_id="s3:one", url=receiver.url, body={"k": "v"})
        assert not enqueue(store, delivery_id="s3:one", url=receiver.url, body={"k": "v"})
        with Deliverer(store, fast()) as deliverer:
            drain_until(deliverer, lambda: store.exists(record_key("delivered", "s3:one")))
        assert len(receiver.received) == 2 and verify(SECRET, receiver.received[-1]["headers"], receiver.received[-1]["body"])
        assert not store.keys("callbacks/pending/")
    finally:
        receiver.close()


def test_fileflow_up_refuses_bad_callback_settings_before_starting(tmp_path, monkeypatch):
    from fileflow.server.stack import Stack

    monkeypatch.setenv("FILEFLOW_CALLBACK_SECRET", "short")
    monkeypatch.setenv("FILEFLOW_NOTIFY_WEBHOOK_URL", "not a url")
    problems = " ".join(Stack(home=tmp_path).problems())
    assert "FILEFLOW_CALLBACK_SECRET must be at least 16 characters" in problems
    assert "FILEFLOW_NOTIFY_WEBHOOK_URL is not an http(s) URL" in problems


def test_the_wait_doubles_with_jitter_up_to_its_cap():
    from fileflow.retry import doubling_with_jitter

    assert [doubling_with_jitter(n, 5, 600, lambda: 0.0) for n in (1, 2, 3, 8, 30)] == [2.5, 5, 10, 300, 300]
    assert [doubling_with_jitter(n, 5, 600, lambda: 0.999999) for n in (1, 9)] == pytest.approx([5, 600])
    with pytest.raises(ValueError):
        doubling_with_jitter(0, 5, 600, lambda: 0.5)


def test_fileflow_deliver_puts_failed_deliveries_back_and_refuses_a_short_secret(store, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from fileflow.cli.app import app

    assert enqueue(store, delivery_id="cli", url="http://127.0.0.1:9/none", body={})
    with Deliverer(store, fast(retry_window_s=0.01)) as deliverer:
        drain_until(deliverer, lambda: store.exists(record_key("failed", "cli")))
    out = ["--out", store.config.basepath, "--home", str(tmp_path / "no-stack")]
    result = CliRunner().invoke(app, ["deliver", "--retry-failed", *out])
    assert result.exit_code == 0 and "1 failed deliveries back in the outbox" in result.output
    assert store.exists(record_key("pending", "cli")) and not callbacks.failed_deliveries(store)
    monkeypatch.setenv("FILEFLOW_CALLBACK_SECRET", "short")
    result = CliRunner().invoke(app, ["deliver", *out])
    assert result.exit_code == 2 and "at least 16 characters" in result.output


def test_an_unreadable_record_is_moved_aside_not_retried_forever(store):
    store.put_bytes(b"{not json", "callbacks/pending/" + "0" * 64 + ".json")
    store.put_bytes(json.dumps({"delivery_id": "x"}).encode(), "callbacks/pending/" + "1" * 64 + ".json")
    with Deliverer(store, fast()) as deliverer:
        assert deliverer.drain() == []
    assert not store.keys("callbacks/pending/")
    assert sorted(d["delivery_id"] for d in callbacks.failed_deliveries(store)) == [
        "unreadable:" + "0" * 64 + ".json", "unreadable:" + "1" * 64 + ".json"]


def test_a_rescheduled_record_is_not_read_again_before_its_time(store):
    receiver = Receiver(refuse=10**6)
    try:
        assert enqueue(store, delivery_id="later", url=receiver.url, body={})
        with Deliverer(store, fast(first_retry_s=60, max_retry_s=60, retry_window_s=3600)) as deliverer:
            (outcome,) = deliverer.drain()
            assert outcome.state == "pending"
            store.put_bytes(b"changed behind its back", record_key("pending", "later"))  # never read: not due
            assert deliverer.drain() == []
        assert len(receiver.received) == 1
    finally:
        receiver.close()
