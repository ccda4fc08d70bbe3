"""The resumer puts back to Scheduled the crashed router runs the automation missed, on a real
Prefect server; a run that crashed too often is left for the audit, other deployments' runs
are not touched."""

from __future__ import annotations

import asyncio


async def _scenario():
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled, Crashed, Pending

    from fileflow.server.resumer import sweep

    async with get_client() as client:
        router = await client.create_deployment(flow_id=await client.create_flow_from_name("process-file"),
                                                name="process-file", entrypoint="flows/router.py:process_file")
        other = await client.create_deployment(flow_id=await client.create_flow_from_name("converter-step"),
                                               name="resumer-test-other", entrypoint="flows/step.py:converter_step")
        params = {"key": "originals/x", "file_id": "x", "name": "x.txt", "size": 1}
        once = await client.create_flow_run_from_deployment(router, parameters=params, name="file:crashed-once.txt")
        often = await client.create_flow_run_from_deployment(router, parameters=params, name="file:crashed-often.txt")
        step = await client.create_flow_run_from_deployment(other, parameters={}, name="step:crashed.txt")
        for run, crashes in ((once, 1), (often, 4), (step, 1)):
            for _ in range(crashes):
                await client.set_flow_run_state(run.id, Pending(), force=True)
                await client.set_flow_run_state(run.id, Crashed(message="engine could not start"), force=True)
            await asyncio.sleep(0)
        resumed_late = await sweep(client, settle_s=3600, max_crashes=2)  # still the automation's turn
        resumed = await sweep(client, settle_s=0, max_crashes=2)
        states = {r.name: (await client.read_flow_run(r.id)).state for r in (once, often, step)}
        for run in (once, often, step):
            await client.set_flow_run_state(run.id, Cancelled(message="end of the test"), force=True)
        return resumed_late, resumed, states


def test_sweep_resumes_only_settled_crashed_router_runs_within_the_cap(prefect_server):
    resumed_late, resumed, states = asyncio.run(_scenario())
    ours = {"file:crashed-once.txt", "file:crashed-often.txt", "step:crashed.txt"}
    assert not ours & set(resumed_late)
    assert ours & set(resumed) == {"file:crashed-once.txt"}  # the shared server may hold others' runs
    assert states["file:crashed-once.txt"].is_scheduled()
    assert "resumer" in states["file:crashed-once.txt"].message
    assert states["file:crashed-often.txt"].is_crashed()  # 4 crashes > cap 2 + 1: left for the audit
    assert states["step:crashed.txt"].is_crashed()  # not a router run
