"""Throughput, failures and step latency for the exporter, from fileflow's terminal events.

Every file ends with one ``fileflow.file.completed`` or ``fileflow.file.failed`` event
(:mod:`fileflow.engine.events`) whose payload carries its kind, error type and the duration of each
step. :class:`FileEventCounters` reads those events from Prefect's events API incrementally
(each refresh asks only for events since the last one it saw, less ``slack_s``) and keeps:

- ``fileflow_files_total{kind,status}``: files that reached a terminal state
  (status ``completed`` or ``failed``);
- ``fileflow_file_failures_total{kind,error}``: failed files by the error type of their first
  failed step (``UnsupportedInput``, ``ToolTimeout``, ...);
- ``fileflow_step_duration_seconds{converter}``: a histogram of the steps' own durations
  (``duration_s`` of the manifest: fetch, convert and store in the child process; queueing on
  a pool and Prefect's bookkeeping are not in it) of steps that ran, i.e. completed and not
  served from the cache, observed when their file's event arrives.

Counters start at zero when the exporter starts (plus what ``lookback_s`` reads back), as
Prometheus counters do after a restart; ``rate()`` and ``increase()`` handle that. An event
is counted once (by id). An event that becomes readable more than ``slack_s`` after it
occurred (the server persists events in batches, every few seconds) is not counted.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from fileflow.engine.events import COMPLETED, FAILED, TERMINAL

BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
MAX_PAGES = 200  # 50 events a page: one refresh reads at most 10,000 events, the rest next time


@dataclass
class Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))  # last: +Inf
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        self.buckets[bisect.bisect_left(BUCKETS, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound as written in ``le``, observations at or below it), +Inf last."""
        out, running = [], 0
        for bound, n in zip([*(f"{b:g}" for b in BUCKETS), "+Inf"], self.buckets):
            running += n
            out.append((bound, running))
        return out


@dataclass(frozen=True)
class FileFigures:
    """A copy of the counters at one moment, for :func:`families`."""

    files: dict[tuple[str, str], int]
    failures: dict[tuple[str, str], int]
    steps: dict[str, Histogram]


class FileEventCounters:
    """Counts terminal events read from the Prefect events API; call :meth:`refresh` serially."""

    def __init__(self, lookback_s: float = 0.0, slack_s: float = 30.0) -> None:
        self.slack = timedelta(seconds=slack_s)
        self.floor = datetime.now(timezone.utc) - timedelta(seconds=lookback_s)
        self.cursor = self.floor
        self.seen: dict[str, datetime] = {}
        self.files: Counter[tuple[str, str]] = Counter()
        self.failures: Counter[tuple[str, str]] = Counter()
        self.steps: dict[str, Histogram] = {}

    def count(self, event_id: str, name: str, occurred: datetime, payload: dict[str, Any]) -> None:
        if event_id in self.seen or name not in TERMINAL:
            return
        self.seen[event_id] = occurred
        kind = str(payload.get("kind") or "unknown")
        status = "completed" if name == COMPLETED else "failed"
        self.files[(kind, status)] += 1
        if name == FAILED:
            error = (payload.get("error") or {}).get("type") or "unknown"
            self.failures[(kind, str(error))] += 1
        for step in payload.get("steps") or []:
            if step.get("status") == "completed" and not step.get("cached") and step.get("duration_s") is not None:
                self.steps.setdefault(str(step["name"]), Histogram()).observe(float(step["duration_s"]))

    async def refresh(self, client) -> None:
        """Read the events since the cursor (less the slack) and count the new ones."""
        from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventOrder

        now = datetime.now(timezone.utc)
        query = EventFilter(
            occurred=EventOccurredFilter(since=max(self.floor, self.cursor - self.slack), until=now),
            event=EventNameFilter(name=list(TERMINAL)),
            order=EventOrder.ASC,
        )
        page = await client.read_events(query, limit=50)
        latest = self.cursor
        for pages in range(MAX_PAGES):
            for event in page.events:
                self.count(str(event.id), event.event, event.occurred, event.payload or {})
                latest = max(latest, event.occurred)
            if not page.next_page or pages + 1 == MAX_PAGES:
                break
            page = await client.read_events_page(page.next_page)
        self.cursor = latest
        horizon = self.cursor - self.slack
        self.seen = {k: t for k, t in self.seen.items() if t >= horizon}

    def figures(self) -> FileFigures:
        return FileFigures(
            files=dict(self.files),
            failures=dict(self.failures),
            steps={k: Histogram(list(h.buckets), h.total, h.count) for k, h in self.steps.items()},
        )


def families(figures: FileFigures) -> Iterator[Metric]:
    """The three metric families, for a ``prometheus_client`` collector's ``collect()``."""
    files = CounterMetricFamily(
        "fileflow_files_total",
        "Files that reached a terminal state (completed or failed), from fileflow's terminal events.",
        labels=["kind", "status"],
    )
    for (kind, status), n in sorted(figures.files.items()):
        files.add_metric([kind, status], n)
    yield files
    failures = CounterMetricFamily(
        "fileflow_file_failures_total",
        "Failed files by the error type of their first failed step.",
        labels=["kind", "error"],
    )
    for (kind, error), n in sorted(figures.failures.items()):
        failures.add_metric([kind, error], n)
    yield failures
    steps = HistogramMetricFamily(
        "fileflow_step_duration_seconds",
        "Seconds a step took in its child process (steps that ran, not cached ones).",
        labels=["converter"],
    )
    for converter, h in sorted(figures.steps.items()):
        steps.add_metric([converter], h.cumulative(), round(h.total, 6))
    yield steps
