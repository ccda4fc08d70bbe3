"""The distributed stack for real: `fileflow up` on PostgreSQL, two workers per converter pool,
`fileflow submit` as an upload service runs it, the exporter, `fileflow down`.

Each file's manifest must match what the embedded mode makes of the same file.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from blocks.storage import StorageConfig
from fileflow.batch import run_batch
from fileflow.settings import PipelineSettings
from tests.conftest import _free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SAMPLES = Path(__file__).parent / "samples"
FILEFLOW = Path(sys.executable).parent / "fileflow"
BATCH = ["photo.jpg", "notes-de.txt", "table.csv", "report.docx", "scan.pdf", "plan.dxf", "clip.mp4", "bundle.zip"]


def fileflow(*args: str, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(FILEFLOW), *args], env={**env, "COLUMNS": "250"}, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def stack(postgres_url, tmp_path_factory):
    root = tmp_path_factory.mktemp("stack")
    port, exporter_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    up = fileflow(
        "up", "--workers", "2", "--database", postgres_url, "--home", str(root / "home"), "--out", str(root / "out"),
        "--port", str(port), "--exporter-port", str(exporter_port), env=env, timeout=600,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    state = json.loads((root / "home" / "stack.json").read_text())
    env["PREFECT_API_URL"] = state["api_url"]
    yield {"root": root, "env": env, "exporter": f"http://127.0.0.1:{exporter_port}", "state": state}
    down = fileflow("down", "--home", str(root / "home"), env=env, timeout=120)
    assert down.returncode == 0, down.stderr
    time.sleep(1)
    left = [name for name, pid in state["processes"].items() if Path(f"/proc/{pid}").exists()
            and "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]]
    assert not left, f"still running after fileflow down: {left}"


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def summary(manifest: dict, out: Path) -> dict:
    """What must be the same whichever mode made it."""
    text = (out / manifest["text"]).read_text() if manifest["text"] else None
    return {
        "kind": manifest["kind"],
        "status": manifest["status"],
        "roles": sorted((r["role"], r["width"], r["height"]) for r in manifest["renditions"]),
        "language": manifest["language"],
        "text": " ".join(text.split()) if text else None,
        "children": len(manifest["children"]),
    }


def test_mixed_batch_completes_on_pools_like_the_embedded_mode(stack, prefect_server, tmp_path):
    out = stack["root"] / "out"
    files = [str(SAMPLES / name) for name in BATCH]
    result = fileflow("submit", *files, "--wait", "--home", str(stack["root"] / "home"), env=stack["env"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    distributed = {}
    for path in (out / "manifests").glob("*.json"):
        manifest = json.loads(path.read_text())
        distributed[manifest["name"]] = summary(manifest, out)
    assert set(BATCH) <= set(distributed)
    # the same files through the embedded mode, for reference
    embedded_out = tmp_path / "embedded"
    manifests = asyncio.run(
        run_batch([SAMPLES / n for n in BATCH], PipelineSettings(child_processes=2),
                  StorageConfig(basepath=str(embedded_out)))
    )
    embedded = {m["name"]: summary(m, embedded_out) for m in manifests}
    assert embedded.keys() == distributed.keys()
    for name in embedded:
        assert distributed[name] == embedded[name], name


def test_the_same_upload_notified_twice_starts_one_run(stack, tmp_path):
    sample = tmp_path / "twice.txt"
    sample.write_text("Dieselbe Datei zweimal gemeldet, aber nur einmal verarbeitet. " * 3)
    runs = []
    for _ in range(2):
        result = fileflow("submit", str(sample), "--home", str(stack["root"] / "home"), env=stack["env"])
        assert result.returncode == 0, result.stderr
        runs.append(result.stderr.split("(")[-1].split(")")[0])
    assert runs[0] == runs[1]


def test_paused_pool_queues_work_in_the_exporter_and_drains_after_resume(stack, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolUpdate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    pool = "converter-text_extract"

    async def set_paused(paused: bool) -> None:
        with temporary_settings({PREFECT_API_URL: stack["env"]["PREFECT_API_URL"]}):
            async with get_client() as client:
                await client.update_work_pool(pool, WorkPoolUpdate(is_paused=paused))

    asyncio.run(set_paused(True))
    try:
        sample = tmp_path / "queued.txt"
        sample.write_text("This file waits until its converter pool is resumed by the operator. " * 3)
        result = fileflow("submit", str(sample), "--home", str(stack["root"] / "home"), env=stack["env"])
        assert result.returncode == 0, result.stderr
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            figures = get_json(f"{stack['exporter']}/pools/{pool}")
            if figures["waiting"] >= 1:
                break
            time.sleep(1)
        assert figures["waiting"] >= 1 and figures["paused"] is True, figures
    finally:
        asyncio.run(set_paused(False))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        figures = get_json(f"{stack['exporter']}/pools/{pool}")
        if figures["pending"] == 0:
            break
        time.sleep(1)
    assert figures["pending"] == 0, figures
