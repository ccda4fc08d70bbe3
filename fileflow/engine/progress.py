"""Which stage every file is at, for the terminal display (the Prefect UI shows the same runs)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class FileProgress:
    label: str
    stage: str = "queued"
    started: float = field(default_factory=time.monotonic)


class Tracker:
    """Thread-safe record of files in flight and finished, fed by the mediator."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = 0
        self.in_flight: dict[str, FileProgress] = {}
        self.completed = 0
        self.failed = 0
        self.failures: dict[str, int] = {}
        self.manifests: list[dict] = []
        self._finished: set[str] = set()

    def expect(self, count: int = 1) -> None:
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
            self._finished.add(key)
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
