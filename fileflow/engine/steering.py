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
from fileflow.names import (
    ACTIVE_FILES, MEDIATOR_POOL, REPROCESS_FILES, REPROCESS_QUEUE, REPROCESS_RATE, converter_limit, pool_name,
)

REFRESH_S = 1.0
LEASE_S = 300
"""A slot's lease, renewed while its holder lives (by Prefect, at 3/4 of it): a killed holder's slot
is free again after it. Prefect's own default: a renewal that falls while the API is down must land
before the lease ends, and with 60 s leases (the shortest Prefect accepts) a server restart of
15-40 s on a loaded machine let the services process revoke the slots of live files, so the cap
was exceeded until they ended (tests/test_stack_redis.py). The price: a killed mediator's slots
come back after up to 5 minutes, not 1."""

log = logging.getLogger("fileflow.engine.steering")


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
            # one read for every step that finds the snapshot stale: every step held by a paused
            # converter wakes each second, and a read each would cost the server as many reads a
            # second as steps are held. Shared per event loop, since the runtime outlives loops
            # (embedded batches)
            loop = asyncio.get_running_loop()
            current = self._refreshing
            if current is None or current[0] is not loop or current[1].done():
                current = self._refreshing = (loop, loop.create_task(self._refresh()))
            await asyncio.shield(current[1])
        return self._snap

    async def _refresh(self) -> None:
        try:
            self._snap = await read_snapshot()
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
        # an extension module (a dotted path) is limited under the name its SPEC declares
        pool, name = pool_name(converter), converter_limit(converters.spec(converter).name)

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


async def read_snapshot() -> _Snapshot:
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
