"""Prefect's process worker as the mediator (``fileflow up --mediator-type process``: a fresh engine
process per file), with the warm worker's ways of leaving nothing behind when it is killed.

Prefect's own process worker claims a run with a bare ``Pending`` and records the engine process
it starts as a bare pid, so a worker started after it died cannot tell which runs it held: a run
it had claimed and not started waited for the stranded-``Pending`` automation. This one, started
as ``python -m fileflow.server.worker.process --pool P --limit N``:

- claims a run with this process named in the ``Pending`` state (``claimed by host:pid``, as the
  warm worker does) and records the engine process as ``host:pid`` in the run's infrastructure
  pid;
- before it polls, settles what a dead predecessor held (:mod:`fileflow.server.worker.settle`): a
  run claimed and never started is crashed, a run whose engine process is gone too is crashed, and
  so are the step task runs of attempts that are over. A run whose engine process outlived the
  worker (this process killed alone) is still being run by that process and is left to finish;
- on SIGTERM or SIGINT takes no new run, waits up to ``--grace`` seconds for the runs in flight to
  end, cancels the rest (their engines end them ``Crashed`` or the settling of the next worker
  does), and exits 0.

``fileflow up`` runs it under its supervisor, which names the dead predecessor in
``FILEFLOW_WORKER_PREDECESSOR``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import threading
from typing import Any

import anyio
from prefect.workers.process import ProcessJobConfiguration, ProcessVariables, ProcessWorker, ProcessWorkerResult

from fileflow.server.logs import setup_logging
from fileflow.server.prefect_private import HookedWorker, described
from fileflow.server.supervise import PREDECESSOR_ENV
from fileflow.server.worker.settle import claim as claim_named, settle as settle_left_runs

logger = logging.getLogger("fileflow.server.worker.process")

class _NamedStart:
    """The ``task_status`` Prefect's process worker reports its engine's pid through, reporting
    ``host:pid`` instead: the run's infrastructure pid then says which machine's process runs it."""

    def __init__(self, status: Any) -> None:
        self.status = status

    def started(self, value: Any = None) -> None:
        self.status.started(f"{socket.gethostname()}:{value}" if isinstance(value, int) else value)


@described("Prefect's process worker that names itself in its claims; settles a dead predecessor's runs.")
class NamedProcessWorker(HookedWorker[ProcessJobConfiguration, ProcessVariables, ProcessWorkerResult], ProcessWorker):
    type = "fileflow-process"

    def __init__(self, work_pool_name: str, **kwargs: Any) -> None:
        super().__init__(work_pool_name=work_pool_name, **kwargs)
        self.draining = False

    def on_work_pool(self, work_pool: Any) -> None:
        self.keep_work_pool(work_pool)  # a `process` pool: served alongside Prefect's own workers

    async def claim(self, flow_run: Any) -> bool:
        return await claim_named(self.client, flow_run)

    async def run(self, flow_run: Any, configuration: ProcessJobConfiguration, task_status: Any = None):
        return await super().run(flow_run, configuration, _NamedStart(task_status) if task_status else None)

    async def get_and_submit_flow_runs(self) -> list[Any]:
        if self.draining:
            return []
        return await super().get_and_submit_flow_runs()

    @property
    def in_flight(self) -> int:
        return int(self.capacity.borrowed_tokens) if self.capacity else 0


async def serve(pool: str, *, limit: int, grace_s: float, stop: asyncio.Event) -> None:
    predecessor = os.environ.get(PREDECESSOR_ENV)
    try:
        flow_runs, task_runs = await settle_left_runs([pool], predecessor)
        if flow_runs or task_runs:
            logger.warning("settled what dead workers left: crashed %d run(s) (%s) and %d step task run(s) (%s)",
                           len(flow_runs), ", ".join(flow_runs), len(task_runs), ", ".join(task_runs))
    except Exception as exc:  # the liveness automations still catch them
        logger.warning("could not settle the runs of dead workers (predecessor %s): %s", predecessor, exc)
    # polls every PREFECT_WORKER_QUERY_SECONDS (`fileflow up` sets 1 s; Prefect's default is 10 s)
    worker = NamedProcessWorker(pool, limit=limit)
    started = asyncio.create_task(worker.start(printer=logger.info))
    logger.info("process worker serving %s (limit %s)", pool, limit)
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({started, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if started.done():
        stopping.cancel()
        started.result()  # the worker's own end: its error, if any
        return
    logger.info("stopping: finishing the runs in progress (grace %g s)", grace_s)
    worker.draining = True
    with anyio.move_on_after(grace_s):
        while worker.in_flight:
            await asyncio.sleep(0.1)
    if worker.in_flight:
        logger.warning("%d run(s) outlived the %g s grace period; cancelling them", worker.in_flight, grace_s)
    started.cancel()
    try:
        await started
    except asyncio.CancelledError:
        pass


def main(argv: list[str] | None = None) -> None:
    from fileflow.server.worker import _block_stop_signals, _deliver_stop_signals

    parser = argparse.ArgumentParser(prog="python -m fileflow.server.worker.process",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--pool", required=True, help="work pool to serve")
    parser.add_argument("--limit", type=int, default=None, help="flow runs in flight at once (default: no limit)")
    parser.add_argument("--grace", type=float, default=120.0,
                        help="seconds the runs in progress get to finish after SIGTERM")
    args = parser.parse_args(argv)
    setup_logging()
    _block_stop_signals()

    async def run() -> None:
        stop = asyncio.Event()
        _deliver_stop_signals(asyncio.get_running_loop(), stop)
        await serve(args.pool, limit=args.limit, grace_s=args.grace, stop=stop)

    asyncio.run(run())
    logger.info("stopped (%d thread(s) left)", threading.active_count())


if __name__ == "__main__":
    main()
