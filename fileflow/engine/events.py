"""Terminal events: how fileflow tells others that a file is done.

When a file's manifest is finished (:meth:`fileflow.engine.mediator.Mediation.finish`), fileflow emits
one Prefect event:

- ``fileflow.file.completed`` or ``fileflow.file.failed``;
- resource ``fileflow.file.<sha256>`` (with the file's name, kind and status as labels);
- related resources: the flow run that finished the file, its flow and tags (Prefect adds
  them when the event is emitted inside a run);
- payload: ``file_id``, ``name``, ``kind``, ``status``, ``parent``, ``error`` (``type``,
  ``message``, ``step`` of the first failed step, or null), ``manifest`` (``key`` in storage
  and ``url``: ``file://...`` or ``s3://bucket/prefix/...``) and ``steps`` (name, status,
  duration in seconds, cached) for the exporter's per-step latency; ``upload``: the upload
  that reached its end (:func:`fileflow.engine.uploads.summary`: its id, name, parent upload,
  batch, status, whether its work was shared, its record's location), or null for a file
  processed outside an upload (``fileflow reprocess``).

With ``FILEFLOW_NOTIFY_WEBHOOK_URL`` set, the same payload is put in the callback outbox
(:func:`enqueue_webhook`, :mod:`fileflow.engine.callbacks`), from where the deliverer POSTs it,
signed and retried; the exporter (:mod:`fileflow.server.exporter`) counts the events. See
docs/events.md and docs/callbacks.md.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from blocks.storage import StorageConfig, Store, manifest_key
from fileflow.engine.callbacks import enqueue
from fileflow.settings import NotifySettings
from fileflow.names import FILE_COMPLETED as COMPLETED, FILE_FAILED as FAILED, FILE_RESOURCE_PREFIX as RESOURCE_PREFIX

log = logging.getLogger("fileflow.engine.events")

TERMINAL = (COMPLETED, FAILED)


def storage_url(config: StorageConfig, key: str) -> str:
    """Where ``key`` lives, as a URL another service can use: ``file://`` or ``s3://``."""
    if config.kind == "local":
        return (Path(config.basepath).resolve() / key).as_uri()
    prefix = config.prefix.strip("/")
    return f"s3://{config.bucket}/{prefix + '/' if prefix else ''}{key}"


def first_error(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The first failed step's error with the step's name, or None."""
    for step in manifest["steps"]:
        if step.get("error"):
            return {**step["error"], "step": step["name"]}
    return None


def terminal_event(manifest: dict[str, Any], storage: StorageConfig,
                   upload: dict[str, Any] | None = None) -> dict[str, Any]:
    """The keyword arguments of ``emit_event`` for a finished manifest (of ``upload``)."""
    status = manifest["status"]
    key = manifest_key(manifest["file_id"])
    resource = {
        "prefect.resource.id": f"{RESOURCE_PREFIX}{manifest['file_id']}",
        "prefect.resource.name": upload["name"] if upload else manifest["name"],
        "fileflow.kind": manifest["kind"],
        "fileflow.ops.status": status,
    }
    if upload:
        resource["fileflow.upload"] = upload["upload_id"]
        resource["fileflow.shared"] = "true" if upload["shared"] else "false"
    return {
        "event": COMPLETED if status == "completed" else FAILED,
        "resource": resource,
        "payload": {
            "upload": upload,
            "file_id": manifest["file_id"],
            "name": manifest["name"],
            "kind": manifest["kind"],
            "status": status,
            "parent": manifest.get("parent"),
            "error": first_error(manifest),
            "manifest": {"key": key, "url": storage_url(storage, key)},
            "steps": [
                {"name": s["name"], "status": s["status"], "duration_s": s.get("duration_s"), "cached": s.get("cached", False)}
                for s in manifest["steps"]
            ],
        },
    }


def emit_terminal(manifest: dict[str, Any], storage: StorageConfig, upload: dict[str, Any] | None = None) -> str | None:
    """Emit the file's terminal event (of ``upload``), its id; never lets a failure to emit fail the file."""
    from prefect.events import emit_event

    try:
        event = emit_event(**terminal_event(manifest, storage, upload))
    except Exception:  # the manifest is written: the event is a notification, not the record
        log.warning("could not emit the terminal event of %s", manifest["file_id"], exc_info=True)
        return None
    return str(event.id) if event is not None else None


def webhook_body(event: dict[str, Any], *, event_id: str, flow_run_id: str | None, occurred: str) -> dict[str, Any]:
    """What the global webhook receives for one terminal event (docs/events.md)."""
    return {"event": event["event"], "event_id": event_id, "occurred": occurred, "flow_run_id": flow_run_id or "",
            "file": event["payload"]}


def enqueue_webhook(store: Store, notify: NotifySettings, manifest: dict[str, Any], *, event_id: str | None,
                    flow_run_id: str | None, upload: dict[str, Any] | None = None) -> bool:
    """Put the file's terminal event (of ``upload``) in the callback outbox for the global webhook,
    if one is set and wants this event; whether a delivery was added. One delivery per file and
    flow run: a resumed run finishing the file again adds none, a new run adds one."""
    event = terminal_event(manifest, store.config, upload)
    if not notify.webhook_url or event["event"] not in notify.events:
        return False
    event_id = event_id or str(uuid.uuid4())
    delivery_id = f"webhook:{manifest['file_id']}:{flow_run_id or event_id}"  # an upload is one run
    body = webhook_body(event, event_id=event_id, flow_run_id=flow_run_id,
                        occurred=datetime.now(timezone.utc).isoformat())
    return enqueue(store, delivery_id=delivery_id, url=notify.webhook_url, body=body, channel="webhook")


def enqueue_callback(store: Store, url: str, manifest: dict[str, Any], upload: dict[str, Any], *,
                     event_id: str | None, flow_run_id: str | None) -> bool:
    """Put the upload's answer in the callback outbox for its own ``callback_url``: the same body
    as the webhook's (docs/callbacks.md), every terminal status. One delivery per upload and
    flow run, like the webhook's."""
    event = terminal_event(manifest, store.config, upload)
    event_id = event_id or str(uuid.uuid4())
    body = webhook_body(event, event_id=event_id, flow_run_id=flow_run_id,
                        occurred=datetime.now(timezone.utc).isoformat())
    return enqueue(store, delivery_id=f"callback:{upload['upload_id']}:{flow_run_id or event_id}", url=url, body=body)
