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


def test_prefect_yaml_declares_the_router_and_one_deployment_per_converter():
    """One run per file: the kinds' steps run inside the router's run, so no kind has a deployment."""
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert deployments["process-file"]["entrypoint"] == "flows/router.py:process_file"
    assert deployments["process-file"]["triggers"][0]["expect"] == ["fileflow.file.uploaded"]
    assert deployments["process-file"]["work_pool"]["name"] == MEDIATOR_POOL
    for name in converters.BUILTINS:
        assert deployments[name]["entrypoint"] == "flows/step.py:converter_step"
        assert deployments[name]["work_pool"]["name"] == f"converter-{name}"
    reprocess = deployments["reprocess"]
    assert reprocess["entrypoint"] == "fileflow/ops/reprocess_flow.py:reprocess"
    assert reprocess["work_pool"] == {"name": MEDIATOR_POOL, "work_queue_name": "reprocess"}
    assert [s["active"] for s in reprocess["schedules"]] == [False]  # the cron is off until turned on
    assert set(deployments) == {"process-file", *converters.BUILTINS, "video_transcode-k8s", "reprocess"}
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


def test_setup_creates_the_limits_the_chart_asks_for_and_none_where_it_says_none(prefect_server):
    """FILEFLOW_SETUP_LIMITS as the chart's setup hook sets it: no active-files cap, the ocr cap
    at its pool's size; an operator's existing limit is left as it is."""
    import asyncio
    import json

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    from deployments.setup import limit_specs
    from fileflow.ops.limits import ensure_limits

    env = {"FILEFLOW_SETUP_LIMITS": json.dumps({"fileflow-active-files": None, "fileflow-converter-ocr": 200,
                                                "fileflow-converter-office_pdf": None})}

    async def run():
        async with get_client() as client:
            for gcl in await client.read_global_concurrency_limits(limit=200):
                if gcl.name.startswith("fileflow-"):
                    await client.delete_global_concurrency_limit_by_name(gcl.name)
            await client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name="fileflow-converter-pdf_text", limit=3))  # an operator's
            created = await ensure_limits(client, limit_specs(env))
            now = {g.name: g.limit for g in await client.read_global_concurrency_limits(limit=200)}
            for name in now:
                if name.startswith("fileflow-"):
                    await client.delete_global_concurrency_limit_by_name(name)
            return created, now

    created, now = asyncio.run(run())
    assert "fileflow-active-files" not in now and "fileflow-converter-office_pdf" not in now
    assert now["fileflow-converter-ocr"] == 200
    assert now["fileflow-converter-pdf_text"] == 3 and "fileflow-converter-pdf_text" not in created
    assert "fileflow-converter-language" not in now  # not named: no cap (fileflow's default)
    assert now["fileflow-reprocess"] == 1  # reprocessing's defaults stay


def test_setup_limits_refuses_unknown_names_and_bad_values():
    import pytest

    from deployments.setup import limit_specs

    for raw in ('{"fileflow-activ-files": 3}', '{"fileflow-active-files": -1}', '{"fileflow-active-files": "8"}', "[1]"):
        with pytest.raises(ValueError):
            limit_specs({"FILEFLOW_SETUP_LIMITS": raw})
    assert limit_specs({}) == limit_specs({"FILEFLOW_SETUP_LIMITS": ""})
