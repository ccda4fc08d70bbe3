"""What waits on a work pool for ``fileflow status``: a pool's due Scheduled, Pending and Running
flow runs. The exporter (KEDA's metric, :mod:`fileflow.server.exporter`) counts more finely: only
the runs a worker could claim now, with the held and stale ones apart."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def pool_count_filters(name: str, now: datetime) -> list[tuple[Any, Any]]:
    """``(flow_run_filter, work_pool_filter)`` of a pool's due Scheduled, Pending and Running
    runs: waiting = the first two counts, running = the third (also used by ``fileflow status``)."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
        WorkPoolFilter,
        WorkPoolFilterName,
    )
    from prefect.client.schemas.objects import StateType

    in_pool = WorkPoolFilter(name=WorkPoolFilterName(any_=[name]))

    def of_type(state_type: StateType, due_before: datetime | None = None) -> FlowRunFilter:
        criteria: dict[str, Any] = {"state": FlowRunFilterState(type=FlowRunFilterStateType(any_=[state_type]))}
        if due_before is not None:
            criteria["expected_start_time"] = FlowRunFilterExpectedStartTime(before_=due_before)
        return FlowRunFilter(**criteria)

    # A Pending run is counted whatever its expected start: a worker's prefetch claims
    # runs up to PREFECT_WORKER_PREFETCH_SECONDS before they are due.
    return [(of_type(StateType.SCHEDULED, now), in_pool), (of_type(StateType.PENDING), in_pool),
            (of_type(StateType.RUNNING), in_pool)]
