"""``fileflow`` as a user runs it: a subprocess, its exit code, its output, its files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

SAMPLES = Path(__file__).parent / "samples"
FILEFLOW = Path(sys.executable).parent / "fileflow"


def run(args, api_url, env_extra=None, **kwargs):
    env = {**os.environ, "PREFECT_API_URL": api_url, "COLUMNS": "200", **(env_extra or {})}
    return subprocess.run([str(FILEFLOW), *args], env=env, capture_output=True, text=True, timeout=600, **kwargs)


def test_process_exits_zero_when_every_file_completes(prefect_server, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SAMPLES / "notes-de.txt", folder)
    shutil.copy(SAMPLES / "table.csv", folder)
    result = run(["process", str(folder), "--out", str(tmp_path / "out")], prefect_server)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 completed, 0 failed" in result.stdout
    manifests = [json.loads(p.read_text()) for p in (tmp_path / "out" / "manifests").glob("*.json")]
    assert sorted(m["name"] for m in manifests) == ["notes-de.txt", "table.csv"]
    assert "files 2/2 done" in result.stderr  # the progress display


def test_process_exits_non_zero_and_names_the_reason_when_a_file_fails(prefect_server, tmp_path):
    bad = tmp_path / "nothing.pdf"
    bad.write_bytes(b"")
    result = run(["process", str(bad), "--out", str(tmp_path / "out")], prefect_server)
    assert result.returncode == 1
    assert "CorruptInput" in result.stdout and "empty" in result.stdout


def test_missing_path_is_a_usage_error(tmp_path):
    result = subprocess.run(
        [str(FILEFLOW), "process", str(tmp_path / "nope")], capture_output=True, text=True,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_submit_with_a_missing_file_or_a_bad_s3_url_starts_nothing(prefect_server, tmp_path):
    """Every source is checked before anything is uploaded or started: a bad one among good ones
    is a usage error naming it, and storage stays empty."""
    good = tmp_path / "good.txt"
    good.write_text("A good file that must not be uploaded alone. " * 3)
    store = tmp_path / "store"
    for bad, says in [(str(tmp_path / "gone.txt"), "not a file: "), ("s3://bucket-only", "not s3://bucket/key: ")]:
        result = run(["submit", str(good), bad, "--home", str(tmp_path / "no-stack")], prefect_server,
                     env_extra={"FILEFLOW_STORAGE_PATH": str(store)})
        assert result.returncode == 2, result.stdout + result.stderr
        message = " ".join((result.stdout + result.stderr).split())
        assert f"{says}{bad} (nothing was submitted)" in message
        assert not store.exists() or not any(store.rglob("*")), list(store.rglob("*"))


def test_schema_in_docs_matches_the_code():
    from fileflow.engine.manifest import json_schema

    documented = json.loads((Path(__file__).parents[1] / "docs" / "manifest.schema.json").read_text())
    assert documented == json_schema(), "run `make schema` and commit docs/manifest.schema.json"


def test_converters_command_lists_the_registry():
    import converters

    result = subprocess.run([str(FILEFLOW), "converters"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "250"})
    assert result.returncode == 0
    for name in converters.BUILTINS:
        assert name in result.stdout


def test_storage_prepare_bucket_command(s3_endpoint, tmp_path):
    import boto3

    env = {
        **os.environ, "FILEFLOW_STORAGE_KIND": "s3", "FILEFLOW_STORAGE_BUCKET": "cli-prepared",
        "FILEFLOW_STORAGE_PREFIX": "t", "FILEFLOW_STORAGE_ENDPOINT_URL": s3_endpoint,
        "FILEFLOW_STORAGE_REGION": "us-east-1", "FILEFLOW_STORAGE_ACCESS_KEY_ID": "testing",
        "FILEFLOW_STORAGE_SECRET_ACCESS_KEY": "testing",
    }
    for _ in range(2):  # idempotent
        result = subprocess.run([str(FILEFLOW), "storage", "prepare-bucket"], env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    rules = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").get_bucket_lifecycle_configuration(
        Bucket="cli-prepared"
    )["Rules"]
    assert [r["Filter"]["Prefix"] for r in rules] == ["t/tmp/"]
    result = subprocess.run(
        [str(FILEFLOW), "storage", "prepare-bucket"], env={**env, "FILEFLOW_STORAGE_BUCKET": ""},
        capture_output=True, text=True,
    )
    assert result.returncode == 2 and "FILEFLOW_STORAGE_BUCKET" in result.stderr
