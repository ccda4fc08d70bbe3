"""Steering: limits and pauses an operator changes while fileflow runs, through Prefect's own objects.

Every control is a Prefect object, so the UI (Concurrency, Work Pools), ``prefect gcl`` /
``prefect work-pool`` / ``prefect work-queue`` and ``fileflow limits`` change the same thing,
and running processes follow within :data:`REFRESH_S` without a restart:

===========================  ===========================================  =========================
control                      Prefect object                               honoured by
===========================  ===========================================  =========================
converter concurrency        global concurrency limit                     every step of that
                             ``fileflow-converter-<name>``                converter, local or pool
converter pause              work pool ``converter-<name>`` paused        workers (pool steps) and
                                                                          the mediator (local steps)
active files                 global concurrency limit                     the router, per uploaded
                             ``fileflow-active-files``                    file (not archive members)
reprocessing: files at once  global concurrency limit ``fileflow-reprocess``  the reprocess flow
reprocessing: rate           limit ``fileflow-reprocess-rate`` (slot decay)   the reprocess flow
reprocessing: pause          work queue ``reprocess`` paused, on every pool   workers and the flow
===========================  ===========================================  =========================

A global concurrency limit of 0 makes Prefect's ``concurrency()`` raise instead of wait, so
fileflow never asks for a slot of a limit set to 0: it treats such a limit as a pause and
waits, and ``fileflow limits set`` refuses 0 (use ``pause``). A limit that does not exist or is
inactive does not limit anything. Local steps cannot be held back by a work pool, so the
mediator reads the pools' pause flags itself (one cached snapshot per process, refreshed at most
every :data:`REFRESH_S`) and lets a paused converter's steps wait before they start; a step that
already runs is never interrupted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

import converters
from fileflow.errors import InvalidRequest
from fileflow.pools import pool_name

MEDIATOR_POOL = "fileflow-mediator"
ACTIVE_FILES = "fileflow-active-files"
REPROCESS_FILES = "fileflow-reprocess"
REPROCESS_RATE = "fileflow-reprocess-rate"
REPROCESS_QUEUE = "reprocess"
REPROCESS_QUEUE_PRIORITY = 100
"""Lower numbers are served first; the pools' ``default`` queue has priority 1."""
REPROCESS_QUEUE_LIMIT = 1
"""Runs of the reprocess queue running at once per pool: the rest of a pool is the uploads'."""
REFRESH_S = 1.0
LEASE_S = 60
"""A slot's lease, renewed while its holder lives: a killed holder's slot is free again after it
(60 s is the shortest Prefect accepts)."""

log = logging.getLogger("fileflow.limits")


def converter_limit(converter: str) -> str:
    return f"fileflow-converter-{converters.spec(converter).name}"


@dataclass(frozen=True)
class LimitSpec:
    name: str
    limit: int
    description: str
    slot_decay_per_second: float = 0.0


def default_limits() -> list[LimitSpec]:
    """What ``deployments.setup`` creates when missing (an operator's values are never reset)."""
    limits = [
        LimitSpec(ACTIVE_FILES, 64, "uploaded files processed at once"),
        LimitSpec(REPROCESS_FILES, 1, "files reprocessed at once"),
        LimitSpec(REPROCESS_RATE, 1, "files reprocessed per second (slot decay)", slot_decay_per_second=2.0),
    ]
    limits += [LimitSpec(converter_limit(c), 16, f"steps of converter {c} at once") for c in converters.BUILTINS]
    return limits


# ---------------------------------------------------------------------------------------
# Creating the controls (idempotent)
# ---------------------------------------------------------------------------------------


async def ensure_limits(client, specs: list[LimitSpec] | None = None) -> list[str]:
    """Create the missing global concurrency limits; the names of those created."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    existing = {gcl.name for gcl in await client.read_global_concurrency_limits(limit=200)}
    created = []
    for spec in specs or default_limits():
        if spec.name in existing:
            continue
        await client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=spec.name, limit=spec.limit, slot_decay_per_second=spec.slot_decay_per_second)
        )
        created.append(spec.name)
    return created


async def ensure_pool(client, name: str) -> None:
    """A process work pool (as deployments.setup makes them), created if missing."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    try:
        await client.read_work_pool(name)
    except ObjectNotFound:
        try:
            await client.create_work_pool(
                WorkPoolCreate(name=name, type="process", base_job_template=ProcessWorker.get_default_base_job_template())
            )
        except ObjectAlreadyExists:
            pass


async def ensure_reprocess_queues(client, pools: list[str]) -> list[str]:
    """A low-priority ``reprocess`` queue with a concurrency limit on each pool; pools where it was created."""
    from prefect.exceptions import ObjectNotFound

    created = []
    for pool in pools:
        try:
            await client.read_work_queue_by_name(REPROCESS_QUEUE, work_pool_name=pool)
        except ObjectNotFound:
            await client.create_work_queue(
                REPROCESS_QUEUE,
                description="bulk reprocessing: served after every other queue of the pool",
                priority=REPROCESS_QUEUE_PRIORITY,
                concurrency_limit=REPROCESS_QUEUE_LIMIT,
                work_pool_name=pool,
            )
            created.append(pool)
    return created


# ---------------------------------------------------------------------------------------
# What running processes honour
# ---------------------------------------------------------------------------------------


@dataclass
class _Snapshot:
    limits: dict[str, tuple[int, bool, float]] = field(default_factory=dict)  # name -> (limit, active, decay/s)
    paused_pools: set[str] = field(default_factory=set)
    reprocess_paused: bool = False
    taken: float = float("-inf")


class Steering:
    """One process's view of the limits and pauses, refreshed at most every ``refresh_s``.

    Reading Prefect once per interval instead of once per step keeps the cost off the embedded
    default's SQLite database; a change shows within ``refresh_s``.
    """

    def __init__(self, refresh_s: float = REFRESH_S) -> None:
        self.refresh_s = refresh_s
        self._snap = _Snapshot()
        self._refreshing: tuple[asyncio.AbstractEventLoop, asyncio.Task] | None = None

    async def snapshot(self, *, fresh: bool = False) -> _Snapshot:
        if fresh:
            await self._refresh()
        elif time.monotonic() - self._snap.taken >= self.refresh_s:
            # one read for every step that finds the snapshot stale: 300 steps held by a paused
            # converter, waking each second, made up to 300 reads a second of the saturated
            # server. Shared per event loop, since the runtime outlives loops (embedded batches)
            loop = asyncio.get_running_loop()
            current = self._refreshing
            if current is None or current[0] is not loop or current[1].done():
                current = self._refreshing = (loop, loop.create_task(self._refresh()))
            await asyncio.shield(current[1])
        return self._snap

    async def _refresh(self) -> None:
        try:
            self._snap = await _read_snapshot()
        except Exception as exc:  # the API hiccuped: keep steering by the last snapshot
            log.warning("could not read fileflow's limits from Prefect (%s); using the last known ones", exc)
            self._snap.taken = time.monotonic()

    async def _wait(self, blocked: Callable[[_Snapshot], str | None], on_wait: Callable[[str], None] | None) -> None:
        reported = None
        while (reason := blocked(await self.snapshot())) is not None:
            if reason != reported:
                reported = reason
                _run_log(f"waiting: {reason}")
                if on_wait:
                    on_wait(reason)
            await asyncio.sleep(self.refresh_s)

    @asynccontextmanager
    async def _slot(self, name: str, blocked, on_wait) -> AsyncIterator[None]:
        from prefect.concurrency.asyncio import concurrency

        await self._wait(blocked, on_wait)
        limit, active, _ = (await self.snapshot()).limits.get(name, (None, False, 0.0))
        if not active or not limit:
            yield
            return
        async with concurrency(name, occupy=1, lease_duration=LEASE_S):
            yield

    def converter_slot(self, converter: str, on_wait: Callable[[str], None] | None = None):
        """Wait while the converter is paused (or its limit is 0), then hold one of its slots."""
        pool, name = pool_name(converter), converter_limit(converter)

        def blocked(snap: _Snapshot) -> str | None:
            if pool in snap.paused_pools:
                return f"converter {converter} is paused (work pool {pool})"
            if snap.limits.get(name, (1, False, 0.0))[:2] == (0, True):
                return f"converter {converter}'s limit {name} is 0"
            return None

        return self._slot(name, blocked, on_wait)

    def file_slot(self, lane: str, on_wait: Callable[[str], None] | None = None):
        """One slot of the active-files cap (uploads) or of the reprocessing limits (reprocess)."""
        name = REPROCESS_FILES if lane == "reprocess" else ACTIVE_FILES

        def blocked(snap: _Snapshot) -> str | None:
            if lane == "reprocess" and snap.reprocess_paused:
                return f"reprocessing is paused (work queue {REPROCESS_QUEUE} of {MEDIATOR_POOL})"
            if snap.limits.get(name, (1, False, 0.0))[:2] == (0, True):
                return f"limit {name} is 0"
            return None

        return self._slot(name, blocked, on_wait)

    async def reprocess_rate(self) -> None:
        """Wait for the reprocessing rate limit (if it exists and has a slot decay)."""
        from prefect.concurrency.asyncio import rate_limit

        limit, active, decay = (await self.snapshot()).limits.get(REPROCESS_RATE, (None, False, 0.0))
        if active and limit and decay:
            await rate_limit(REPROCESS_RATE, occupy=1)


async def _read_snapshot() -> _Snapshot:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        gcls = await client.read_global_concurrency_limits(limit=200)
        pools = await client.read_work_pools()
        try:
            queue = await client.read_work_queue_by_name(REPROCESS_QUEUE, work_pool_name=MEDIATOR_POOL)
            reprocess_paused = bool(queue.is_paused)
        except ObjectNotFound:
            reprocess_paused = False
    return _Snapshot(
        limits={g.name: (g.limit, bool(g.active), g.slot_decay_per_second or 0.0) for g in gcls
                if g.name.startswith("fileflow-")},
        paused_pools={p.name for p in pools if p.is_paused},
        reprocess_paused=reprocess_paused,
        taken=time.monotonic(),
    )


def _run_log(message: str) -> None:
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        get_run_logger().info(message)
    except MissingContextError:
        log.info(message)


# ---------------------------------------------------------------------------------------
# ``fileflow limits``: show, set, pause, resume
# ---------------------------------------------------------------------------------------

TARGETS_HELP = "a converter name, 'active-files', 'reprocess' or 'reprocess-rate'"


def _limit_of(target: str) -> str:
    if target == "active-files":
        return ACTIVE_FILES
    if target == "reprocess":
        return REPROCESS_FILES
    if target == "reprocess-rate":
        return REPROCESS_RATE
    if target in converters.BUILTINS:
        return converter_limit(target)
    raise InvalidRequest(f"unknown target {target!r}: expected {TARGETS_HELP}")


async def set_limit(target: str, value: float) -> str:
    """Set (creating if missing) the limit of ``target``; what was done, for the operator."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    name = _limit_of(target)
    if name == REPROCESS_RATE:
        if value <= 0:
            raise InvalidRequest("a rate must be above 0 files per second; to stop reprocessing use `pause reprocess`")
        fields = {"limit": max(1, round(value)), "slot_decay_per_second": float(value)}
        said = f"{name}: {value:g} files per second"
    else:
        if value != int(value) or value < 1:
            raise InvalidRequest(
                f"a concurrency limit must be a whole number of at least 1 (got {value:g}): Prefect's "
                f"concurrency() fails rather than waits at 0; to stop {target} use `pause {target}`"
            )
        fields = {"limit": int(value)}
        said = f"{name}: {int(value)} at once"
    async with get_client() as client:
        try:
            await client.read_global_concurrency_limit_by_name(name)
            await client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active=True, **fields))
        except ObjectNotFound:
            await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, **fields))
    return said


async def set_paused(target: str, paused: bool) -> str:
    """Pause or resume a converter (its work pool) or reprocessing (the ``reprocess`` queues)."""
    from prefect.client.orchestration import get_client

    from prefect.exceptions import ObjectNotFound

    from deployments.setup import K8S_POOLS

    verb = "paused" if paused else "resumed"
    async with get_client() as client:
        if target == "reprocess":
            pools = [MEDIATOR_POOL, *(pool_name(c) for c in converters.BUILTINS)]
            for pool in pools:
                await ensure_pool(client, pool)
            # the Kubernetes pools (converter-video-k8s) where they exist; never created here, as
            # a process pool would not run their steps (their type and job template are the setup's)
            for pool in K8S_POOLS:
                try:
                    await client.read_work_pool(pool)
                except ObjectNotFound:
                    continue
                pools.append(pool)
            await ensure_reprocess_queues(client, pools)
            for pool in pools:
                queue = await client.read_work_queue_by_name(REPROCESS_QUEUE, work_pool_name=pool)
                await client.update_work_queue(queue.id, is_paused=paused)
            return f"reprocessing {verb}: work queue {REPROCESS_QUEUE} on {len(pools)} pools"
        if target not in converters.BUILTINS:
            raise InvalidRequest(f"unknown target {target!r}: expected a converter name or 'reprocess'")
    pool = pool_name(target)
    await set_paused_pool(pool, paused)
    return f"converter {target} {verb} (work pool {pool})"


async def set_paused_pool(pool: str, paused: bool) -> None:
    """Pause or resume a work pool, creating it first if missing (the embedded default has none)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolUpdate

    async with get_client() as client:
        await ensure_pool(client, pool)
        await client.update_work_pool(pool, WorkPoolUpdate(is_paused=paused))


@dataclass
class Row:
    target: str
    limit: str
    active_slots: str
    paused: str
    prefect_object: str


async def show() -> list[Row]:
    """Every control, as Prefect has it now."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        gcls = {g.name: g for g in await client.read_global_concurrency_limits(limit=200)}
        pools = {p.name: p for p in await client.read_work_pools()}
    snap = await _read_snapshot()

    def limit_cells(name: str) -> tuple[str, str]:
        g = gcls.get(name)
        if g is None:
            return "none", "-"
        limit = f"{g.slot_decay_per_second:g}/s" if g.slot_decay_per_second else str(g.limit)
        return (limit if g.active else f"{limit} (inactive)"), str(g.active_slots)

    rows = [Row("active-files", *limit_cells(ACTIVE_FILES), "-", f"gcl {ACTIVE_FILES}")]
    rows.append(Row("reprocess", *limit_cells(REPROCESS_FILES), "yes" if snap.reprocess_paused else "no",
                    f"gcl {REPROCESS_FILES}, queue {REPROCESS_QUEUE}"))
    rows.append(Row("reprocess-rate", *limit_cells(REPROCESS_RATE), "-", f"gcl {REPROCESS_RATE}"))
    for c in converters.BUILTINS:
        pool = pools.get(pool_name(c))
        paused = "-" if pool is None else ("yes" if pool.is_paused else "no")
        rows.append(Row(c, *limit_cells(converter_limit(c)), paused, f"gcl {converter_limit(c)}, pool {pool_name(c)}"))
    return rows
