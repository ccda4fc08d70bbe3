"""``fileflow worker``: a warm worker for the converter pools, with sub-second pickup.

Prefect's process worker pays for every step with two fresh Python processes importing
Prefect (about 3.4 s per no-op step here, see ``docs/distributed.md``) and finds new runs by
polling every ``PREFECT_WORKER_QUERY_SECONDS``. This worker keeps what is slow warm:

- it runs the ``converter-step`` flow runs of its pools **in its own event loop** (Prefect's
  engine, the same states, logs and events as any worker), and the converter itself in a
  **warm child process** of a shared :class:`~fileflow.engine.isolation.ChildPool`, so a segfault, a
  hang or a memory hog still costs only that child and ends the step with a typed error;
- it is **woken by the server's events** (``prefect.flow-run.Scheduled`` of its pool, over
  the events websocket) and polls at once, with a slow poll as the fallback, so a step starts
  within tens of milliseconds of ``run_deployment`` instead of up to the poll interval.

It is a Prefect ``BaseWorker`` on the same ``process`` pools that ``prefect worker start``
and the Kubernetes run-once pods serve: both kinds of worker can compete on one pool. Claiming
a run goes through Prefect's orchestration (Pending is proposed; only one worker wins).

Scale-in: SIGTERM (or Ctrl-C) stops taking new runs at once, lets the steps in progress finish
within ``--grace`` seconds, then stops; a step still running after that is cancelled and its
run ends Crashed, which the mediator retries elsewhere. No run is left Running.

Killed outright (SIGKILL, OOM): the worker started in its place (by its keeper, or a container
restarted in its pod) settles what it left before taking work: its flow runs, ``Running`` or
claimed, and their step task runs end ``Crashed`` at once (:mod:`fileflow.server.worker.settle`).
A worker nobody starts again (the machine lost) is caught by the heartbeats: Prefect's engine
sends them from a thread of this process, so they stop with it, and the setup's liveness
automation marks the runs ``Crashed`` (:mod:`deployments.liveness`). Either way the mediator
retries a step on another worker.

One process serves any number of pools (``--pool`` repeated); ``--limit`` bounds the steps of
each pool in flight, ``--children`` the warm child processes shared by all of them.

``--health-port PORT`` serves a liveness endpoint for a kubelet (the Helm chart's mediator): any
``GET`` answers 200 while every pool's poll loop has polled within 3 fallback poll intervals
(or the worker is draining), 503 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import importlib
import logging
import os
import signal
import socket
import sys
import threading
from datetime import datetime, timezone
from typing import Any

import anyio

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter
from prefect.flow_engine import run_flow
from prefect.workers.base import BaseJobConfiguration, BaseWorkerResult

from fileflow import retry
from fileflow.engine.isolation import ChildPool
from fileflow.names import MEDIATOR_POOL, STEP_FLOW
from fileflow.server.logs import setup_logging
from fileflow.server.prefect_private import HookedWorker, described
from fileflow.server.supervise import PREDECESSOR_ENV
from fileflow.server.worker.settle import claim as claim_named, settle as settle_left_runs

logger = logging.getLogger("fileflow.server.worker")

DEFAULT_FALLBACK_POLL_S = 10.0
#: runs claimed per poll. Prefect's worker sets each claimed run Pending, then starts them all at
#: once, each with about six API calls before it runs: a large claim on a saturated server stays
#: Pending past the grace of the stranded-Pending automation, which then crashes runs that were
#: about to start. Claiming a few at a time, the next few once these are Running (or ended),
#: keeps a claimed run's wait short whatever the limit
CLAIM_BATCH = 8
#: longest wait for a claimed batch to start before the next claim (an API outage mid-submission)
CLAIM_WAIT_S = 60.0


class _QuietRunStartedHook(logging.Filter):
    """Drops the two INFO lines Prefect's engine logs around every hook it calls ("Running hook
    '<name>' in response to entering state 'Running'", "Hook '<name>' finished running
    successfully") when the hook is this worker's own :meth:`WarmWorker._fileflow_run_started`:
    two lines per step in the worker's output (a mediator pod's log) that say nothing about the
    file. An error in the hook is still logged (ERROR is above INFO)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or "'_fileflow_run_started'" not in record.getMessage()


@described("Runs fileflow converter steps in warm child processes; woken by events.")
class WarmWorker(HookedWorker[BaseJobConfiguration, Any, BaseWorkerResult]):
    type = "fileflow-warm"
    job_configuration = BaseJobConfiguration

    def __init__(self, work_pool_name: str, *, limit: int = 2, fallback_poll_s: float = DEFAULT_FALLBACK_POLL_S,
                 wake_on_events: bool = True, **kwargs: Any) -> None:
        super().__init__(work_pool_name=work_pool_name, limit=limit, prefetch_seconds=0, **kwargs)
        self.fallback_poll_s = fallback_poll_s
        self.wake_on_events = wake_on_events
        self.draining = False
        self._wake = asyncio.Event()
        self._steps: dict[str, anyio.CancelScope] = {}
        self._flows: dict[str, Any] = {}
        #: runs handed to ``run`` whose engine has not yet set them Running: the next claim waits
        self._starting: set[str] = set()
        # the engine logs a hook call on its own logger before the run's context exists, on the
        # run's logger after (a logger's filter sees only what is logged on that very logger)
        for name in ("prefect.engine", "prefect.flow_runs"):
            engine_logger = logging.getLogger(name)
            if not any(isinstance(f, _QuietRunStartedHook) for f in engine_logger.filters):
                engine_logger.addFilter(_QuietRunStartedHook())

    # -- the pools are `process` pools: this worker serves them alongside Prefect's own workers
    def on_work_pool(self, work_pool) -> None:
        if work_pool.type != "process":
            logger.warning("pool %s is of type %r; the warm worker serves process pools", work_pool.name,
                           work_pool.type)
        self.keep_work_pool(work_pool)

    async def _flow_of(self, flow_run: FlowRun):
        """The flow of the run's deployment, imported once per deployment by its module name (so
        it shares this process's modules: the warm child pool, the mediator's runtime)."""
        key = str(flow_run.deployment_id)
        if key not in self._flows:
            async with get_client() as client:
                deployment = await client.read_deployment(flow_run.deployment_id)
            path, _, name = deployment.entrypoint.rpartition(":")
            module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
            flow = getattr(module, name)
            # told by the engine once the run is Running: a public hook, no API call of its own
            self._flows[key] = flow.with_options(on_running=[*flow.on_running_hooks, self._fileflow_run_started])
        return self._flows[key]

    def _fileflow_run_started(self, flow, flow_run: FlowRun, state) -> None:
        self._starting.discard(str(flow_run.id))

    async def run(self, flow_run: FlowRun, configuration: BaseJobConfiguration, task_status=None) -> BaseWorkerResult:
        identifier = f"{socket.gethostname()}:{os.getpid()}:{flow_run.id}"
        self._starting.add(str(flow_run.id))
        if task_status is not None:
            task_status.started(identifier)
        state = None
        try:
            flow = await self._flow_of(flow_run)
            # cancelled only by drain() or a cancellation: the engine then ends the run Crashed
            with anyio.CancelScope() as scope:
                self._steps[str(flow_run.id)] = scope
                state = await run_flow(flow, flow_run=flow_run, return_type="state")
        except Exception as exc:
            # the engine could not start or end the run (the API down during a server restart):
            # left so, it would stay Pending or Running with nobody on it
            await self._crash_once_recorded(flow_run, exc)
            raise
        finally:
            self._steps.pop(str(flow_run.id), None)
            self._starting.discard(str(flow_run.id))  # never Running: rejected, or the engine failed
            self._wake.set()  # a slot is free: look for the next run at once
        return BaseWorkerResult(identifier=identifier, status_code=0 if state is not None else 1)

    async def _crash_once_recorded(self, flow_run: FlowRun, exc: BaseException, give_up_s: float = 600) -> None:
        """Set the run ``Crashed`` as soon as the API takes it (retrying up to ``give_up_s``), so
        the mediator retries a step and the resume automation or the resumer resumes a file."""
        from prefect.states import Crashed

        message = f"its worker could not run it: {type(exc).__name__}: {exc}"

        async def record() -> None:
            async with get_client() as client:
                current = await client.read_flow_run(flow_run.id)
                if current.state is None or not current.state.is_final():
                    await client.set_flow_run_state(flow_run.id, Crashed(message=message), force=True)
                    logger.warning("run %s crashed: %s", flow_run.name, message)

        try:
            await retry.acall(record, retry=retry.retry_if_exception_type(Exception),
                              wait=retry.doubling(1.0, 30.0), stop=retry.stop_after_delay(give_up_s))
        except Exception as again:
            logger.error("could not record run %s as crashed for %g s (%s); the liveness automation "
                         "or `fileflow audit` will find it", flow_run.name, give_up_s, again)

    async def claim(self, flow_run: FlowRun) -> bool:
        """Prefect's claim, with this process named in the ``Pending`` state (:func:`settle.claim`)."""
        return await claim_named(self.client, flow_run)

    async def kill_infrastructure(self, infrastructure_pid: str, configuration, grace_seconds: int = 30) -> None:
        from prefect.exceptions import InfrastructureNotFound

        run_id = infrastructure_pid.rsplit(":", 1)[-1]
        scope = self._steps.get(run_id)
        if scope is None:
            raise InfrastructureNotFound(f"no step of run {run_id} in this worker")
        scope.cancel()

    async def get_and_submit_flow_runs(self) -> list[FlowRun]:
        if self.draining:
            return []
        return await super().get_and_submit_flow_runs()

    async def scheduled_flow_runs(self):
        """Prefect's query of the pool's scheduled runs, asking for one batch (plus one, to know
        whether more wait) instead of the server's default 200: on a backlog, each poll of a
        batch would otherwise have the server read and serialise 200 runs to use 8."""
        from httpx import HTTPStatusError
        from prefect.client.schemas.responses import WorkerFlowRunResponse

        free = int(self.capacity.available_tokens) if self.capacity else CLAIM_BATCH
        body: dict[str, Any] = {"limit": min(CLAIM_BATCH, max(free, 1)) + 1,
                                "scheduled_before": str(datetime.now(timezone.utc))}
        if self.queue_names:
            body["work_queue_names"] = list(self.queue_names)
        try:
            response = await self.client.request("POST", "/work_pools/{name}/get_scheduled_flow_runs",
                                                 path_params={"name": self.pool_name}, json=body)
        except HTTPStatusError as exc:
            if exc.response.status_code == 404:
                return []  # the pool does not exist (yet): the next heartbeat says so
            raise
        runs = [WorkerFlowRunResponse.model_validate(r) for r in response.json()]
        if len(runs) > CLAIM_BATCH and free > CLAIM_BATCH:
            self._wake.set()  # more are waiting: claim again once this batch has started
        return runs[:CLAIM_BATCH]

    async def _claimed_started(self) -> None:
        """Until every run claimed by the last poll has been handed to ``run`` (Prefect drops it
        from ``submitting`` then) and its engine has set it Running or ended it, at most
        ``CLAIM_WAIT_S``."""
        deadline = asyncio.get_running_loop().time() + CLAIM_WAIT_S
        while (self.submitting or self._starting) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)

    # -- the loops --------------------------------------------------------------------------
    async def _poll_loop(self) -> None:
        while not self.draining:
            self._wake.clear()
            try:
                await self.get_and_submit_flow_runs()
                await self._claimed_started()
            except Exception as exc:  # the API is down or restarting: keep trying
                logger.warning("polling %s failed: %s", self.pool_name, exc)
                await asyncio.sleep(1)
            try:
                await asyncio.wait_for(self._wake.wait(), self.fallback_poll_s)
            except asyncio.TimeoutError:
                pass

    async def _sync_loop(self) -> None:
        while True:
            try:
                await self.sync()
            except Exception as exc:
                logger.warning("heartbeat of %s failed: %s", self.pool_name, exc)
            await asyncio.sleep(self.heartbeat_interval_seconds)

    async def drain(self, grace_s: float) -> None:
        """Take no new run; wait for the steps in progress; cancel what outlives the grace."""
        self.draining = True
        self._wake.set()
        deadline = asyncio.get_running_loop().time() + grace_s
        while self._steps and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        for run_id, scope in list(self._steps.items()):
            logger.warning("step run %s outlived the %g s grace period; cancelling it", run_id, grace_s)
            scope.cancel()
        while self._steps:
            await asyncio.sleep(0.05)


async def serve(pools: list[str], *, limit: int, children: int, grace_s: float, fallback_poll_s: float,
                wake_on_events: bool = True, ready=None, health_port: int | None = None) -> None:
    from fileflow.engine.mediator import current
    from fileflow.engine.session import prefect_session

    stop = asyncio.Event()
    _deliver_stop_signals(asyncio.get_running_loop(), stop)
    # the runs of this process share one API client (and, for files' runs, the results block as
    # default result storage) instead of each building its own: fileflow/engine/session.py
    mediating = MEDIATOR_POOL in pools
    async with prefect_session(current() if mediating else None):
        await _serve(pools, stop, limit=limit, children=children, grace_s=grace_s, fallback_poll_s=fallback_poll_s,
                     wake_on_events=wake_on_events, ready=ready, health_port=health_port)
    logger.info("stopped")


async def _serve(pools: list[str], stop: asyncio.Event, *, limit: int, children: int, grace_s: float,
                 fallback_poll_s: float, wake_on_events: bool, ready, health_port: int | None) -> None:
    import flows.step

    with ChildPool(children) as child_pool:
        flows.step.share_child_pool(child_pool)
        workers = [WarmWorker(p, limit=limit, fallback_poll_s=fallback_poll_s, wake_on_events=wake_on_events)
                   for p in pools]
        for w in workers:
            await w.__aenter__()
        # runs and step task runs a dead predecessor left Running or claimed, settled now rather
        # than by the liveness automations' silence windows (fileflow/server/worker/settle.py)
        predecessor = os.environ.get(PREDECESSOR_ENV)
        try:
            flow_runs, task_runs = await settle_left_runs(pools, predecessor)
            if flow_runs or task_runs:
                logger.warning("settled what dead workers left: crashed %d run(s) (%s) and %d step task run(s) (%s)",
                               len(flow_runs), ", ".join(flow_runs), len(task_runs), ", ".join(task_runs))
        except Exception as exc:  # the liveness automations still catch them
            logger.warning("could not settle the runs of dead workers (predecessor %s): %s", predecessor, exc)
        loops = []
        try:
            for w in workers:
                loops.append(asyncio.create_task(w._sync_loop()))
                loops.append(asyncio.create_task(w._poll_loop()))
            if wake_on_events:
                loops.append(asyncio.create_task(wake_on_scheduled(workers, fallback_poll_s)))
            if health_port is not None:
                health = await serve_health(workers, health_port)
                loops.append(asyncio.create_task(health.serve_forever()))
            logger.info("warm worker serving %s (limit %d per pool, %d children)", ", ".join(pools), limit,
                        children)
            if ready is not None:
                ready()
            await stop.wait()
            logger.info("stopping: finishing the steps in progress (grace %g s)", grace_s)
            # a shutdown that hangs says where: every thread's stack goes to the log
            faulthandler.dump_traceback_later(grace_s + 30, exit=True)
            await asyncio.gather(*(w.drain(grace_s) for w in workers))
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            # each worker entered a task group (a cancel scope) in this task, nested in the one
            # before it: they are left in reverse order, or anyio refuses ("Attempted to exit a
            # cancel scope that isn't the current task's current cancel scope", exit code 1)
            for w in reversed(workers):
                await w.__aexit__(None, None, None)
            flows.step.share_child_pool(None)


async def wake_on_scheduled(workers: list[WarmWorker], retry_s: float) -> None:
    """Wake a pool's poll loop whenever a run of that pool is scheduled: one event stream for all
    the pools of this process (the server matches every event against every subscriber's
    filter, so one subscription per pool would cost it once per pool)."""
    while not all(w.synced_work_pool is not None for w in workers):
        await asyncio.sleep(0.2)
    by_resource = {f"prefect.work-pool.{w.work_pool.id}": w for w in workers}
    events = EventFilter(
        event=EventNameFilter(name=["prefect.flow-run.Scheduled"]),
        related=EventRelatedFilter(resources_in_roles=[(r, "work-pool") for r in by_resource]),
    )
    while not all(w.draining for w in workers):
        try:
            async with get_events_subscriber(filter=events, reconnect_on_clean_close=True) as subscriber:
                async for event in subscriber:
                    for related in event.related:
                        worker = by_resource.get(related.id)
                        if worker is not None:
                            worker._wake.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # fall back on the poll until the stream is back
            logger.warning("event stream lost (%s); polling every %g s", exc, retry_s)
            await asyncio.sleep(retry_s)


def healthy(workers: list[WarmWorker]) -> bool:
    """Every pool's poll loop polled within 3 of its fallback poll intervals, or it is draining
    (a pod that is stopping must not be restarted by its liveness probe halfway through)."""
    # Prefect's own check (Prefect's window is 30 query intervals, hence the tenth; it also
    # allows for a server in maintenance); its last poll time is set by every successful
    # get_and_submit_flow_runs(), which the poll loop calls
    return all(w.draining or w.is_worker_still_polling(query_interval_seconds=w.fallback_poll_s / 10)
               for w in workers)


async def serve_health(workers: list[WarmWorker], port: int, host: str = "0.0.0.0") -> asyncio.Server:
    """A minimal HTTP endpoint in the worker's own event loop (a blocked loop does not answer
    either): any GET answers 200 ``ok`` while :func:`healthy`, else 503 ``not polling``;
    ``GET /ready`` (readiness) also answers 503 ``draining`` once the worker drains."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            path = (request.split(b" ", 2)[1:2] or [b"/"])[0]
            if path.startswith(b"/ready") and any(w.draining for w in workers):
                # readiness (the chart's rollout): a draining pod takes no new file
                status, body = "503 Service Unavailable", b"draining\n"
            else:
                status, body = ("200 OK", b"ok\n") if healthy(workers) else ("503 Service Unavailable", b"not polling\n")
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(answer, host, port)


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _block_stop_signals() -> None:
    """Block SIGTERM/SIGINT in this thread and every thread started after it.

    Prefect's flow engine installs its own SIGTERM handler while a flow runs (it raises
    ``TerminationSignal`` in the main thread, which would kill every step of this process at
    once). Blocked signals are never delivered asynchronously; one thread takes them with
    ``sigwait`` and asks the worker to drain instead. Call this before any thread starts.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def _deliver_stop_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    def wait() -> None:
        received = signal.sigwait(STOP_SIGNALS)
        logger.info("received %s", signal.Signals(received).name)
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait, name="fileflow-stop-signals", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fileflow.server.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--pool", action="append", required=True, help="work pool to serve (repeatable)")
    parser.add_argument("--limit", type=int, default=2, help="steps of each pool in flight at once")
    parser.add_argument("--children", type=int, default=max(2, os.cpu_count() or 2),
                        help="warm child processes shared by all pools")
    parser.add_argument("--grace", type=float, default=120.0,
                        help="seconds the steps in progress get to finish after SIGTERM")
    parser.add_argument("--poll", type=float, default=DEFAULT_FALLBACK_POLL_S,
                        help="fallback poll interval in seconds (runs are normally picked up on their event)")
    parser.add_argument("--no-events", action="store_true", help="poll only; do not listen to the event stream")
    parser.add_argument("--health-port", type=int, default=None,
                        help="serve a liveness endpoint on this port: 200 while every pool is polled, else 503")
    parser.add_argument("--keep-alive", action="store_true",
                        help="run the worker as a child and start it again whenever it dies (SIGKILL, OOM, "
                             "a crash); SIGTERM/SIGINT stop both")
    args = parser.parse_args(argv)
    setup_logging()
    if args.keep_alive:
        raise SystemExit(keep_alive([a for a in (argv if argv is not None else sys.argv[1:]) if a != "--keep-alive"]))
    _block_stop_signals()
    asyncio.run(serve(args.pool, limit=args.limit, children=args.children, grace_s=args.grace,
                      fallback_poll_s=args.poll, wake_on_events=not args.no_events, health_port=args.health_port))



def keep_alive(worker_args: list[str], *, max_backoff_s: float = 30.0) -> int:
    """Run ``python -m fileflow.server.worker <worker_args>`` under
    :func:`fileflow.server.supervise.supervise`: started again whenever it dies.

    What a Kubernetes Deployment does for the mediator pod: a worker killed outright (SIGKILL,
    OOM) takes the runs it held with it; the next worker crashes them at once (it is told who
    died before it), and the liveness automations remain the net (:mod:`deployments.liveness`).
    A stop signal is passed on to the worker, which drains; this process then ends with it.
    """
    from fileflow.server.supervise import supervise

    return supervise([sys.executable, "-m", "fileflow.server.worker", *worker_args], name="worker",
                     predecessor_env=PREDECESSOR_ENV, max_backoff_s=max_backoff_s)
