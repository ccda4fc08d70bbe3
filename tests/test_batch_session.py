"""What the runs of one ``fileflow process`` batch share (fileflow.engine.session.prefect_session),
against a real Prefect server: one API client, the results block as Prefect's default result
storage (so no flow run asks the server for its default), and, on a plain-HTTP API, the
one-certificate CA bundle of fileflow/server/stack.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

from blocks.storage import StorageConfig
from fileflow.engine.session import prefect_session
from fileflow.engine.mediator import Runtime
from fileflow.settings import PipelineSettings
from fileflow.home import PLAIN_HTTP_CA_BUNDLE


def test_a_batch_shares_one_client_and_names_its_default_result_storage(prefect_server, tmp_path):
    from prefect.blocks.core import Block
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    assert prefect_server.startswith("http://")
    rt = Runtime(PipelineSettings(child_processes=1), StorageConfig(basepath=str(tmp_path / "out")))

    async def inside() -> dict:
        async with prefect_session(rt):
            settings = get_current_settings()
            block = await Block.aload(settings.results.default_storage_block)
            return {
                "same_client": get_client() is get_client(),
                "default_block": settings.results.default_storage_block,
                "block_path": block.basepath,
                "ca": settings.api.ssl_cert_file,
            }

    try:
        seen = asyncio.run(inside())
    finally:
        rt.close()
    assert seen["same_client"]
    assert seen["default_block"] == rt.results_slug
    assert rt.results_slug.startswith("local-file-system/fileflow-results-")
    assert Path(seen["block_path"]) == tmp_path / "out" / "results"
    assert Path(seen["ca"]) == PLAIN_HTTP_CA_BUNDLE
    # nothing of it outlives the batch
    assert get_current_settings().results.default_storage_block is None


def test_embedded_server_writes_task_runs_in_batches_unless_told_otherwise(monkeypatch):
    from prefect.settings import Settings

    from fileflow.settings import EMBEDDED_SERVER_DEFAULTS, embedded_server_defaults

    batch = "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE"
    assert embedded_server_defaults({}) == EMBEDDED_SERVER_DEFAULTS
    assert batch not in embedded_server_defaults({batch: "1"})
    assert batch not in embedded_server_defaults({"PREFECT_API_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "1"})
    for name, value in EMBEDDED_SERVER_DEFAULTS.items():  # the names Prefect's server reads
        monkeypatch.setenv(name, value)
    settings = Settings()
    recorder = settings.server.services.task_run_recorder
    assert (recorder.batch_size, recorder.flush_interval) == (100, 1)
    assert settings.server.ephemeral.startup_timeout_seconds == 120


def test_fileflow_process_on_its_embedded_server_records_every_step(tmp_path):
    """The README's main job as a user runs it (no PREFECT_API_URL: Prefect's embedded server on
    SQLite, which batches its task-run writes): the file completes, and every step's task run
    reaches the database Completed, the last ones written when the server stops."""
    import os
    import sqlite3
    import subprocess
    import sys

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "note.txt").write_text("The roof of the north wing was inspected on Monday.\n" * 5)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    fileflow = Path(sys.executable).parent / "fileflow"
    done = subprocess.run([str(fileflow), "process", str(tmp_path / "in"), "--out", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert len(list((tmp_path / "out" / "manifests").glob("*.json"))) == 1
    with sqlite3.connect(tmp_path / "prefect-home" / "prefect.db") as db:
        steps = dict(db.execute("SELECT name, state_type FROM task_run WHERE name IN "
                                "('inspect', 'text_extract', 'language')").fetchall())
    assert steps == {"inspect": "COMPLETED", "text_extract": "COMPLETED", "language": "COMPLETED"}
