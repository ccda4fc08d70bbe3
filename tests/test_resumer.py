"""The resumer puts back to Scheduled the crashed router runs the automation missed, on a real
Prefect server; a run that crashed too often ends Failed with its file's failed manifest and
upload status (never left without one), other deployments' runs are not touched."""

from __future__ import annotations

import asyncio
import json
import uuid

from blocks.storage import StorageConfig, Store, manifest_key
from fileflow.engine import uploads


async def _scenario(file_id: str):
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled, Crashed, Pending

    from fileflow.server.resumer import sweep

    async with get_client() as client:
        router = await client.create_deployment(flow_id=await client.create_flow_from_name("process-file"),
                                                name="process-file", entrypoint="flows/router.py:process_file")
        other = await client.create_deployment(flow_id=await client.create_flow_from_name("converter-step"),
                                               name="resumer-test-other", entrypoint="flows/step.py:converter_step")
        params = {"key": f"originals/{file_id}", "file_id": file_id, "name": "x.txt", "size": 1}
        once = await client.create_flow_run_from_deployment(router, parameters=params, name="file:crashed-once.txt")
        often = await client.create_flow_run_from_deployment(router, parameters={**params, "upload_id": f"u-{file_id}"},
                                                             name="file:crashed-often.txt")
        step = await client.create_flow_run_from_deployment(other, parameters={}, name="step:crashed.txt")
        for run, crashes in ((once, 1), (often, 4), (step, 1)):
            for _ in range(crashes):
                await client.set_flow_run_state(run.id, Pending(), force=True)
                await client.set_flow_run_state(run.id, Crashed(message="engine could not start"), force=True)
            await asyncio.sleep(0)
        resumed_late = await sweep(client, settle_s=3600, max_crashes=2)  # still the automation's turn
        resumed = await sweep(client, settle_s=0, max_crashes=2)
        states = {r.name: (await client.read_flow_run(r.id)).state for r in (once, often, step)}
        again = await sweep(client, settle_s=0, max_crashes=2)  # the ended run is not acted on again
        for run in (once, step):
            await client.set_flow_run_state(run.id, Cancelled(message="end of the test"), force=True)
        return resumed_late, resumed, again, states, str(often.id)


def test_sweep_resumes_only_settled_crashed_router_runs_within_the_cap(prefect_server, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("FILEFLOW_STORAGE_PATH", str(out))
    file_id = uuid.uuid4().hex
    resumed_late, resumed, again, states, often_id = asyncio.run(_scenario(file_id))
    ours = {"file:crashed-once.txt", "file:crashed-often.txt", "step:crashed.txt"}
    assert not ours & set(resumed_late)
    assert ours & set(resumed) == {"file:crashed-once.txt"}  # the shared server may hold others' runs
    assert states["file:crashed-once.txt"].is_scheduled()
    assert "resumer" in states["file:crashed-once.txt"].message
    assert states["step:crashed.txt"].is_crashed()  # not a router run
    # 4 crashes > cap 2 + 1: its engine cannot start; the file ends failed as the router would end it
    assert states["file:crashed-often.txt"].is_failed()
    assert "crashed 4 times" in states["file:crashed-often.txt"].message
    assert "file:crashed-often.txt" not in again
    store = Store(StorageConfig(basepath=str(out)))
    manifest = json.loads(store.get_bytes(manifest_key(file_id)))
    assert manifest["status"] == "failed"
    assert [(s["name"], s["status"], s["error"]["type"]) for s in manifest["steps"]] == [
        ("router", "failed", "ToolCrashed")]
    record = uploads.read(store, f"u-{file_id}")
    assert (record.status, record.flow_run_id, record.error["step"]) == ("failed", often_id, "router")


def _crashed_past_the_cap(file_id: str, upload_id: str, name: str):
    """A router run of one upload crashed 4 times (cap 2 + 1 exceeded), then one sweep of the
    resumer: the run's state and id."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed, Pending

    from fileflow.server.resumer import sweep

    async def scenario():
        async with get_client() as client:
            router = await client.create_deployment(flow_id=await client.create_flow_from_name("process-file"),
                                                    name="process-file", entrypoint="flows/router.py:process_file")
            params = {"key": f"originals/{file_id}", "file_id": file_id, "name": name, "size": 1,
                      "upload_id": upload_id}
            run = await client.create_flow_run_from_deployment(router, parameters=params, name=f"file:{name}")
            for _ in range(4):
                await client.set_flow_run_state(run.id, Pending(), force=True)
                await client.set_flow_run_state(run.id, Crashed(message="engine could not start"), force=True)
            await sweep(client, settle_s=0, max_crashes=2)
            return (await client.read_flow_run(run.id)).state, str(run.id)

    return asyncio.run(scenario())


def test_a_run_at_the_cap_whose_upload_already_ended_is_failed_without_touching_its_file(
        prefect_server, tmp_path, monkeypatch):
    """Another run of the same upload finished it: the capped run must not write a failed
    manifest over the completed one."""
    out = tmp_path / "out"
    monkeypatch.setenv("FILEFLOW_STORAGE_PATH", str(out))
    store = Store(StorageConfig(basepath=str(out)))
    file_id, upload_id = uuid.uuid4().hex, f"u-{uuid.uuid4().hex}"
    done = uploads.received(upload_id, name="y.txt", file_id=file_id, size=1).model_copy(
        update={"status": "completed", "finished_at": uploads.now()})
    uploads.write(store, done)

    state, _ = _crashed_past_the_cap(file_id, upload_id, "ended-often.txt")
    assert state.is_failed()
    assert not store.exists(manifest_key(file_id))
    assert uploads.read(store, upload_id).status == "completed"


def test_a_run_at_the_cap_leaves_the_manifest_another_upload_completed_for_the_same_bytes(
        prefect_server, tmp_path, monkeypatch):
    """Two uploads of the same bytes share one content manifest. The second upload's run crashes
    past the cap: that upload ends failed, saying why, but the manifest the first upload's run
    completed is every such upload's and stays as it was (the run broke, not the content)."""
    out = tmp_path / "out"
    monkeypatch.setenv("FILEFLOW_STORAGE_PATH", str(out))
    store = Store(StorageConfig(basepath=str(out)))
    file_id, upload_id = uuid.uuid4().hex, f"u-{uuid.uuid4().hex}"
    completed = json.dumps({"file_id": file_id, "name": "z.txt", "status": "completed", "steps": []}).encode()
    store.put_bytes(completed, manifest_key(file_id))  # the first upload's run completed the content

    state, run_id = _crashed_past_the_cap(file_id, upload_id, "again-often.txt")
    assert state.is_failed()
    record = uploads.read(store, upload_id)
    assert (record.status, record.flow_run_id, record.error["step"]) == ("failed", run_id, "router")
    assert "crashed 4 times" in record.error["message"]
    assert store.get_bytes(manifest_key(file_id)) == completed
