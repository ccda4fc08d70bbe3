"""The resumer: the safety net under the ``fileflow-resume-crashed-router`` automation.

The automation resumes a crashed router run when it sees the run's ``prefect.flow-run.Crashed``
event. An event can be missed: a server that has just restarted answers the API before its
triggers service listens, and a process worker that could not start a file's engine during the
restart reports that run Crashed in exactly that second (seen in tests/test_faults_stack.py:
two files of ten stayed Crashed, without a manifest). So ``fileflow up`` also runs this small
loop, which reads Prefect's API every ``--every`` seconds and puts back to ``Scheduled`` every
``process-file`` run that has been Crashed for longer than ``--settle`` seconds (the
automation's turn first), the same action as the automation's.

A file whose run keeps crashing is not resumed forever: the router itself fails a file whose
mediator crashed more than ``FILEFLOW_LIVENESS_MEDIATOR_RESUMES`` times (docs/reliability.md);
a run that crashes before the router's code even starts (its engine cannot start, or the faults
came before it could count them) is ended here once it has crashed more than that many times plus
one: its file gets the failed manifest the router would have written (step ``router``,
``ToolCrashed``), its upload a failed status and answer, and the run is set ``Failed``. Before,
such a run stayed Crashed with no manifest, which ``fileflow audit`` counts as a lost file (11 of
400 files in the fault soak of 2026-12-06, docs/reliability.md).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from datetime import datetime, timedelta, timezone

from fileflow.settings import LivenessSettings
from fileflow.names import ROUTER_DEPLOYMENT
from fileflow.server.logs import setup_logging

log = logging.getLogger("fileflow.server.resumer")
MESSAGE = "resumed by fileflow's resumer: its Crashed event found no automation (finished steps come from their stored results)"


async def sweep(client, *, settle_s: float, max_crashes: int) -> list[str]:
    """Resume the router runs Crashed for longer than ``settle_s``; the names of those resumed."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Failed, Scheduled

    runs = await client.read_flow_runs(
        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[ROUTER_DEPLOYMENT.split("/")[1]])),
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CRASHED]))),
        limit=200,
    )
    settled_before = datetime.now(timezone.utc) - timedelta(seconds=settle_s)
    resumed = []
    for run in runs:
        if run.state is None or run.state.timestamp > settled_before:
            continue
        crashes = sum(1 for state in await client.read_flow_run_states(run.id) if state.type == StateType.CRASHED)
        if crashes > max_crashes + 1:  # its engine cannot even start: the file ends failed, never left
            reason = (f"the file's run crashed {crashes} times before its router could start; it is not "
                      "resumed again (FILEFLOW_LIVENESS_MEDIATOR_RESUMES)")
            ended = await _end_file(run, reason)
            await client.set_flow_run_state(run.id, Failed(message=reason), force=True)
            log.warning("failed %s: %s%s", run.name, reason, "" if ended else " (its upload had already ended)")
            continue
        await client.set_flow_run_state(run.id, Scheduled(message=MESSAGE), force=True)
        log.warning("resumed %s (crashed %d time(s); its Crashed event was not acted on)", run.name, crashes)
        resumed.append(run.name)
    return resumed


async def _end_file(run, reason: str) -> bool:
    """The failed manifest and upload status of a run's file (storage from the environment, as
    the mediator's); a storage failure raises, so the run stays Crashed for the next sweep."""
    from fileflow.engine.mediator import Runtime, runtime
    from fileflow.settings import PipelineSettings, StorageSettings
    from flows.router import fail_unstartable

    with runtime(Runtime(PipelineSettings(), StorageSettings().config())):
        return await fail_unstartable(dict(run.parameters), str(run.id), reason)


async def serve(every_s: float, settle_s: float) -> None:
    from prefect.client.orchestration import get_client

    import signal

    max_crashes = LivenessSettings().mediator_resumes
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # a clean stop (exit 0) between two sweeps
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        try:
            async with get_client() as client:
                await sweep(client, settle_s=settle_s, max_crashes=max_crashes)
        except Exception as exc:  # the API down (a restart): try again at the next round
            log.warning("sweep failed: %s: %s", type(exc).__name__, exc)
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except asyncio.TimeoutError:
            pass
    log.info("stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fileflow.server.resumer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=float, default=15.0, help="seconds between two sweeps")
    parser.add_argument("--settle", type=float, default=30.0,
                        help="a run Crashed for less than this is left to the automation")
    args = parser.parse_args(argv)
    setup_logging()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call otherwise
    asyncio.run(serve(args.every, args.settle))


if __name__ == "__main__":  # pragma: no cover
    main()
