"""``fileflow limits`` and the setup of the controls that :mod:`fileflow.engine.steering` honours.

The controls (which Prefect object each is, and who honours it) are drawn in
:mod:`fileflow.engine.steering`'s docstring. This module creates them when missing (idempotent;
an operator's values are never reset) and lets an operator show, set, pause and resume them.
"""

from __future__ import annotations

from dataclasses import dataclass

import converters
from fileflow.engine.steering import read_snapshot
from fileflow.errors import InvalidRequest
from fileflow.names import (
    ACTIVE_FILES, MEDIATOR_POOL, REPROCESS_FILES, REPROCESS_QUEUE, REPROCESS_RATE, converter_limit, pool_name,
)

REPROCESS_QUEUE_PRIORITY = 100
"""Lower numbers are served first; the pools' ``default`` queue has priority 1."""
REPROCESS_QUEUE_LIMIT = 1
"""Runs of the reprocess queue running at once per pool: the rest of a pool is the uploads'."""


@dataclass(frozen=True)
class LimitSpec:
    name: str
    limit: int
    description: str
    slot_decay_per_second: float = 0.0


def default_limits() -> list[LimitSpec]:
    """What ``deployments.setup`` creates when missing (an operator's values are never reset).

    Only reprocessing's limits: they keep a bulk job from starving uploads. Uploads and
    converters have no cap until an operator sets one (``fileflow limits set``): a cap that
    exists costs every step three API calls and two events for its lease, and a fixed default
    would stop the pools from scaling with the cluster (KEDA counts only what the mediator has
    already let through)."""
    return [
        LimitSpec(REPROCESS_FILES, 1, "files reprocessed at once"),
        LimitSpec(REPROCESS_RATE, 1, "files reprocessed per second (slot decay)", slot_decay_per_second=2.0),
    ]


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


async def unset_limit(target: str) -> str:
    """Lift the cap of ``target`` (delete its limit): nothing limits it until it is set again."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    name = _limit_of(target)
    async with get_client() as client:
        try:
            await client.delete_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            return f"{name}: no cap (there was none)"
    return f"{name}: no cap (slots held now are released as their steps end)"


async def set_paused(target: str, paused: bool) -> str:
    """Pause or resume a converter (its work pool) or reprocessing (the ``reprocess`` queues)."""
    from prefect.client.orchestration import get_client

    from prefect.exceptions import ObjectNotFound

    from fileflow.names import K8S_POOLS

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
    snap = await read_snapshot()

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
