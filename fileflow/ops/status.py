"""``fileflow status``: where every file is, read from Prefect's API (never its tables).

What is read, with one client (the embedded default's ephemeral server, or ``PREFECT_API_URL``):

- **in flight**: runs of the router (``process-file``, one per file) in state type Running or
  Pending. Its ``kind:<kind>`` tag (set once the file is inspected) gives the file's kind; its
  step task runs (task key ``_run_step-...``, named after the converter) that are Running,
  Pending or waiting for a retry give its stage. A run without a kind yet is at
  ``inspect``/``routing``; an archive with no step running is waiting for its ``members``
  (each member is a file in flight of its own).
- **waiting work per pool**: per work pool, due Scheduled + Pending flow runs and Running ones,
  (:func:`fileflow.ops.backlog.pool_count_filters`; the exporter's ``pending`` leaves out what no
  worker may claim now).
- **oldest waiting**: the due Scheduled or Pending flow run with the earliest expected start.
- **stack processes** (with ``--home`` of a ``fileflow up`` stack): every supervised process,
  its pid, restarts and crashes and how it last ended (:mod:`fileflow.server.supervise`).
- **last hour** (``window``): ``fileflow.file.completed`` / ``fileflow.file.failed`` events
  (:mod:`fileflow.engine.events`) counted by the events API, failures by the ``error.type`` of their
  payload (paged through the failed events only; the failed count is the pages' sum unless the
  breakdown is partial, so the two agree).
- **callbacks** (when given the storage): deliveries waiting in the outbox and those that finally
  failed (:mod:`fileflow.engine.callbacks`), read from storage.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from fileflow.engine.events import COMPLETED, FAILED
from fileflow.home import supervised_state
from fileflow.names import ROUTER_FLOW

#: the task key of a step task run begins with this (fileflow.engine.mediator.STEP_TASK_KEY_PREFIX,
#: repeated here so that ``fileflow status`` does not import the mediator)
STEP_TASK_KEY_PREFIX = "_run_step-"

PAGE = 200
MAX_FAILURE_PAGES = 100  # 50 events a page: past 5,000 failures an hour the breakdown is partial


async def _all(read, **filters) -> list[Any]:
    """Every page of ``read`` (the API answers at most 200 rows a call)."""
    rows: list[Any] = []
    while True:
        batch = await read(limit=PAGE, offset=len(rows), **filters)
        rows.extend(batch)
        if len(batch) < PAGE:
            return rows


def _age(since: datetime | None, now: datetime) -> float | None:
    return round((now - since).total_seconds(), 1) if since else None


async def in_flight(client, now: datetime) -> list[dict[str, Any]]:
    """One entry per file in flight: name, kind, stage, flow run id, seconds since it started."""
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    routers = await _all(
        client.read_flow_runs,
        flow_filter=FlowFilter(name=FlowFilterName(any_=[ROUTER_FLOW])),
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING]))
        ),
    )
    if not routers:
        return []
    steps = await _all(
        client.read_task_runs,
        task_run_filter=TaskRunFilter(
            flow_run_id=TaskRunFilterFlowRunId(any_=[r.id for r in routers]),
            state=TaskRunFilterState(type=TaskRunFilterStateType(
                any_=[StateType.RUNNING, StateType.PENDING, StateType.SCHEDULED])),
        ),
    )
    stage_of: dict[Any, list[str]] = {}
    for t in steps:
        if (t.task_key or "").startswith(STEP_TASK_KEY_PREFIX):
            retry = " (retry)" if t.state and t.state.type == StateType.SCHEDULED else ""
            stage_of.setdefault(t.flow_run_id, []).append(t.name + retry)

    files = []
    for router in routers:
        kind = next((t[5:] for t in router.tags if t.startswith("kind:")), "unknown")
        stage = "+".join(sorted(stage_of.get(router.id, [])))
        if not stage:
            stage = "routing" if kind == "unknown" else ("members" if kind == "archive" else "between steps")
        files.append({"name": router.name.removeprefix("file:"), "kind": kind, "stage": stage,
                      "flow_run_id": str(router.id), "seconds": _age(router.start_time or router.expected_start_time, now)})
    return sorted(files, key=lambda f: -(f["seconds"] or 0))


async def pools(client, now: datetime) -> list[dict[str, Any]]:
    from fileflow.ops.backlog import pool_count_filters

    found = await _all(client.read_work_pools)

    async def one(pool) -> dict[str, Any]:
        due, claimed, running = await asyncio.gather(
            *(client.count_flow_runs(flow_run_filter=f, work_pool_filter=p) for f, p in pool_count_filters(pool.name, now))
        )
        return {"pool": pool.name, "waiting": int(due) + int(claimed), "running": int(running),
                "paused": bool(pool.is_paused)}

    return sorted(await asyncio.gather(*(one(p) for p in found)), key=lambda p: p["pool"])


async def oldest_waiting(client, now: datetime) -> dict[str, Any] | None:
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    def of(state_type, **more):
        return FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[state_type])), **more)

    due, claimed = await asyncio.gather(
        client.read_flow_runs(
            flow_run_filter=of(StateType.SCHEDULED, expected_start_time=FlowRunFilterExpectedStartTime(before_=now)),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=1),
        client.read_flow_runs(flow_run_filter=of(StateType.PENDING), sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=1),
    )
    candidates = [r for r in (*due, *claimed) if r.expected_start_time]
    if not candidates:
        return None
    run = min(candidates, key=lambda r: r.expected_start_time)
    return {"name": run.name, "flow_run_id": str(run.id), "pool": run.work_pool_name,
            "state": run.state.name if run.state else None, "since": run.expected_start_time.isoformat(),
            "seconds": _age(run.expected_start_time, now)}


async def finished(client, now: datetime, window: timedelta) -> dict[str, Any]:
    """Files that reached a terminal state in the window, and failures by error type."""
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter
    from prefect.events.schemas.events import ResourceSpecification

    since = now - window
    occurred = EventOccurredFilter(since=since, until=now)

    def names(*n: str) -> EventFilter:
        return EventFilter(occurred=occurred, event=EventNameFilter(name=list(n)))

    response = await client.request(
        "POST", "/events/count-by/{countable}", path_params={"countable": "event"},
        json={"filter": names(COMPLETED, FAILED).model_dump(mode="json"), "time_unit": "hour", "time_interval": 1},
    )
    counts = Counter()
    for row in response.json():
        counts[row["value"]] += row["count"]
    shared_filter = EventFilter(occurred=occurred, event=EventNameFilter(name=[COMPLETED, FAILED]),
                                resource=EventResourceFilter(labels=ResourceSpecification({"fileflow.shared": "true"})))
    response = await client.request(
        "POST", "/events/count-by/{countable}", path_params={"countable": "event"},
        json={"filter": shared_filter.model_dump(mode="json"), "time_unit": "hour", "time_interval": 1},
    )
    shared = sum(row["count"] for row in response.json())
    failures: Counter[str] = Counter()
    partial = False
    if counts[FAILED]:
        page = await client.read_events(names(FAILED), limit=50)
        pages = 1
        while True:
            for event in page.events:
                error = (event.payload or {}).get("error") or {}
                failures[error.get("type") or "unknown"] += 1
            if not page.next_page:
                break
            if pages >= MAX_FAILURE_PAGES:
                partial = True
                break
            page = await client.read_events_page(page.next_page)
            pages += 1
    # The count and the pages are two reads, and the server persists events in batches: a failure
    # persisted between them would show in the breakdown but not in the count. A complete breakdown
    # is the later read, so it gives the count; only a partial one leaves the count as read.
    failed = counts[FAILED] if partial else sum(failures.values())
    return {"since": since.isoformat(), "completed": counts[COMPLETED], "failed": failed, "shared": shared,
            "failures": dict(failures.most_common()), "failures_partial": partial}


def callbacks_of(store) -> dict[str, Any]:
    """The outbox: deliveries pending, and those that finally failed (the 20 latest listed)."""
    from fileflow.engine.callbacks import failed_deliveries, pending_count

    failed = failed_deliveries(store)
    return {"pending": pending_count(store), "failed": len(failed), "failed_latest": failed[-20:]}


def processes(home: Path | None) -> list[dict[str, Any]]:
    """The supervised processes of the stack under ``home`` (``fileflow up``): each one's pid
    (None while it is being started again), restarts, crashes and how it last ended."""
    if home is None:
        return []
    rows = []
    for name, record in supervised_state(home).items():
        rows.append({"name": name, "pid": record.get("pid"), "restarts": record.get("restarts", 0),
                     "crashes": record.get("crashes", 0), "last_exit": record.get("last_exit"),
                     "last_exit_at": record.get("last_exit_at")})
    return rows


async def collect(window: timedelta = timedelta(hours=1), home: Path | None = None, store=None) -> dict[str, Any]:
    """Everything ``fileflow status`` shows, as one JSON-ready dict; with ``home``, the
    processes of the stack recorded there too; with ``store``, the callback outbox."""
    from prefect.client.orchestration import get_client

    now = datetime.now(timezone.utc)
    async with get_client() as client:
        files, pool_rows, oldest, done = await asyncio.gather(
            in_flight(client, now), pools(client, now), oldest_waiting(client, now), finished(client, now, window)
        )
        api_url = str(client.api_url)
    by_stage = Counter((f["kind"], f["stage"]) for f in files)
    return {
        "api_url": api_url,
        "at": now.isoformat(),
        "in_flight": {
            "files": len(files),
            "by_kind_and_stage": [{"kind": k, "stage": s, "files": n} for (k, s), n in sorted(by_stage.items())],
            "longest": files[:20],
        },
        "pools": pool_rows,
        "oldest_waiting": oldest,
        "finished": done,
        "callbacks": await asyncio.to_thread(callbacks_of, store) if store is not None else None,
        "processes": processes(home),
    }


def render(status: dict[str, Any], console) -> None:
    """The status as rich tables."""
    from rich.table import Table

    flight = status["in_flight"]
    console.print(f"[bold]fileflow status[/bold] at {status['at'][:19]}Z from {status['api_url']}")
    table = Table("kind", "stage", "files", title=f"in flight: {flight['files']} files", title_justify="left")
    for row in flight["by_kind_and_stage"]:
        table.add_row(row["kind"], row["stage"], str(row["files"]))
    console.print(table)
    if flight["longest"]:
        longest = Table("file", "kind", "stage", "s", title="longest in flight", title_justify="left")
        for f in flight["longest"][:10]:
            longest.add_row(f["name"], f["kind"], f["stage"], f"{f['seconds'] or 0:.0f}")
        console.print(longest)
    if status["pools"]:
        pools_table = Table("pool", "waiting", "running", "paused", title="work pools", title_justify="left")
        for p in status["pools"]:
            pools_table.add_row(p["pool"], str(p["waiting"]), str(p["running"]), "yes" if p["paused"] else "")
        console.print(pools_table)
    else:
        console.print("work pools: none (the embedded default runs steps in child processes, not on pools)")
    oldest = status["oldest_waiting"]
    console.print(
        f"oldest waiting: {oldest['name']} ({oldest['state']}, pool {oldest['pool'] or '-'}) for {oldest['seconds']:.0f} s"
        if oldest else "oldest waiting: nothing waits"
    )
    if status.get("processes"):
        procs = Table("process", "pid", "restarts", "crashes", "last exit", title="stack processes (supervised)",
                      title_justify="left")
        for p in status["processes"]:
            last = f"{p['last_exit']} at {p['last_exit_at'][11:19]}Z" if p["last_exit"] else ""
            procs.add_row(p["name"], str(p["pid"] or "restarting"), str(p["restarts"]), str(p["crashes"]), last)
        console.print(procs)
    done = status["finished"]
    failures = ", ".join(f"{k}: {v}" for k, v in done["failures"].items())
    console.print(
        f"uploads since {done['since'][11:19]}Z: [green]{done['completed']} completed[/green], "
        f"[red]{done['failed']} failed[/red]" + (f" ({failures}{', partial' if done['failures_partial'] else ''})" if failures else "")
        + (f"; {done['shared']} of them shared the work of an earlier upload of the same content" if done.get("shared") else "")
    )
    callbacks = status.get("callbacks")
    if callbacks is not None:
        console.print(f"callbacks: {callbacks['pending']} pending, "
                      + (f"[red]{callbacks['failed']} failed for good[/red]" if callbacks["failed"] else "0 failed"))
        if callbacks["failed_latest"]:
            table = Table("delivery", "url", "attempts", "last error", title="failed callbacks (latest)",
                          title_justify="left")
            for d in callbacks["failed_latest"][-10:]:
                table.add_row(str(d["delivery_id"]), str(d["url"]), str(d["attempts"]), str(d["last_error"]))
            console.print(table)
