"""What the router shares with its helpers: the file's outcome as the run's final state, and the
tags of the runs it starts for a file's members."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from prefect.context import FlowRunContext, TagsContext
from prefect.states import Completed, Failed, State


def outcome(manifest: dict[str, Any]) -> State:
    """Completed with the manifest, or Failed with a readable reason and the manifest."""
    if manifest["status"] == "completed":
        return Completed(data=manifest, message=f"{manifest['name']}: completed")
    error = next((s["error"] for s in manifest["steps"] if s.get("error")), None)
    reason = f"{error['type']}: {error['message']}" if error else "a step failed"
    return Failed(data=manifest, message=f"{manifest['name']}: {reason}")


@contextmanager
def file_tags() -> Iterator[None]:
    """Tags for the runs started inside (a file's members): the ``batch:<id>`` tags of this run,
    never its ``kind:`` tag (each member's run tags itself with its own kind).

    A run started from a deployment (``fileflow submit``) carries its batch tag on the run
    itself, which Prefect does not pass on to subflows: it is passed on here.
    """
    keep = {t for t in TagsContext.get().current_tags if not t.startswith("kind:")}
    ctx = FlowRunContext.get()
    if ctx is not None and ctx.flow_run is not None:
        keep |= {t for t in ctx.flow_run.tags or [] if t.startswith("batch:")}
    with TagsContext(current_tags=keep):
        yield
