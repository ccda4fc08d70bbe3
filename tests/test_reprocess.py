"""Reprocessing: selection from manifests in storage, a dry run that predicts exactly what a run
executes, progress in the UI, and a killed job that carries on where it stopped."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import converters
from blocks.storage import StorageConfig, Store
from fileflow.ops.batch import run_batch
from fileflow.errors import InvalidRequest
from fileflow.ops.reprocess import (
    Selection,
    check_job,
    make_selection,
    run_job,
    select,
    steps_to_redo,
    with_prefix,
)
from fileflow.settings import PipelineSettings

SAMPLES = Path(__file__).parent / "samples"
FILEFLOW = Path(sys.executable).parent / "fileflow"
ROOT = Path(__file__).resolve().parents[1]
CURRENT = {name: spec.version for name, spec in converters.all_specs().items()}


@pytest.fixture(scope="module")
def processed(prefect_server, tmp_path_factory):
    """A store as uploads leave it: text, CSV, a photo, an archive of three, an empty and an unknown file."""
    root = tmp_path_factory.mktemp("reprocess")
    (root / "in").mkdir()
    (root / "in" / "empty.txt").write_bytes(b"")
    blob = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(128))  # libmagic: just "data"
    (root / "in" / "blob.bin").write_bytes(blob)
    files = [SAMPLES / n for n in ("notes-de.txt", "table.csv", "photo.jpg", "bundle.zip")]
    files += [root / "in" / "empty.txt", root / "in" / "blob.bin"]
    out = root / "out"
    manifests = asyncio.run(run_batch(files, PipelineSettings(child_processes=2), StorageConfig(basepath=str(out))))
    broken = {m["name"]: m["steps"] for m in manifests if m["status"] != "completed"}
    assert set(broken) == {"empty.txt", "blob.bin"}, broken  # anything else: the batch itself went wrong
    return {"out": out, "manifests": {m["name"]: m for m in manifests}, "api": prefect_server}


def store_of(processed) -> Store:
    return Store(StorageConfig(basepath=str(processed["out"])))


def names(plan) -> set[str]:
    return {item.name for item in plan.items}


def test_by_default_only_failed_files_are_selected_while_nothing_is_outdated(processed):
    plan = select(store_of(processed), Selection())
    by_name = {m: processed["manifests"][m] for m in processed["manifests"]}
    failed = {n for n, m in by_name.items() if m["status"] == "failed"}
    assert failed == {"empty.txt", "blob.bin"}
    assert names(plan) == failed
    assert plan.scanned == len(by_name) == 9  # 6 uploads and 3 archive members
    for item in plan.items:
        assert item.steps == [s["name"] for s in by_name[item.name]["steps"] if s["status"] != "completed"]


def test_filters_pick_by_kind_type_status_error_list_and_date(processed):
    store = store_of(processed)
    photo = processed["manifests"]["photo.jpg"]
    # kind + forced converter: its consumers follow (language reads what OCR made)
    images = select(store, Selection(mime=["image/*"], redo=["ocr"]))
    assert names(images) == {"photo.jpg", "bundle.zip/bundle/images/label.png"}
    assert all(item.steps == ["ocr", "language"] for item in images.items)
    members = {i.name: i for i in select(store, Selection(kinds=["text"], redo=["language"])).items}
    assert set(members) == {"notes-de.txt", "table.csv", "bundle.zip/bundle/README.txt",
                            "bundle.zip/bundle/notes/chantier-fr.md"}
    assert members["bundle.zip/bundle/README.txt"].depth == 1 and members["notes-de.txt"].depth == 0
    assert not any(i.via_parent for i in members.values())  # their archive is not selected
    # an archive selected with its members: they are processed again through it
    whole = {i.name: i for i in select(store, Selection(redo=["archive_expand", "language"])).items}
    assert not whole["bundle.zip"].via_parent and whole["bundle.zip/bundle/README.txt"].via_parent
    # status and failure type
    failed = select(store, Selection(status=["failed"]))
    error = next(s["error"]["type"] for s in processed["manifests"]["empty.txt"]["steps"] if s.get("error"))
    assert names(select(store, Selection(errors=[error]))) == {"empty.txt"}
    assert names(select(store, Selection(errors=["UnsupportedInput"]))) == {"blob.bin"}
    assert names(failed) == {"empty.txt", "blob.bin"}
    assert select(store, Selection(status=["completed"])).items == []  # nothing outdated or failed
    # an explicit list: by id prefix and by name
    listed = select(store, Selection(files=[photo["file_id"][:12], "table.csv"], redo=["language"]))
    assert names(listed) == {"photo.jpg", "table.csv"}
    # when the manifest was written
    now = datetime.now(timezone.utc)
    assert select(store, Selection(since=now + timedelta(hours=1), redo=["language"])).matched == 0
    assert select(store, Selection(until=now + timedelta(hours=1))).matched == 9
    # a storage prefix with nothing under it
    assert select(Store(with_prefix(store.config, "elsewhere")), Selection()).scanned == 0


def test_outdated_converter_versions_are_redone_with_their_consumers(processed):
    """A manifest written by an earlier release records an older OCR: OCR and language are redone."""
    manifest = json.loads(json.dumps(processed["manifests"]["photo.jpg"]))
    for step in manifest["steps"]:
        if step["name"] == "ocr":
            step["converter_version"] = "0.1.0"
    assert steps_to_redo(manifest, set(), CURRENT) == ["ocr", "language"]
    assert steps_to_redo(processed["manifests"]["photo.jpg"], set(), CURRENT) == []
    from fileflow.ops.reprocess import _matches

    written = datetime.now(timezone.utc)
    assert _matches(Selection(converter="ocr", older_than=CURRENT["ocr"]), manifest, written)
    assert not _matches(Selection(converter="ocr", older_than="0.0.1"), manifest, written)
    assert not _matches(Selection(converter="video_probe", older_than="99"), manifest, written)  # never ran
    # an office document whose PDF conversion is outdated redoes everything that read its PDF
    office = {"steps": [{"name": n, "status": "completed", "converter_version": CURRENT[n]}
                        for n in ("inspect", "office_pdf", "pdf_preview", "pdf_text", "language")]}
    office["steps"][1]["converter_version"] = "0.0.1"
    assert steps_to_redo(office, set(), CURRENT) == ["office_pdf", "pdf_preview", "pdf_text", "language"]


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"redo": ["nosuch"]}, "unknown converter"),
        ({"older_than": "1.0"}, "needs --converter"),
        ({"converter": "ocr", "older_than": "new"}, "not a version"),
        ({"errors": ["Oops"]}, "unknown error type"),
        ({"since": "2026-02-01", "until": "2026-01-01"}, "is not before"),
        ({"kinds": ["spreadsheet"]}, "invalid selection"),
        ({"status": ["done"]}, "invalid selection"),
        ({"since": "yesterday"}, "invalid selection"),
        ({"files": [" "]}, "empty file id"),
    ],
)
def test_bad_selections_are_refused_clearly(fields, message):
    with pytest.raises(InvalidRequest, match=message):
        make_selection(fields)


def test_bad_job_ids_prefixes_and_lists_are_refused(tmp_path):
    for job in ("", "../x", "a b", "x" * 65):
        with pytest.raises(InvalidRequest):
            check_job(job)
    with pytest.raises(InvalidRequest, match="storage prefix"):
        with_prefix(StorageConfig(basepath=str(tmp_path)), "../up")
    (tmp_path / "list.txt").write_text("# nothing but a comment\n\n")
    with pytest.raises(InvalidRequest, match="lists no file"):
        make_selection({}, tmp_path / "list.txt")
    with pytest.raises(InvalidRequest, match="cannot read"):
        make_selection({}, tmp_path / "missing.txt")


def cli(*args: str, api: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_API_URL": api, "COLUMNS": "200"}
    return subprocess.run([str(FILEFLOW), *args], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT, **kw)


def test_dry_run_predicts_exactly_the_steps_a_run_executes_and_progress_shows(processed, monkeypatch):
    from prefect.client.orchestration import get_client

    from fileflow.ops.reprocess_flow import reprocess

    out = processed["out"]
    dry = cli("reprocess", "--out", str(out), "--mime", "image/*", "--redo", "ocr", "--dry-run", api=processed["api"])
    assert dry.returncode == 0, dry.stderr
    assert "2 files, 4 steps to redo" in " ".join(dry.stdout.split())
    assert not (out / "reprocess" / "dry-run").exists()  # a dry run writes nothing

    monkeypatch.setenv("FILEFLOW_STORAGE_PATH", str(out))
    selection = Selection(mime=["image/*"], redo=["ocr"])
    report = asyncio.run(reprocess(selection=selection, job="images-ocr"))
    assert (report["files"], report["steps"], report["processed"]) == (2, 4, 2)
    executed = 0
    for name in ("photo.jpg", "bundle.zip/bundle/images/label.png"):
        manifest = next(json.loads(p.read_text()) for p in (out / "manifests").glob("*.json")
                        if json.loads(p.read_text())["name"] == name)
        assert manifest["status"] == "completed"
        ran = [s["name"] for s in manifest["steps"] if s["status"] == "completed" and not s["cached"]]
        assert ran == ["ocr", "language"], (name, manifest["steps"])
        executed += len(ran)
    assert executed == report["steps"]

    async def artifacts():  # by key: the session's server holds more artifacts than one page
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        keys = ["reprocess-progress-images-ocr", "reprocess-images-ocr"]
        async with get_client() as client:
            found = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
        return {a.key: a for a in found}

    found = asyncio.run(artifacts())
    assert found["reprocess-progress-images-ocr"].data == 100.0
    assert "2 files and 4 steps to redo" in found["reprocess-images-ocr"].data


def markers(done: Path) -> set[str]:
    """The job's finished-file markers; a marker being written is a hidden ``.part`` file beside them."""
    return {p.name for p in done.glob("*.json")} if done.exists() else set()


def test_a_killed_job_carries_on_where_it_stopped(processed):
    """Slowed by its own rate limit, the job is killed after its first file; run again it does the rest."""
    out = processed["out"]
    api = processed["api"]
    job = "killed-and-resumed"
    done = out / "reprocess" / job / "done"
    assert cli("limits", "set", "reprocess-rate", "0.2", api=api).returncode == 0  # one file every 5 s
    args = ["reprocess", "--out", str(out), "--redo", "language", "--job", job, "--workers", "1"]
    env = {**os.environ, "PREFECT_API_URL": api}
    proc = subprocess.Popen([str(FILEFLOW), *args], env=env, cwd=ROOT, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None and not markers(done):
            time.sleep(0.1)
        assert proc.poll() is None, "the job ended before it could be killed: " + proc.stderr.read()[-2000:]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    before = markers(done)
    plan = json.loads((out / "reprocess" / job / "plan.json").read_text())["plan"]
    total = len([i for i in plan["items"] if not i["via_parent"]])
    assert 1 <= len(before) < total
    # the killed run's slot of fileflow-reprocess comes back when its lease ends (60 s); meanwhile one more
    assert cli("limits", "set", "reprocess-rate", "50", api=api).returncode == 0
    assert cli("limits", "set", "reprocess", "2", api=api).returncode == 0
    again = cli(*args, api=api)
    assert again.returncode == 1, again.stdout[-2000:] + again.stderr[-2000:]  # empty.txt and blob.bin fail again
    assert f"{len(before)} done before, {total - len(before)} now" in again.stdout
    from tests.test_limits import _remove_fileflow_limits

    asyncio.run(_remove_fileflow_limits())  # the rest of the session runs without reprocessing limits
    assert {p.name for p in done.iterdir()} == {f"{i['file_id']}.json" for i in plan["items"] if not i["via_parent"]}


@pytest.mark.slow
def test_a_new_upload_step_is_served_before_waiting_reprocess_steps(prefect_server, tmp_path):
    """One worker on a converter pool is busy with a large reprocessing; an upload's step submitted
    after it is claimed before every reprocess step still waiting when the upload's run was made
    (claim times are the runs' Pending states in Prefect's API)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    from blocks.storage import derived_prefix, original_key
    from converters.inspect import sha256_of
    from fileflow.ops.limits import REPROCESS_QUEUE, ensure_pool, ensure_reprocess_queues
    from fileflow.engine.pools import run_on_pool
    from fileflow.engine.step import StepRequest
    from fileflow.server.stack import WORKER_ENV

    converter, pool = "text_extract", "converter-text_extract"
    run_id = uuid.uuid4().hex
    storage = StorageConfig(basepath=str(tmp_path / "out"))
    store = Store(storage)
    env = {**os.environ, **WORKER_ENV, "PREFECT_API_URL": prefect_server, "FILEFLOW_STORAGE_PATH": storage.basepath}

    async def prepare():
        async with get_client() as client:
            await ensure_pool(client, pool)
            await ensure_reprocess_queues(client, [pool])

    asyncio.run(prepare())  # the pool first: deploying to a missing pool fails
    deployed = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--prefect-file",
                               "prefect.yaml", "--name", converter], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=600)
    assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-2000:]

    def step(name: str, lane: str | None):
        sample = tmp_path / name
        sample.write_text(f"{name} ({run_id}): a line of text to normalise. " * 4)  # new runs every time
        digest = sha256_of(sample)
        store.put_file(sample, original_key(digest))
        payload = StepRequest(converter=converter, storage=storage, input_key=original_key(digest), input_ext="txt",
                              output_prefix=derived_prefix(digest, converter))
        return run_on_pool(converter, name, payload, store=store, cache_key=f"{converter}-prio-{digest[:16]}",
                           file_id=digest, attempt=1, timeout_s=600, poll_s=0.5, work_queue_name=lane)

    async def runs():
        """This test's step runs by label (a run gets its name only when it starts)."""
        async with get_client() as client:
            deployment = await client.read_deployment_by_name(f"converter-step/{converter}")
            found = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id])))
        return {r.parameters["label"]: r for r in found if r.parameters.get("label", "").startswith("prio-")}

    worker = None

    async def scenario():
        nonlocal worker
        bulk = [asyncio.create_task(step(f"prio-bulk-{i}.txt", REPROCESS_QUEUE)) for i in range(6)]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and len(await runs()) < len(bulk):  # all six queued first:
            await asyncio.sleep(0.2)  # a worker already polling finished two before the last existed (CI)
        worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--limit",
                                   "1"], env=env, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        while time.monotonic() < deadline:  # the reprocessing is under way: one of its steps runs
            states = {n: r.state.type.value for n, r in (await runs()).items()}
            if len(states) == len(bulk) and "RUNNING" in states.values():
                break
            await asyncio.sleep(0.2)
        upload = await step("prio-upload.txt", None)
        return upload, bulk

    async def claimed_at(found) -> dict:
        """When the worker claimed each run (its first Pending state), None if it never did."""
        async with get_client() as client:
            history = {n: await client.read_flow_run_states(r.id) for n, r in found.items()}
        return {n: min((s.timestamp for s in states if s.type.value == "PENDING"), default=None)
                for n, states in history.items()}

    try:
        upload, bulk = asyncio.run(scenario())
        found = asyncio.run(runs())
        assert upload.renditions, upload
        claims = asyncio.run(claimed_at(found))
        made, upload_claimed = found["prio-upload.txt"].created, claims["prio-upload.txt"]
        # Waiting = not yet claimed when the upload's run was made. Judged then, not when the test
        # saw a bulk step running: on a slow machine the next bulk step is claimed in between.
        waiting = {n for n in found if n.startswith("prio-bulk-") and (claims[n] is None or claims[n] > made)}
        assert len(waiting) >= 3, claims
        later = [n for n in waiting if claims[n] is None or claims[n] > upload_claimed]
        assert sorted(later) == sorted(waiting), {"upload made": made, "claims": claims}
        assert found["prio-upload.txt"].work_queue_name == "default"
        assert {found[n].work_queue_name for n in waiting} == {REPROCESS_QUEUE}
    finally:
        if worker is not None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(30)
        asyncio.run(_cancel_unfinished(asyncio.run(runs()).values()))  # leave the shared pool empty


async def _cancel_unfinished(runs) -> None:
    """Cancel the runs a test leaves behind (the bulk steps still waiting, the one the killed
    worker held), so later tests on the session's server see an empty pool."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    async with get_client() as client:
        for run in runs:
            if run.state is None or not run.state.is_final():
                await client.set_flow_run_state(run.id, Cancelled(message="left over by the test"), force=True)


def test_reprocessing_children_yield_the_cpu_to_uploads(tmp_path):
    """Local steps of the reprocess lane run at nice 10, the uploads' at the mediator's own nice."""
    from fileflow.engine.mediator import Runtime

    def nice_of(pid: int) -> int:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])

    storage = StorageConfig(basepath=str(tmp_path))
    niceness = {}
    for lane in ("upload", "reprocess"):
        rt = Runtime(PipelineSettings(child_processes=1), storage, lane=lane)
        try:
            assert rt.pool.call("json:dumps", {}, timeout_s=120, memory_mb=512) == "{}"
            niceness[lane] = nice_of(rt.pool.pids()[0])
        finally:
            rt.close()
    assert niceness["reprocess"] == min(19, niceness["upload"] + 10)
