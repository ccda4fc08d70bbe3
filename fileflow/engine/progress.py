"""Which stage every file is at, for the terminal display (the Prefect UI shows the same runs)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

#: finished files remembered for :meth:`Tracker.has_finished` (asked right after a run ends):
#: enough for every file a mediator holds at once, bounded so that a warm mediator running for
#: months keeps a flat memory
REMEMBER_FINISHED = 10_000


@dataclass
class FileProgress:
    label: str
    stage: str = "queued"
    started: float = field(default_factory=time.monotonic)


class Tracker:
    """Thread-safe record of files in flight and finished, fed by the mediator.

    ``keep_manifests``: keep every finished file's manifest in :attr:`manifests` (a batch, which
    prints them at its end); a long-running mediator keeps counts only.
    """

    def __init__(self, *, keep_manifests: bool = False) -> None:
        self._lock = threading.Lock()
        self.total = 0
        self.in_flight: dict[str, FileProgress] = {}
        self.completed = 0
        self.failed = 0
        self.failures: dict[str, int] = {}
        self.keep_manifests = keep_manifests
        self.manifests: list[dict] = []
        self._finished: OrderedDict[str, None] = OrderedDict()

    def expect(self, count: int = 1) -> None:
        """``count`` more files to come (fewer, when negative: a member found already processed)."""
        with self._lock:
            self.total += count

    def started(self, key: str, label: str) -> None:
        with self._lock:
            self.in_flight[key] = FileProgress(label)

    def stage(self, key: str, stage: str) -> None:
        with self._lock:
            if key in self.in_flight:
                self.in_flight[key].stage = stage

    def finished(self, key: str, manifest: dict) -> None:
        with self._lock:
            self.in_flight.pop(key, None)
            self._finished[key] = None
            self._finished.move_to_end(key)
            while len(self._finished) > REMEMBER_FINISHED:
                self._finished.popitem(last=False)
            if self.keep_manifests:
                self.manifests.append(manifest)
            if manifest["status"] == "completed":
                self.completed += 1
            else:
                self.failed += 1
                error = next((s["error"] for s in manifest["steps"] if s.get("error")), None)
                kind = error["type"] if error else "Failed"
                self.failures[kind] = self.failures.get(kind, 0) + 1

    def has_finished(self, key: str) -> bool:
        with self._lock:
            return key in self._finished

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "total": self.total,
                "done": self.completed + self.failed,
                "completed": self.completed,
                "failed": self.failed,
                "failures": dict(self.failures),
                "in_flight": [(p.label, p.stage, time.monotonic() - p.started) for p in self.in_flight.values()],
            }
