"""``fileflow audit``: did every submitted file reach a terminal state, and is anything stuck?

What it compares:

- **submitted**: every original in storage (``originals/<sha[:2]>/<sha>``: an upload, or an
  archive member written by ``archive_expand``); the router runs (``process-file``) name them too.
- **terminal**: a manifest (``manifests/<sha>.json``) whose status is ``completed`` or ``failed``.

What it reports (each a *finding*; any finding makes the command exit 1):

- ``lost``: an original older than ``stuck_after`` with no manifest and no run still working on
  it (its router run ended without a manifest, or never started);
- ``stuck``: a run working on a file (the file's run or a converter step) that is not in a
  final state and started (or was scheduled) longer than ``stuck_after`` ago;
- ``no_heartbeat``: a ``Running`` run whose last sign of life (its last
  ``prefect.flow-run.heartbeat`` event, or else its last state change) is older than
  ``heartbeat_after``;
- ``missing_rendition``: a ``completed`` manifest without a rendition its kind requires
  (:data:`REQUIRED_ROLES`), or one listing a rendition that is not in storage;
- ``callback_failed``: a delivery of the callback outbox (a per-upload callback or the global
  webhook, :mod:`fileflow.engine.callbacks`) that was retried for its whole window and given up
  (``name`` is its delivery id); ``fileflow deliver --retry-failed`` sends it again;
- ``upload_unfinished``: an upload record (``uploads/<id>.json``) still ``received`` or
  ``processing`` after ``stuck_after`` while no run works on it.

Uploads are counted apart from contents: the same bytes uploaded twice (top-level and inside
an archive) are one original and one manifest but two uploads; ``shared`` counts the uploads
whose every step came from earlier work on the same content.

Files with no manifest yet but a run younger than the threshold are ``in_flight``, not findings.
Router runs for files whose original is not in this storage (another ``--out`` folder on the
same embedded Prefect database) are counted apart and ignored.

It works with the embedded default (Prefect's local database, ``--out`` folder) and with a
stack (``PREFECT_API_URL`` and ``FILEFLOW_STORAGE_*``, or ``fileflow up``'s stack.json).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

from blocks.storage import Store
from fileflow.engine import callbacks
from fileflow.names import ROUTER_FLOW

#: rendition roles a completed manifest of each kind must list
REQUIRED_ROLES: dict[str, frozenset[str]] = {
    "image": frozenset({"web", "preview", "text"}),
    "pdf": frozenset({"preview", "text"}),
    "office": frozenset({"pdf", "preview", "text"}),
    "drawing": frozenset({"svg", "preview"}),
    "video": frozenset({"web", "poster", "preview"}),
    "text": frozenset({"text"}),
    "archive": frozenset(),
    "email": frozenset({"text", "web", "pdf", "preview"}),
    "audio": frozenset({"web", "preview"}),
}
_ORIGINAL = re.compile(r"originals/([0-9a-f]{2})/([0-9a-f]{64})")
_DERIVED = re.compile(r"(?:^|/)derived/([0-9a-f]{64})/")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """``90``, ``30s``, ``15m``, ``2h``, ``1d`` -> timedelta; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 90, 30s, 15m, 2h or 1d")
    return timedelta(seconds=float(match[1]) * _UNITS[match[2] or "s"])


@dataclass
class Finding:
    kind: str
    """lost | stuck | no_heartbeat | missing_rendition | callback_failed"""
    file_id: str | None
    name: str | None
    detail: str
    run_id: str | None = None


@dataclass
class AuditReport:
    submitted: int = 0
    completed: int = 0
    failed: int = 0
    in_flight: int = 0
    runs_elsewhere: int = 0
    """router runs for files whose original is not in this storage (ignored)"""
    callbacks_pending: int = 0
    """deliveries in the callback outbox still being tried (not findings)"""
    uploads: int = 0
    uploads_completed: int = 0
    uploads_failed: int = 0
    uploads_in_flight: int = 0
    uploads_shared: int = 0
    """uploads whose work was done for an earlier upload of the same content"""
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def lost(self) -> int:
        return sum(f.kind == "lost" for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["terminal"] = self.completed + self.failed
        data["lost"] = self.lost
        data["ok"] = self.ok
        return data


# --------------------------------------------------------------------------- storage
def _stored(store: Store, prefix: str) -> Iterator[tuple[str, datetime]]:
    """(key, last modified) of every object under ``prefix`` (a folder or bucket prefix)."""
    config = store.config
    if config.kind == "local":
        root = Path(store.block.basepath)
        for path in (root / prefix).rglob("*"):
            if path.is_file() and not path.name.endswith(".part"):
                stamp = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
                yield str(path.relative_to(root)), stamp
        return
    base = config.prefix.strip("/")
    full = f"{base}/{prefix}" if base else prefix
    pages = store._s3_call(store._client().get_paginator, "list_objects_v2").paginate(
        Bucket=config.bucket, Prefix=full
    )
    for page in pages:
        for obj in page.get("Contents", []):
            key = obj["Key"][len(base) + 1 :] if base else obj["Key"]
            yield key, obj["LastModified"]


def _manifests(store: Store) -> dict[str, dict[str, Any]]:
    found = {}
    for key, _ in _stored(store, "manifests/"):
        if key.endswith(".json"):
            try:
                manifest = json.loads(store.get_bytes(key))
            except (ValueError, OSError):
                continue  # unreadable: the file counts as not terminal
            found[manifest.get("file_id") or key[len("manifests/") : -len(".json")]] = manifest
    return found


def _upload_records(store: Store) -> list[dict[str, Any]]:
    found = []
    for key, _ in _stored(store, "uploads/"):
        if key.endswith(".json"):
            try:
                found.append(json.loads(store.get_bytes(key)))
            except (ValueError, OSError):
                continue
    return found


def _audit_uploads(report: AuditReport, records: list[dict[str, Any]], live_runs: set[str], now: datetime,
                   stuck_after: timedelta) -> None:
    report.uploads = len(records)
    for record in records:
        status = record.get("status")
        if status in ("completed", "failed"):
            report.uploads_completed += status == "completed"
            report.uploads_failed += status == "failed"
            report.uploads_shared += bool(record.get("shared"))
            continue
        since = datetime.fromisoformat(record["updated_at"]) if record.get("updated_at") else now
        if record.get("flow_run_id") in live_runs or now - since <= stuck_after:
            report.uploads_in_flight += 1
        else:
            report.findings.append(Finding(
                "upload_unfinished", record.get("file_id"), record.get("name"),
                f"upload {record.get('upload_id')} is {status} since {since:%Y-%m-%d %H:%M:%S} UTC "
                f"({_age(now - since)}) and no run works on it", record.get("flow_run_id"),
            ))


def rendition_problems(manifest: dict[str, Any], store: Store) -> list[str]:
    """What a completed manifest lacks: required roles, or renditions absent from storage."""
    roles = {r["role"] for r in manifest.get("renditions", [])}
    problems = [f"no {role} rendition" for role in sorted(REQUIRED_ROLES.get(manifest.get("kind"), ()) - roles)]
    for rendition in manifest.get("renditions", []):
        if not store.exists(rendition["path"]):
            problems.append(f"{rendition['role']} rendition {rendition['path']} is not in storage")
    return problems


# --------------------------------------------------------------------------- Prefect
def file_id_of(parameters: dict[str, Any]) -> str | None:
    """The file a run works on, from its parameters (the file's run, or a converter step; ``file``
    is the parameter of the per-kind flow runs of fileflow before one run per file)."""
    if isinstance(parameters.get("file_id"), str):
        return parameters["file_id"]
    file = parameters.get("file")
    if isinstance(file, dict) and isinstance(file.get("file_id"), str):
        return file["file_id"]
    payload = parameters.get("payload")
    if isinstance(payload, dict):
        match = _DERIVED.search(str(payload.get("output_prefix", "")))
        if match:
            return match[1]
    return None


async def _read_all(client, **filters) -> list:
    runs, offset = [], 0
    while True:
        page = await client.read_flow_runs(**filters, limit=200, offset=offset)
        runs += page
        if len(page) < 200:
            return runs
        offset += 200


async def _last_heartbeats(client, run_ids: list[str], since: datetime) -> dict[str, datetime]:
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter

    if not run_ids:
        return {}
    latest: dict[str, datetime] = {}
    event_filter = EventFilter(
        occurred=EventOccurredFilter(since=since, until=datetime.now(timezone.utc)),
        event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
        resource=EventResourceFilter(id=[f"prefect.flow-run.{r}" for r in run_ids]),
    )
    page = await client.read_events(filter=event_filter, limit=50)  # the API allows 50 a page
    while True:
        for event in page.events:
            run_id = event.resource.id.removeprefix("prefect.flow-run.")
            if run_id not in latest or event.occurred > latest[run_id]:
                latest[run_id] = event.occurred
        if not page.next_page:
            return latest
        page = await client.read_events_page(page.next_page)


# --------------------------------------------------------------------------- the audit
async def audit(store: Store, *, stuck_after: timedelta, heartbeat_after: timedelta) -> AuditReport:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    now = datetime.now(timezone.utc)
    originals = {m[2]: stamp for key, stamp in _stored(store, "originals/") if (m := _ORIGINAL.fullmatch(key))}
    manifests = _manifests(store)
    report = AuditReport(submitted=len(originals))

    live_types = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED, StateType.CANCELLING]
    async with get_client() as client:
        routers = await _read_all(client, flow_filter=FlowFilter(name=FlowFilterName(any_=[ROUTER_FLOW])))
        live = await _read_all(
            client,
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=live_types))),
        )
        live = [r for r in live if file_id_of(r.parameters) in originals]
        running = [r for r in live if r.state and r.state.type == StateType.RUNNING]
        running_ids = {r.id for r in running}
        oldest = min((r.start_time or r.created or now for r in running), default=now)
        beats = await _last_heartbeats(client, [str(r.id) for r in running], oldest - timedelta(minutes=1))

    names: dict[str, str] = {}
    for run in routers:
        file_id = run.parameters.get("file_id")
        if file_id in originals:
            names.setdefault(file_id, str(run.parameters.get("name", "")))
        else:
            report.runs_elsewhere += 1
    for file_id, manifest in manifests.items():
        names.setdefault(file_id, manifest.get("name"))

    # runs still working: stuck when too old, silent when Running without a recent sign of life
    working: set[str] = set()
    for run in live:
        file_id = file_id_of(run.parameters)
        working.add(file_id)
        since = run.start_time or run.expected_start_time or run.created or now
        state = run.state.name if run.state else "?"
        if now - since > stuck_after:
            report.findings.append(Finding(
                "stuck", file_id, names.get(file_id), f"run {run.name!r} is {state} since {since:%Y-%m-%d %H:%M:%S} UTC "
                f"({_age(now - since)})", str(run.id),
            ))
        if run.id in running_ids:
            last = max(filter(None, [beats.get(str(run.id)), run.state.timestamp if run.state else None]), default=since)
            if now - last > heartbeat_after:
                report.findings.append(Finding(
                    "no_heartbeat", file_id, names.get(file_id),
                    f"run {run.name!r} is Running but its last heartbeat or state change was {_age(now - last)} ago",
                    str(run.id),
                ))

    _audit_uploads(report, _upload_records(store), {str(r.id) for r in live}, now, stuck_after)
    for file_id, stamp in sorted(originals.items()):
        manifest = manifests.get(file_id)
        if manifest and manifest.get("status") in ("completed", "failed"):
            if manifest["status"] == "completed":
                report.completed += 1
                for problem in rendition_problems(manifest, store):
                    report.findings.append(Finding("missing_rendition", file_id, manifest.get("name"), problem))
            else:
                report.failed += 1
        elif file_id in working or now - stamp <= stuck_after:
            report.in_flight += 1
        else:
            report.findings.append(Finding(
                "lost", file_id, names.get(file_id),
                f"uploaded {_age(now - stamp)} ago, no manifest and no run working on it",
            ))
    report.callbacks_pending = callbacks.pending_count(store)
    for delivery in callbacks.failed_deliveries(store):
        report.findings.append(Finding(
            "callback_failed", None, delivery["delivery_id"],
            f"POST {delivery['url']} given up after {delivery['attempts']} attempts: {delivery['last_error']}",
        ))
    return report


def _age(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


def print_report(report: AuditReport, console) -> None:
    from rich.table import Table

    console.print(
        f"submitted {report.submitted}: {report.completed} completed, {report.failed} failed, "
        f"{report.in_flight} in flight, {report.lost} lost, {report.callbacks_pending} callbacks pending"
        + (f" ({report.runs_elsewhere} router runs for files stored elsewhere ignored)" if report.runs_elsewhere else "")
    )
    if report.uploads:
        console.print(
            f"uploads {report.uploads}: {report.uploads_completed} completed, {report.uploads_failed} failed "
            f"({report.uploads_shared} shared the work of an earlier upload of the same content), "
            f"{report.uploads_in_flight} in flight"
        )
    if report.ok:
        console.print("[green]nothing lost, nothing stuck[/green]")
        return
    table = Table("finding", "file", "file id", "detail", "run id")
    for f in report.findings:
        table.add_row(f.kind, f.name or "", (f.file_id or "")[:12], f.detail, f.run_id or "")
    console.print(table)
