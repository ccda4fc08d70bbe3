"""Pending-work exporter: how much work waits in each Prefect work pool, over plain GET.

KEDA's metrics-api scaler only sends GET, and Prefect's count endpoint is a POST. This small
HTTP service reads Prefect's API (never its database tables) through ONE reused client and
serves, per work pool, the flow runs that are due and waiting plus the ones running:

- ``GET /metrics``       Prometheus text exposition through ``prometheus_client`` (every pool, the mediator, scrape time,
  and files completed/failed, failures by type, step durations: :mod:`fileflow.server.file_metrics`);
- ``GET /pools``         JSON list of every pool's figures;
- ``GET /pools/<name>``  JSON ``{"pool", "waiting", "running", "pending", "paused"}``, the form
  KEDA's metrics-api scaler reads with ``valueLocation: pending`` (404 for an unknown pool);
- ``GET /healthz``       ``ok`` (200) while the Prefect API answers, 503 otherwise.

Counting, per pool: only what a worker could claim now, so that KEDA starts no pod that would
find nothing (``count_flow_runs`` by pool and queue, sent together):
``waiting`` = runs of state type SCHEDULED with ``expected_start_time <= now`` (Scheduled, Late,
a due AwaitingRetry ...) in the pool's queues that are not paused, at most a queue's free
concurrency slots (its limit minus its Pending and Running runs) and at most the pool's; runs
that wait for a deployment concurrency slot (``AwaitingConcurrencySlot``) only up to their
deployment's free slots; 0 when the pool is paused. ``running`` = state type RUNNING + state type PENDING entered less than
``pending_grace_s`` ago (a worker claimed it and is starting it). ``pending`` = waiting +
running, the figure KEDA reads. ``held`` = due Scheduled runs no worker may claim now (paused
pool or queue, full queue or pool, waiting for a concurrency slot); ``stale`` = Pending runs
older than the grace (their worker died before starting them: no pod is at work on them, and a
new one could not claim them). Figures are cached for ``cache_s`` so that many scrapers cost the
API one refresh per interval.

Run it: ``python -m fileflow.server.exporter --host 127.0.0.1 --port 9464`` (settings from
``FILEFLOW_EXPORTER_*``; the Prefect API from ``--api-url`` or ``PREFECT_API_URL``).
"""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import argparse
import asyncio
import json
import logging
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Awaitable, Callable, Iterator, TypeVar
from urllib.parse import unquote, urlsplit

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fileflow.server.file_metrics import FileEventCounters, FileFigures
from fileflow.server.file_metrics import families as file_metric_families
from fileflow.names import MEDIATOR_POOL
from fileflow.server.logs import setup_logging

log = logging.getLogger("fileflow.server.exporter")

T = TypeVar("T")

AWAITING_SLOT = "AwaitingConcurrencySlot"
"""Prefect's name of a Scheduled state whose run waits for a deployment concurrency slot."""
PENDING_READ_LIMIT = 2000
"""Most Pending runs of one pool read per refresh (to tell fresh ones from stale ones)."""


class ExporterSettings(BaseSettings):
    """The pending-work exporter (``FILEFLOW_EXPORTER_*``)."""

    model_config = SettingsConfigDict(env_prefix="FILEFLOW_EXPORTER_", frozen=True)

    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0 inside a container)")
    port: int = Field(9464, ge=0, le=65535, description="port to listen on (0: pick a free one)")
    api_url: str | None = Field(
        None, description="Prefect API URL, e.g. http://prefect:4200/api (default: PREFECT_API_URL)"
    )
    mediator_pool: str = Field(
        MEDIATOR_POOL, description="work pool of the mediator flows, for fileflow_active_mediator_runs"
    )
    cache_s: float = Field(
        1.0, ge=0, description="seconds the figures are reused before the API is asked again (0: every request)"
    )
    api_timeout_s: float = Field(
        10.0, gt=0, description="longest wait for one refresh from the Prefect API before answering 503"
    )
    max_parallel_requests: int = Field(
        8, ge=1, description="most Prefect API calls in flight at once during one refresh"
    )
    events_lookback_s: float = Field(
        0.0, ge=0, description="seconds of terminal events read back at start into the file counters (0: from start)"
    )
    events_slack_s: float = Field(
        30.0, ge=0, description="seconds by which a terminal event may become readable late and still be counted"
    )
    pending_grace_s: float = Field(
        120.0, gt=0, description="seconds a Pending run counts as being started by its worker; older ones are stale"
    )


@dataclass(frozen=True)
class PoolFigures:
    """One work pool's figures at one moment."""

    pool: str
    waiting: int
    running: int
    paused: bool
    held: int = 0
    """Due Scheduled runs no worker may claim now (paused pool/queue, full queue/pool, concurrency wait)."""
    stale: int = 0
    """Pending runs older than the grace: their worker died before starting them."""

    @property
    def pending(self) -> int:
        return self.waiting + self.running

    def as_json(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "waiting": self.waiting,
            "running": self.running,
            "pending": self.pending,
            "paused": self.paused,
            "held": self.held,
            "stale": self.stale,
        }


@dataclass(frozen=True)
class Snapshot:
    """Every pool's figures, read together; ``taken_at`` is ``time.monotonic()``."""

    pools: dict[str, PoolFigures]
    mediator_pool: str
    scrape_seconds: float
    taken_at: float
    files: FileFigures | None = None

    @property
    def active_mediator_runs(self) -> int:
        figures = self.pools.get(self.mediator_pool)
        return figures.pending if figures else 0


class PrefectUnavailable(RuntimeError):
    """The Prefect API did not answer (in time)."""


class PendingWork:
    """Reads the figures from the Prefect API through one client on a private event loop.

    The HTTP handler threads call the blocking methods; every API call runs on the one loop
    thread that owns the one ``PrefectClient`` (each new client costs an SSL context).
    Refreshes are single-flight: concurrent requests wait for the refresh under way and
    share its result.
    """

    def __init__(
        self,
        api_url: str | None = None,
        mediator_pool: str = MEDIATOR_POOL,
        cache_s: float = 1.0,
        api_timeout_s: float = 10.0,
        max_parallel_requests: int = 8,
        events_lookback_s: float = 0.0,
        events_slack_s: float = 30.0,
        pending_grace_s: float = 120.0,
    ) -> None:
        if api_url is None:
            # Resolved here, in the caller's thread: Prefect's settings live in a contextvar
            # that the loop thread would not see (e.g. a test harness's temporary settings).
            from prefect.settings import PREFECT_API_URL

            api_url = PREFECT_API_URL.value()
        if not api_url:
            raise ValueError(
                "no Prefect API URL: pass api_url / --api-url or set PREFECT_API_URL "
                "(an exporter of an ephemeral in-process server would only ever report zeros)"
            )
        self.api_url = api_url.rstrip("/")
        self.mediator_pool = mediator_pool
        self.cache_s = cache_s
        self.api_timeout_s = api_timeout_s
        self.max_parallel_requests = max_parallel_requests
        self.pending_grace_s = pending_grace_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._semaphore: asyncio.Semaphore | None = None
        self._refresh_lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._pool_lock = threading.Lock()
        self._pool_cache: dict[str, tuple[float, PoolFigures | None]] = {}
        self._files = FileEventCounters(lookback_s=events_lookback_s, slack_s=events_slack_s)

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> "PendingWork":
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="fileflow-exporter-api", daemon=True)
        self._thread.start()
        self._call(self._open(), timeout=30)
        return self

    def close(self) -> None:
        if self._loop is None:
            return
        try:
            self._call(self._close(), timeout=10)
        except Exception:  # closing is best effort: the process is going away
            log.debug("closing the Prefect client failed", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._loop.close()
        self._loop = None
        self._thread = None

    def __enter__(self) -> "PendingWork":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _open(self) -> None:
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: self.api_url}):
            client = get_client()
        self._client = await client.__aenter__()
        self._semaphore = asyncio.Semaphore(self.max_parallel_requests)

    async def _close(self) -> None:
        if self._client is not None:
            await self._client.__aexit__(None, None, None)
            self._client = None

    def _call(self, coro: Awaitable[T], timeout: float | None = None) -> T:
        if self._loop is None:
            raise RuntimeError("PendingWork.start() first")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        try:
            return future.result(timeout=timeout or self.api_timeout_s)
        except FutureTimeout:
            future.cancel()
            raise PrefectUnavailable(f"the Prefect API did not answer within {timeout or self.api_timeout_s} s")

    # -- reading -----------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Every pool's figures, at most ``cache_s`` old."""
        snap = self._snapshot
        if snap is not None and time.monotonic() - snap.taken_at < self.cache_s:
            return snap
        with self._refresh_lock:
            snap = self._snapshot  # someone else may have refreshed while we waited
            if snap is not None and time.monotonic() - snap.taken_at < self.cache_s:
                return snap
            snap = self._guarded(self._read_all)
            self._snapshot = snap
            return snap

    def pool(self, name: str) -> PoolFigures | None:
        """One pool's figures (None when no such pool), at most ``cache_s`` old.

        Served from the last full snapshot while it is fresh; otherwise only this pool is
        read (4 calls instead of 1 + 3 per pool), since KEDA asks per pool.
        """
        snap = self._snapshot
        if snap is not None and time.monotonic() - snap.taken_at < self.cache_s:
            return snap.pools.get(name)
        cached = self._pool_cache.get(name)
        if cached is not None and time.monotonic() - cached[0] < self.cache_s:
            return cached[1]
        with self._pool_lock:
            cached = self._pool_cache.get(name)
            if cached is not None and time.monotonic() - cached[0] < self.cache_s:
                return cached[1]
            figures = self._guarded(lambda: self._read_one(name))
            if len(self._pool_cache) > 1000:  # names come from URLs: do not grow without bound
                self._pool_cache.clear()
            self._pool_cache[name] = (time.monotonic(), figures)
            return figures

    def healthy(self) -> bool:
        """True when the Prefect API answers its health check."""
        try:
            return self._call(self._healthcheck(), timeout=self.api_timeout_s + 1) is None
        except Exception:
            return False

    def _guarded(self, make: Callable[[], Awaitable[T]]) -> T:
        try:
            return self._call(asyncio.wait_for(make(), self.api_timeout_s), timeout=self.api_timeout_s + 1)
        except PrefectUnavailable:
            raise
        except (asyncio.TimeoutError, FutureTimeout) as exc:
            raise PrefectUnavailable(f"the Prefect API did not answer within {self.api_timeout_s} s") from exc
        except Exception as exc:
            raise PrefectUnavailable(f"the Prefect API failed: {type(exc).__name__}: {exc}") from exc

    async def _healthcheck(self) -> Exception | None:
        return await asyncio.wait_for(self._client.api_healthcheck(), self.api_timeout_s)

    async def _limited(self, coro: Awaitable[T]) -> T:
        assert self._semaphore is not None
        async with self._semaphore:
            return await coro

    async def _read_all(self) -> Snapshot:
        started = time.perf_counter()
        pools = await self._read_pools()
        now = datetime.now(timezone.utc)
        figures, _ = await asyncio.gather(
            asyncio.gather(*(self._count(p, now) for p in pools)),
            self._limited(self._files.refresh(self._client)),  # refreshes are single-flight
        )
        elapsed = time.perf_counter() - started
        return Snapshot(
            pools={f.pool: f for f in figures},
            mediator_pool=self.mediator_pool,
            scrape_seconds=elapsed,
            taken_at=time.monotonic(),
            files=self._files.figures(),
        )

    async def _read_one(self, name: str) -> PoolFigures | None:
        from prefect.exceptions import ObjectNotFound

        now = datetime.now(timezone.utc)
        try:
            pool = await self._limited(self._client.read_work_pool(name))
        except ObjectNotFound:
            return None
        return await self._count(pool, now)

    async def _read_pools(self) -> list[Any]:
        pools: list[Any] = []
        page = 200
        while True:
            batch = await self._limited(self._client.read_work_pools(limit=page, offset=len(pools)))
            pools.extend(batch)
            if len(batch) < page:
                return pools

    async def _count(self, pool: Any, now: datetime) -> PoolFigures:
        """One pool's figures: what a worker could claim now, what runs, what is held back."""
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterExpectedStartTime,
            FlowRunFilterState,
            FlowRunFilterStateName,
            FlowRunFilterStateType,
            WorkPoolFilter,
            WorkPoolFilterName,
            WorkQueueFilter,
            WorkQueueFilterId,
        )
        from prefect.client.schemas.objects import StateType

        in_pool = WorkPoolFilter(name=WorkPoolFilterName(any_=[pool.name]))

        def state(*types: StateType, due: bool = False, claimable: bool = False) -> FlowRunFilter:
            criteria: dict[str, Any] = {}
            if claimable:
                criteria["name"] = FlowRunFilterStateName(not_any_=[AWAITING_SLOT])
            criteria["type"] = FlowRunFilterStateType(any_=list(types))
            flt: dict[str, Any] = {"state": FlowRunFilterState(**criteria)}
            if due:
                flt["expected_start_time"] = FlowRunFilterExpectedStartTime(before_=now)
            return FlowRunFilter(**flt)

        def count(flow_run_filter: FlowRunFilter, queue_id: Any = None) -> Awaitable[int]:
            queue = WorkQueueFilter(id=WorkQueueFilterId(any_=[queue_id])) if queue_id else None
            return self._limited(self._client.count_flow_runs(
                flow_run_filter=flow_run_filter, work_pool_filter=in_pool, work_queue_filter=queue))

        async def claimable_in(queue: Any) -> int:
            if queue.is_paused:
                return 0
            if queue.concurrency_limit is None:
                return int(await count(state(StateType.SCHEDULED, due=True, claimable=True), queue.id))
            due, busy = await asyncio.gather(
                count(state(StateType.SCHEDULED, due=True, claimable=True), queue.id),
                count(state(StateType.PENDING, StateType.RUNNING), queue.id),
            )
            return min(int(due), max(0, queue.concurrency_limit - int(busy)))

        async def read_runs(flow_run_filter: FlowRunFilter) -> list[Any]:
            runs: list[Any] = []
            while len(runs) < PENDING_READ_LIMIT:
                batch = await self._limited(self._client.read_flow_runs(
                    flow_run_filter=flow_run_filter, work_pool_filter=in_pool, limit=200, offset=len(runs)))
                runs.extend(batch)
                if len(batch) < 200:
                    break
            return runs

        async def awaiting_slot(open_queues: set[Any]) -> int:
            """Runs that waited for a deployment concurrency slot and are due again: claimable
            up to their deployment's free slots (a worker claiming more is refused again)."""
            runs = await read_runs(FlowRunFilter(
                state=FlowRunFilterState(name=FlowRunFilterStateName(any_=[AWAITING_SLOT])),
                expected_start_time=FlowRunFilterExpectedStartTime(before_=now)))
            per_deployment: dict[Any, int] = {}
            for run in runs:
                if run.work_queue_id in open_queues and run.state is not None and run.state.type == StateType.SCHEDULED:
                    per_deployment[run.deployment_id] = per_deployment.get(run.deployment_id, 0) + 1
            total = 0
            for deployment_id, waiting_runs in per_deployment.items():
                gcl = None
                if deployment_id is not None:
                    gcl = (await self._limited(self._client.read_deployment(deployment_id))).global_concurrency_limit
                free = waiting_runs if gcl is None or not gcl.active else max(0, gcl.limit - gcl.active_slots)
                total += min(waiting_runs, free)
            return total

        queues = await self._limited(self._client.read_work_queues(work_pool_name=pool.name))
        due_all, running, pending_runs, per_queue, after_wait = await asyncio.gather(
            count(state(StateType.SCHEDULED, due=True)),
            count(state(StateType.RUNNING)),
            read_runs(state(StateType.PENDING)),
            asyncio.gather(*(claimable_in(q) for q in queues)),
            awaiting_slot({q.id for q in queues if not q.is_paused}),
        )
        cutoff = now.timestamp() - self.pending_grace_s
        fresh = sum(1 for run in pending_runs
                    if run.state is None or run.state.timestamp is None or run.state.timestamp.timestamp() >= cutoff)
        busy = int(running) + fresh
        waiting = 0 if pool.is_paused else sum(per_queue) + after_wait
        if pool.concurrency_limit is not None:
            waiting = min(waiting, max(0, pool.concurrency_limit - busy))
        return PoolFigures(
            pool=pool.name, waiting=waiting, running=busy, paused=bool(pool.is_paused),
            held=max(0, int(due_all) - waiting), stale=len(pending_runs) - fresh,
        )


# -- Prometheus text ----------------------------------------------------------------------------

_POOL_GAUGES: tuple[tuple[str, str, Callable[[PoolFigures], float]], ...] = (
    ("fileflow_pool_waiting_runs", "Due Scheduled flow runs (incl. Late) of the work pool that a worker could claim now: open queues, free slots, not waiting for a concurrency slot.", lambda f: f.waiting),
    ("fileflow_pool_running_runs", "Flow runs of the work pool that are Running, or Pending for less than the grace (being started).", lambda f: f.running),
    ("fileflow_pool_pending_work", "Waiting plus running flow runs of the work pool: the figure to scale its workers on.", lambda f: f.pending),
    ("fileflow_pool_paused", "1 when the work pool is paused (workers get no runs from it), else 0.", lambda f: int(f.paused)),
    ("fileflow_pool_held_runs", "Due Scheduled flow runs of the work pool that no worker may claim now (paused pool or queue, full queue or pool, waiting for a concurrency slot).", lambda f: f.held),
    ("fileflow_pool_stale_pending_runs", "Pending flow runs of the work pool older than the grace: their worker died before starting them.", lambda f: f.stale),
)


class SnapshotCollector:
    """A ``prometheus_client`` collector of one exporter: every scrape reads ``snapshot()``
    (cached figures, or a refresh that raises :class:`PrefectUnavailable`) and yields its
    families; nothing is kept in ``prometheus_client``'s own state."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        pools = sorted(snap.pools.values(), key=lambda f: f.pool)
        for name, help_text, value in _POOL_GAUGES:
            gauge = GaugeMetricFamily(name, help_text, labels=["pool"])
            for figures in pools:
                gauge.add_metric([figures.pool], value(figures))
            yield gauge
        yield GaugeMetricFamily(
            "fileflow_active_mediator_runs",
            "Running, Pending and due Scheduled flow runs of the mediator work pool.",
            value=snap.active_mediator_runs,
        )
        yield GaugeMetricFamily(
            "fileflow_exporter_scrape_seconds",
            "Seconds the last refresh of these figures from the Prefect API took.",
            value=round(snap.scrape_seconds, 6),
        )
        if snap.files is not None:
            yield from file_metric_families(snap.files)


def metrics_registry(snapshot: Callable[[], Snapshot]) -> CollectorRegistry:
    """A registry of the exporter's own (not ``prometheus_client``'s global one, which would
    add the process's own metrics) holding one :class:`SnapshotCollector`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return registry


def render_metrics(registry: CollectorRegistry) -> str:
    """The registry's figures in the Prometheus text exposition format (version 0.0.4)."""
    return generate_latest(registry).decode()


# -- HTTP ----------------------------------------------------------------------------------------


class ExporterServer(ThreadingHTTPServer):
    """The HTTP side; ``work`` does the reading."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # socketserver's 5 drops SYNs when many scrapers arrive at once

    def __init__(self, address: tuple[str, int], work: PendingWork) -> None:
        self.work = work
        self.registry = metrics_registry(work.snapshot)
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: ExporterServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = urlsplit(self.path).path
        work = self.server.work
        try:
            if path == "/metrics":
                self._send(200, render_metrics(self.server.registry), "text/plain; version=0.0.4; charset=utf-8")
            elif path in ("/pools", "/pools/"):
                snap = work.snapshot()
                body = [snap.pools[name].as_json() for name in sorted(snap.pools)]
                self._json(200, body)
            elif path.startswith("/pools/"):
                name = unquote(path[len("/pools/"):])
                figures = work.pool(name)
                if figures is None:
                    self._json(404, {"error": f"no work pool named {name!r}", "pool": name})
                else:
                    self._json(200, figures.as_json())
            elif path == "/healthz":
                if work.healthy():
                    self._send(200, "ok\n", "text/plain; charset=utf-8")
                else:
                    self._send(503, "prefect api unavailable\n", "text/plain; charset=utf-8")
            else:
                self._json(404, {"error": f"no such path {path!r}", "paths": ["/metrics", "/pools", "/pools/<name>", "/healthz"]})
        except PrefectUnavailable as exc:
            # KEDA treats an error as a failed scaler (its fallback applies), never as zero.
            log.warning("%s %s: %s", self.command, path, exc)
            if path == "/metrics":
                self._send(503, f"# {exc}\n", "text/plain; charset=utf-8")
            else:
                self._json(503, {"error": str(exc)})
        except Exception as exc:  # a bug here must not look like "no work" to a scaler
            log.exception("%s %s failed", self.command, path)
            self._json(500, {"error": f"{type(exc).__name__}: {exc}"})

    def do_HEAD(self) -> None:  # noqa: N802
        self._send(405, "", "text/plain", allow="GET")

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload) + "\n", "application/json")

    def _send(self, status: int, text: str, content_type: str, **headers: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in headers.items():
            self.send_header(key.title(), value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        log.debug("%s " + format, self.address_string(), *args)


def start_server(host: str = "127.0.0.1", port: int = 9464, **options: Any) -> ExporterServer:
    """A bound exporter whose client is open; call ``serve_forever()`` (or run it in a thread),
    then ``shutdown()``, ``server_close()`` and ``work.close()``. ``port=0`` picks a free port.
    ``options`` are :class:`PendingWork`'s (``api_url``, ``cache_s``, ``pending_grace_s`` ...)."""
    work = PendingWork(**options).start()
    try:
        return ExporterServer((host, port), work)
    except BaseException:
        work.close()
        raise


def serve(host: str = "127.0.0.1", port: int = 9464, **options: Any) -> None:
    """Serve until interrupted (SIGINT/SIGTERM); ``options`` are those of :func:`start_server`."""
    import signal

    server = start_server(host, port, **options)

    def _stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
    log.info("fileflow exporter on %s reading %s", server.url, server.work.api_url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.work.close()


def main(argv: list[str] | None = None) -> None:
    settings = ExporterSettings()
    parser = argparse.ArgumentParser(
        prog="python -m fileflow.server.exporter",
        description="Pending work per Prefect work pool, as Prometheus text and JSON for KEDA's metrics-api scaler.",
    )
    parser.add_argument("--host", default=settings.host, help="address to listen on")
    parser.add_argument("--port", type=int, default=settings.port, help="port to listen on")
    parser.add_argument("--api-url", default=settings.api_url, help="Prefect API URL (default PREFECT_API_URL)")
    parser.add_argument("--mediator-pool", default=settings.mediator_pool, help="work pool of the mediator flows")
    parser.add_argument("--cache-s", type=float, default=settings.cache_s, help="seconds figures are reused")
    parser.add_argument("--api-timeout-s", type=float, default=settings.api_timeout_s, help="longest wait for the API")
    parser.add_argument("--log-level", default="INFO", help="logging level")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        serve(
            host=args.host,
            port=args.port,
            api_url=args.api_url,
            mediator_pool=args.mediator_pool,
            cache_s=args.cache_s,
            api_timeout_s=args.api_timeout_s,
            max_parallel_requests=settings.max_parallel_requests,
            events_lookback_s=settings.events_lookback_s,
            events_slack_s=settings.events_slack_s,
            pending_grace_s=settings.pending_grace_s,
        )
    except (ValueError, OSError) as exc:  # no API URL configured, port taken
        parser.exit(2, f"fileflow exporter: {exc}\n")


if __name__ == "__main__":
    main()
