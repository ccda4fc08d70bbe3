"""The pending-work exporter against a real Prefect server, read over real HTTP.

Two process work pools, a deployment on the first and NO worker, so every run stays where the
test puts it; the exporter must report exactly those runs, per pool, as JSON and as Prometheus
text, and follow state changes and a pool pause.
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

from fileflow.server.exporter import ExporterServer, start_server

pytestmark = pytest.mark.timeout(120)

POOL_A = "converter-test-a"
POOL_B = "converter-test-b"


def _get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def _pool(server: ExporterServer, name: str) -> dict:
    status, content_type, body = _get(f"{server.url}/pools/{name}")
    assert status == 200, body
    assert content_type == "application/json"
    return json.loads(body)


def _metrics(server: ExporterServer) -> dict[tuple[str, str], float]:
    """/metrics parsed with prometheus_client's own parser: {(sample name, pool label): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    status, content_type, body = _get(f"{server.url}/metrics")
    assert status == 200, body
    assert content_type.startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body)}
    expected = {
        "fileflow_pool_waiting_runs",
        "fileflow_pool_running_runs",
        "fileflow_pool_pending_work",
        "fileflow_pool_paused",
        "fileflow_active_mediator_runs",
        "fileflow_exporter_scrape_seconds",
    }
    assert expected <= set(families), sorted(families)
    for name in expected:
        assert families[name].type == "gauge"
        assert families[name].documentation, f"{name} has no HELP"
        assert f"# HELP {name} " in body and f"# TYPE {name} gauge" in body
    return {
        (sample.name, sample.labels.get("pool", "")): sample.value
        for family in families.values()
        for sample in family.samples
    }


@pytest.fixture
def client(prefect_server):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        yield client


@pytest.fixture
def deployment(client):
    """Pools a and b, a flow and a deployment on pool a; all removed afterwards."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    for name in (POOL_A, POOL_B):
        client.create_work_pool(WorkPoolCreate(name=name, type="process"), overwrite=True)
    flow_id = client.create_flow_from_name("exporter-test-step")
    deployment_id = client.create_deployment(flow_id=flow_id, name="exporter-test", work_pool_name=POOL_A)
    yield deployment_id
    runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
    for run in runs:
        client.delete_flow_run(run.id)
    client.delete_deployment(deployment_id)
    client.delete_flow(flow_id)
    for name in (POOL_A, POOL_B):
        client.delete_work_pool(name)


def _serve(prefect_server: str, **kwargs) -> tuple[ExporterServer, threading.Thread]:
    server = start_server("127.0.0.1", 0, api_url=prefect_server, **kwargs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def _stop(server: ExporterServer, thread: threading.Thread) -> None:
    server.shutdown()
    server.server_close()
    server.work.close()
    thread.join(timeout=10)


@pytest.fixture
def exporter(prefect_server):
    """The exporter on a free loopback port, no cache, pool a standing in as the mediator pool."""
    server, thread = _serve(prefect_server, mediator_pool=POOL_A, cache_s=0)
    yield server
    _stop(server, thread)


def test_exporter_reports_pending_work_per_pool(client, deployment, exporter):
    from prefect.client.schemas.actions import WorkPoolUpdate
    from prefect.states import Pending, Running, Scheduled

    runs = [client.create_flow_run_from_deployment(deployment) for _ in range(3)]
    # Scheduled an hour ahead: not due, so neither waiting nor pending.
    client.create_flow_run_from_deployment(
        deployment, state=Scheduled(scheduled_time=datetime.now(timezone.utc) + timedelta(hours=1))
    )

    assert _pool(exporter, POOL_A) == {"pool": POOL_A, "waiting": 3, "running": 0, "pending": 3, "paused": False,
                                       "held": 0, "stale": 0}
    assert _pool(exporter, POOL_B) == {"pool": POOL_B, "waiting": 0, "running": 0, "pending": 0, "paused": False,
                                       "held": 0, "stale": 0}

    metrics = _metrics(exporter)
    assert metrics[("fileflow_pool_waiting_runs", POOL_A)] == 3
    assert metrics[("fileflow_pool_running_runs", POOL_A)] == 0
    assert metrics[("fileflow_pool_pending_work", POOL_A)] == 3
    assert metrics[("fileflow_pool_paused", POOL_A)] == 0
    assert metrics[("fileflow_pool_pending_work", POOL_B)] == 0
    assert metrics[("fileflow_active_mediator_runs", "")] == 3
    assert 0 < metrics[("fileflow_exporter_scrape_seconds", "")] < 10

    # One run starts, another is claimed by a (pretend) worker: a worker is busy with both.
    client.set_flow_run_state(runs[0].id, Running(), force=True)
    client.set_flow_run_state(runs[1].id, Pending(), force=True)
    assert _pool(exporter, POOL_A) == {"pool": POOL_A, "waiting": 1, "running": 2, "pending": 3, "paused": False,
                                       "held": 0, "stale": 0}
    metrics = _metrics(exporter)
    assert metrics[("fileflow_pool_waiting_runs", POOL_A)] == 1
    assert metrics[("fileflow_pool_running_runs", POOL_A)] == 2
    assert metrics[("fileflow_pool_pending_work", POOL_A)] == 3

    # An operator pauses the pool during an incident: its queued run is held, not pending (no
    # worker could claim it, so KEDA must start none); the runs already at work still count.
    client.update_work_pool(POOL_A, WorkPoolUpdate(is_paused=True))
    assert _pool(exporter, POOL_A)["paused"] is True
    metrics = _metrics(exporter)
    assert metrics[("fileflow_pool_paused", POOL_A)] == 1
    assert metrics[("fileflow_pool_pending_work", POOL_A)] == 2
    assert metrics[("fileflow_pool_held_runs", POOL_A)] == 1

    status, _, body = _get(f"{exporter.url}/pools")
    listed = {p["pool"]: p for p in json.loads(body)}
    assert status == 200
    assert listed[POOL_A] == {"pool": POOL_A, "waiting": 0, "running": 2, "pending": 2, "paused": True,
                              "held": 1, "stale": 0}
    assert listed[POOL_B]["pending"] == 0

    status, content_type, body = _get(f"{exporter.url}/pools/no-such-pool")
    assert (status, content_type) == (404, "application/json")
    assert json.loads(body)["pool"] == "no-such-pool"

    assert _get(f"{exporter.url}/healthz")[:3:2] == (200, "ok\n")


def test_figures_are_cached_for_the_interval(prefect_server, client, deployment):
    server, thread = _serve(prefect_server, cache_s=60)
    refreshes = []
    read_all = server.work._read_all

    async def counted_read_all():  # a spy: the real read still happens
        refreshes.append(1)
        return await read_all()

    server.work._read_all = counted_read_all
    try:
        client.create_flow_run_from_deployment(deployment)
        # Many scrapers at once: one refresh, shared by all of them.
        statuses = []
        scrapers = [
            threading.Thread(target=lambda: statuses.append(_get(f"{server.url}/metrics")[0])) for _ in range(20)
        ]
        for scraper in scrapers:
            scraper.start()
        for scraper in scrapers:
            scraper.join(timeout=30)
        assert statuses == [200] * 20
        assert len(refreshes) == 1
        assert _pool(server, POOL_A)["waiting"] == 1
        assert _metrics(server)[("fileflow_pool_waiting_runs", POOL_A)] == 1
        client.create_flow_run_from_deployment(deployment)
        # Within the interval both forms answer from the cache, not from the API.
        assert _pool(server, POOL_A)["waiting"] == 1
        assert _metrics(server)[("fileflow_pool_waiting_runs", POOL_A)] == 1
        assert len(refreshes) == 1
    finally:
        _stop(server, thread)


def test_unreachable_api_is_an_error_not_zero():
    """A scaler must never read 'no work' when the API is down: 503 everywhere."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/api"
    server, thread = _serve(dead, cache_s=0, api_timeout_s=5)
    try:
        assert _get(f"{server.url}/healthz")[0] == 503
        status, _, body = _get(f"{server.url}/pools/{POOL_A}")
        assert status == 503 and "error" in json.loads(body)
        assert _get(f"{server.url}/metrics")[0] == 503
    finally:
        _stop(server, thread)


def test_exposition_names_types_labels_and_values_as_documented():
    """The collectors' text, read back by prometheus_client's parser: every family docs/exporter.md
    and the Grafana dashboard name, with its type, HELP, labels and the snapshot's figures; label
    values that need escaping come back intact."""
    from prometheus_client.parser import text_string_to_metric_families

    from fileflow.engine.events import COMPLETED, FAILED
    from fileflow.server.exporter import PoolFigures, Snapshot, metrics_registry, render_metrics
    from fileflow.server.file_metrics import FileEventCounters

    odd = 'converter-"odd"\\name\nx'
    counters = FileEventCounters()
    now = datetime.now(timezone.utc)
    steps = [{"name": "ocr", "status": "completed", "duration_s": 0.7}, {"name": "language", "status": "completed", "duration_s": 12.0, "cached": True}]
    counters.count("e1", COMPLETED, now, {"kind": "image", "steps": steps})
    counters.count("e2", FAILED, now, {"kind": "pdf", "error": {"type": "ToolTimeout"}, "steps": []})
    snap = Snapshot(
        pools={"converter-ocr": PoolFigures("converter-ocr", 3, 1, False), odd: PoolFigures(odd, 0, 2, True)},
        mediator_pool="converter-ocr",
        scrape_seconds=0.1234567,
        taken_at=0.0,
        files=counters.figures(),
    )
    body = render_metrics(metrics_registry(lambda: snap))
    families = {f.name: f for f in text_string_to_metric_families(body)}
    types = {name: f.type for name, f in families.items()}
    assert types == {
        "fileflow_pool_waiting_runs": "gauge",
        "fileflow_pool_running_runs": "gauge",
        "fileflow_pool_pending_work": "gauge",
        "fileflow_pool_paused": "gauge",
        "fileflow_pool_held_runs": "gauge",
        "fileflow_pool_stale_pending_runs": "gauge",
        "fileflow_active_mediator_runs": "gauge",
        "fileflow_exporter_scrape_seconds": "gauge",
        "fileflow_files": "counter",  # the parser names a counter family without its _total
        "fileflow_file_failures": "counter",
        "fileflow_step_duration_seconds": "histogram",
    }
    for name, family in families.items():
        assert family.documentation, name
        exposed = f"{name}_total" if family.type == "counter" else name
        assert f"# HELP {exposed} {family.documentation}\n" in body
        assert f"# TYPE {exposed} {family.type}\n" in body
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}

    def pool(p: str) -> tuple:
        return (("pool", p),)

    assert samples[("fileflow_pool_waiting_runs", pool("converter-ocr"))] == 3
    assert samples[("fileflow_pool_running_runs", pool("converter-ocr"))] == 1
    assert samples[("fileflow_pool_pending_work", pool("converter-ocr"))] == 4
    assert samples[("fileflow_pool_paused", pool("converter-ocr"))] == 0
    assert samples[("fileflow_pool_pending_work", pool(odd))] == 2
    assert samples[("fileflow_pool_paused", pool(odd))] == 1
    assert samples[("fileflow_active_mediator_runs", ())] == 4
    assert samples[("fileflow_exporter_scrape_seconds", ())] == 0.123457
    assert samples[("fileflow_files_total", (("kind", "image"), ("status", "completed")))] == 1
    assert samples[("fileflow_files_total", (("kind", "pdf"), ("status", "failed")))] == 1
    assert samples[("fileflow_file_failures_total", (("error", "ToolTimeout"), ("kind", "pdf")))] == 1
    ocr = (("converter", "ocr"),)
    assert samples[("fileflow_step_duration_seconds_count", ocr)] == 1
    assert samples[("fileflow_step_duration_seconds_sum", ocr)] == 0.7
    # le as the dashboard and existing series know it ("1", not "1.0"), cumulative, +Inf last
    assert samples[("fileflow_step_duration_seconds_bucket", (*ocr, ("le", "0.5")))] == 0
    assert samples[("fileflow_step_duration_seconds_bucket", (*ocr, ("le", "1")))] == 1
    assert samples[("fileflow_step_duration_seconds_bucket", (*ocr, ("le", "+Inf")))] == 1
    assert not any(dict(labels).get("converter") == "language" for _, labels in samples)  # cached: not a run
    assert "process_" not in body and "python_" not in body  # the exporter's own registry only


# -- what a worker could claim now (issue 21): nothing KEDA would start a pod for in vain ---------


@pytest.fixture
def queued(client):
    """Pool a with its default queue and a ``reprocess`` queue (limit-free), a deployment on each
    queue and one with a deployment concurrency limit of 1; all removed afterwards."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    client.create_work_pool(WorkPoolCreate(name=POOL_A, type="process"), overwrite=True)
    client.create_work_queue("reprocess", work_pool_name=POOL_A, priority=100)
    flow_id = client.create_flow_from_name("exporter-test-claimable")
    made = {
        "default": client.create_deployment(flow_id=flow_id, name="claim-default", work_pool_name=POOL_A),
        "reprocess": client.create_deployment(flow_id=flow_id, name="claim-reprocess", work_pool_name=POOL_A,
                                              work_queue_name="reprocess"),
        "limited": client.create_deployment(flow_id=flow_id, name="claim-limited", work_pool_name=POOL_A,
                                            concurrency_limit=1),
    }
    yield made
    ids = list(made.values())
    for run in client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=ids))):
        client.delete_flow_run(run.id)
    for deployment_id in ids:
        client.delete_deployment(deployment_id)
    client.delete_flow(flow_id)
    client.delete_work_pool(POOL_A)


def _figures(server: ExporterServer) -> tuple[int, int, int, int, int]:
    p = _pool(server, POOL_A)
    return p["waiting"], p["running"], p["pending"], p["held"], p["stale"]


def test_paused_queue_does_not_raise_pending(client, queued, exporter):
    queue = client.read_work_queue_by_name("reprocess", work_pool_name=POOL_A)
    client.update_work_queue(queue.id, is_paused=True)
    for _ in range(3):
        client.create_flow_run_from_deployment(queued["reprocess"])
    client.create_flow_run_from_deployment(queued["default"])
    # Only the default queue's run can be claimed; the paused queue's three are held.
    assert _figures(exporter) == (1, 0, 1, 3, 0)
    assert _metrics(exporter)[("fileflow_pool_held_runs", POOL_A)] == 3

    client.update_work_queue(queue.id, is_paused=False)
    assert _figures(exporter) == (4, 0, 4, 0, 0)

    # A queue concurrency limit of 1 with one of its runs already Running: one claimable fewer
    # than due, and the rest of that queue held until the slot frees.
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.states import Running

    client.update_work_queue(queue.id, concurrency_limit=1)
    # filtered by the server: the session's server may hold more runs than one page
    reprocess_runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(
        any_=[queued["reprocess"]])))
    client.set_flow_run_state(reprocess_runs[0].id, Running(), force=True)
    assert _figures(exporter) == (1, 1, 2, 2, 0)


def test_concurrency_wait_does_not_raise_pending(client, queued, exporter):
    from prefect.states import Completed, Pending, Running, Scheduled

    first = client.create_flow_run_from_deployment(queued["limited"])
    # Through the server's own orchestration: Pending takes the deployment's one slot.
    assert client.set_flow_run_state(first.id, Pending()).state.type.value == "PENDING"
    assert client.set_flow_run_state(first.id, Running()).state.type.value == "RUNNING"
    second = client.create_flow_run_from_deployment(queued["limited"])
    answer = client.set_flow_run_state(second.id, Pending())
    # The server refused the second run a slot and put it back to wait.
    rejected = client.read_flow_run(second.id).state
    assert (rejected.type.value, rejected.name) == ("SCHEDULED", "AwaitingConcurrencySlot"), answer
    # Its wait over (as after concurrency_slot_wait_seconds): due again, still no free slot.
    client.set_flow_run_state(second.id, Scheduled(name="AwaitingConcurrencySlot",
                                                   scheduled_time=datetime.now(timezone.utc) - timedelta(seconds=1)),
                              force=True)
    assert _figures(exporter) == (0, 1, 1, 1, 0)

    # The slot frees: now a worker could claim it, and it counts.
    client.set_flow_run_state(first.id, Completed())
    assert _figures(exporter) == (1, 0, 1, 0, 0)


def test_pending_run_of_a_dead_worker_is_stale_not_pending(prefect_server, client, queued):
    from prefect.states import Pending

    server, thread = _serve(prefect_server, mediator_pool=POOL_A, cache_s=0, pending_grace_s=2)
    try:
        run = client.create_flow_run_from_deployment(queued["default"])
        client.set_flow_run_state(run.id, Pending(), force=True)
        assert _figures(server) == (0, 1, 1, 0, 0)  # a worker claimed it and is starting it
        import time

        time.sleep(2.5)  # past the grace and still Pending: the worker died before starting it
        assert _figures(server) == (0, 0, 0, 0, 1)
        assert _metrics(server)[("fileflow_pool_stale_pending_runs", POOL_A)] == 1
    finally:
        _stop(server, thread)


def test_the_charts_helm_test_pod_passes_against_a_real_exporter(client, exporter):
    """The `helm test` pod's own command (from the rendered chart), pointed at this exporter."""
    import subprocess
    import sys

    from prefect.client.schemas.actions import WorkPoolCreate

    from tests.test_helm import MINIMAL, of_kind, render

    (pod,) = of_kind(render(MINIMAL), "Pod").values()
    command = pod["spec"]["containers"][0]["args"]
    assert command[:2] == ["python", "-c"]
    client.create_work_pool(WorkPoolCreate(name="fileflow-mediator", type="process"), overwrite=True)
    try:
        ok = subprocess.run([sys.executable, "-c", command[2], exporter.url], capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0, ok.stderr
        assert "exporter answers" in ok.stdout
    finally:
        client.delete_work_pool("fileflow-mediator")
    gone = subprocess.run([sys.executable, "-c", command[2], exporter.url], capture_output=True, text=True, timeout=60)
    assert gone.returncode != 0  # no mediator pool: the test fails, as it should
