"""prefect.yaml and deployments/setup.py: every flow and converter deployed, idempotently."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

import converters
from deployments.liveness import CRASH_AUTOMATION, PENDING_AUTOMATION, RESUME_AUTOMATION
from deployments.setup import MEDIATOR_POOL, pool_names

ROOT = Path(__file__).resolve().parents[1]
KIND_FLOWS = ["image", "pdf", "office", "drawing", "video", "archive", "text", "email", "audio", "markup"]


def test_prefect_yaml_declares_router_kind_flows_and_one_deployment_per_converter():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert deployments["process-file"]["entrypoint"] == "flows/router.py:process_file"
    assert deployments["process-file"]["triggers"][0]["expect"] == ["fileflow.file.uploaded"]
    for kind in KIND_FLOWS:
        assert deployments[kind]["work_pool"]["name"] == MEDIATOR_POOL
        assert deployments[kind]["entrypoint"].startswith(f"flows/{kind}.py:")
    for name in converters.BUILTINS:
        assert deployments[name]["entrypoint"] == "flows/step.py:converter_step"
        assert deployments[name]["work_pool"]["name"] == f"converter-{name}"
    reprocess = deployments["reprocess"]
    assert reprocess["entrypoint"] == "flows/reprocess.py:reprocess"
    assert reprocess["work_pool"] == {"name": MEDIATOR_POOL, "work_queue_name": "reprocess"}
    assert [s["active"] for s in reprocess["schedules"]] == [False]  # the cron is off until turned on
    assert set(deployments) == {"process-file", *KIND_FLOWS, *converters.BUILTINS, "video_transcode-k8s", "reprocess"}
    assert deployments["video_transcode-k8s"]["work_pool"]["name"] == "converter-video-k8s"


def test_setup_is_idempotent(prefect_server):
    import asyncio

    from prefect.client.orchestration import get_client

    env = {**os.environ, "PREFECT_API_URL": prefect_server}

    def setup() -> str:
        result = subprocess.run([sys.executable, "-m", "deployments.setup"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    async def snapshot():
        async with get_client() as client:
            pools = {p.name for p in await client.read_work_pools()}
            deployments = {(d.name, d.id, str(d.work_pool_name)) for d in await client.read_deployments()}
            automations = {(a.name, a.id) for name in (CRASH_AUTOMATION, PENDING_AUTOMATION, RESUME_AUTOMATION)
                           for a in await client.read_automations_by_name(name)}
        return pools, deployments, automations

    async def remove_liveness_automations() -> None:
        # the session's server runs the embedded tests' flows with Prefect's 180 s heartbeat:
        # a 90 s crash window would mark their longer runs Crashed
        async with get_client() as client:
            for name in (CRASH_AUTOMATION, PENDING_AUTOMATION, RESUME_AUTOMATION):
                for automation in await client.read_automations_by_name(name):
                    await client.delete_automation(automation.id)

    try:
        first = setup()
        pools, deployments, automations = asyncio.run(snapshot())
        second = setup()
        again = asyncio.run(snapshot())
    finally:
        asyncio.run(remove_liveness_automations())
    assert "none (all existed)" not in first and "none (all existed)" in second
    assert set(pool_names()) <= pools
    assert "converter-video-k8s" in pools
    assert {name for name, _ in automations} == {CRASH_AUTOMATION, PENDING_AUTOMATION, RESUME_AUTOMATION}  # one of each
    assert again == (pools, deployments, automations)  # same ids: updated in place, nothing new
    assert len({d for d in deployments if d[0] in converters.BUILTINS}) == len(converters.BUILTINS)
