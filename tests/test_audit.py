"""``fileflow audit`` against a real Prefect server and real storage.

A clean batch audits clean; a run left Running (created and set Running through Prefect's API,
never finished), an upload nobody processed, a run that ended without a manifest, a manifest
without a rendition its kind requires and a rendition deleted from storage each make it exit 1
and name them.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from blocks.storage import StorageConfig, Store, manifest_key, original_key
from fileflow.ops.audit import audit, file_id_of, parse_duration
from fileflow.ops.batch import ingest, run_batch
from fileflow.cli.app import app
from fileflow.settings import PipelineSettings

SAMPLES = Path(__file__).parent / "samples"
SETTINGS = PipelineSettings(child_processes=2, max_active_files=2, retry_delay_s=0.1)
ZERO = timedelta(0)


def run_cli(out: Path, *args: str):
    result = CliRunner().invoke(app, ["audit", "--out", str(out), "--home", str(out / "no-stack"), *args])
    return result.exit_code, result.output


def unique_upload(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_text(f"an upload no converter has seen: {uuid.uuid4()}\n")
    return path


async def router_run(store: Store, path: Path, state):
    """A real process-file run for an uploaded file, put in ``state`` and never executed."""
    from prefect.client.orchestration import get_client

    from flows.router import process_file

    digest, size = ingest(path, store)
    async with get_client() as client:
        run = await client.create_flow_run(
            process_file,
            parameters={"key": original_key(digest), "file_id": digest, "name": path.name, "size": size},
            name=f"file:{path.name}",
        )
        await client.set_flow_run_state(run.id, state, force=True)
    return digest, str(run.id)


def test_durations():
    assert parse_duration("15m") == timedelta(minutes=15)
    assert parse_duration("90") == parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("2h") == timedelta(hours=2) and parse_duration("1d") == timedelta(days=1)
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")


def test_file_id_comes_from_any_fileflow_run():
    sha = "a" * 64
    assert file_id_of({"file_id": sha}) == sha
    assert file_id_of({"file": {"file_id": sha, "name": "x"}}) == sha
    assert file_id_of({"payload": {"output_prefix": f"derived/{sha}/ocr"}}) == sha
    assert file_id_of({"other": 1}) is None


def test_clean_batch_audits_clean(prefect_server, tmp_path):
    out = tmp_path / "out"
    files = [SAMPLES / "notes-de.txt", SAMPLES / "photo.jpg", SAMPLES / "bundle.zip"]
    manifests = asyncio.run(run_batch(files, SETTINGS, StorageConfig(basepath=str(out))))
    assert all(m["status"] == "completed" for m in manifests)
    # even with zero thresholds nothing is stuck or silent: every run is final
    report = asyncio.run(audit(Store(StorageConfig(basepath=str(out))), stuck_after=ZERO, heartbeat_after=ZERO))
    assert report.ok, report.findings
    assert report.submitted == len(manifests) == 6 and report.completed == 6  # 3 uploads, 3 members
    code, output = run_cli(out, "--stuck-after", "0", "--heartbeat-after", "0", "--json")
    assert code == 0, output
    data = json.loads(output)
    assert data["ok"] and data["lost"] == 0 and data["terminal"] == data["submitted"] == 6


def test_stuck_lost_silent_and_incomplete_files_are_named(prefect_server, tmp_path):
    from prefect.states import Failed, Running

    out = tmp_path / "out"
    config = StorageConfig(basepath=str(out))
    store = Store(config)
    [photo] = asyncio.run(run_batch([SAMPLES / "photo.jpg"], SETTINGS, config))
    # a manifest that lost its OCR text, and a preview deleted from storage
    edited = dict(photo, renditions=[r for r in photo["renditions"] if r["role"] != "text"])
    store.put_bytes(json.dumps(edited).encode(), manifest_key(photo["file_id"]))
    preview = next(r["path"] for r in photo["renditions"] if r["role"] == "preview")
    (out / preview).unlink()
    # a file whose run was set Running and never finished; one nobody started; one whose run
    # failed without writing a manifest
    stuck, stuck_run = asyncio.run(router_run(store, unique_upload(tmp_path, "stuck.txt"), Running()))
    orphan, _ = ingest(unique_upload(tmp_path, "orphan.txt"), store)
    broken, broken_run = asyncio.run(router_run(store, unique_upload(tmp_path, "broken.txt"), Failed()))

    report = asyncio.run(audit(store, stuck_after=ZERO, heartbeat_after=ZERO))
    found = {(f.kind, f.file_id) for f in report.findings}
    assert ("stuck", stuck) in found and ("no_heartbeat", stuck) in found
    assert ("lost", orphan) in found and ("lost", broken) in found
    assert ("lost", stuck) not in found  # a run is still on it: stuck, not lost
    missing = [f.detail for f in report.findings if f.kind == "missing_rendition"]
    assert any("no text rendition" in d for d in missing) and any(preview in d for d in missing)
    assert {f.run_id for f in report.findings if f.kind == "stuck"} == {stuck_run}
    assert report.lost == 2 and report.completed == 1 and not report.ok

    code, output = run_cli(out, "--stuck-after", "0", "--heartbeat-after", "0", "--json")
    assert code == 1
    data = json.loads(output)
    named = {(f["kind"], f["name"]) for f in data["findings"]}
    assert {("stuck", "stuck.txt"), ("no_heartbeat", "stuck.txt"), ("lost", "broken.txt")} <= named
    assert ("lost", None) in named or ("lost", "orphan.txt") in named  # no run ever named it
    code, output = run_cli(out, "--stuck-after", "0", "--heartbeat-after", "0")
    assert code == 1 and "stuck.txt" in output and "broken.txt" in output

    # with the default thresholds the young Running run is in flight, the rest still fails
    report = asyncio.run(audit(store, stuck_after=parse_duration("15m"), heartbeat_after=parse_duration("10m")))
    assert report.in_flight == 3 and {f.kind for f in report.findings} == {"missing_rendition"}


def test_bad_threshold_is_a_usage_error(tmp_path):
    code, output = run_cli(tmp_path, "--stuck-after", "soon")
    assert code == 2 and "not a duration" in output


def test_audit_reads_an_s3_store(prefect_server, s3_endpoint, s3_bucket, tmp_path):
    """The same audit over S3 (moto): originals and manifests listed under the prefix."""
    config = StorageConfig(kind="s3", bucket=s3_bucket, prefix="ff", endpoint_url=s3_endpoint, region="us-east-1",
                           access_key_id="testing", secret_access_key="testing")
    store = Store(config)
    done, _ = ingest(unique_upload(tmp_path, "done.txt"), store)
    text = f"derived/{done}/text_extract/text.txt"
    store.put_bytes(b"some text", text)
    manifest = {"file_id": done, "name": "done.txt", "kind": "text", "status": "completed",
                "renditions": [{"role": "text", "path": text, "mime": "text/plain", "bytes": 9}]}
    store.put_bytes(json.dumps(manifest).encode(), manifest_key(done))
    orphan, _ = ingest(unique_upload(tmp_path, "orphan.txt"), store)

    report = asyncio.run(audit(store, stuck_after=ZERO, heartbeat_after=ZERO))
    assert report.submitted == 2 and report.completed == 1
    assert [(f.kind, f.file_id) for f in report.findings] == [("lost", orphan)]
    store._client().delete_object(Bucket=s3_bucket, Key=f"ff/{text}")
    report = asyncio.run(audit(store, stuck_after=ZERO, heartbeat_after=ZERO))
    assert ("missing_rendition", done) in {(f.kind, f.file_id) for f in report.findings}
