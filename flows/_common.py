"""What every per-type flow ends with: the file's outcome as the run's final state."""

from __future__ import annotations

from typing import Any

from prefect.states import Completed, Failed, State


def outcome(manifest: dict[str, Any]) -> State:
    """Completed with the manifest, or Failed with a readable reason and the manifest."""
    if manifest["status"] == "completed":
        return Completed(data=manifest, message=f"{manifest['name']}: completed")
    error = next((s["error"] for s in manifest["steps"] if s.get("error")), None)
    reason = f"{error['type']}: {error['message']}" if error else "a step failed"
    return Failed(data=manifest, message=f"{manifest['name']}: {reason}")
