"""Upload records: an upload keeps its own identity while its work is shared by content.

The same bytes may arrive several times (a top-level ``rapport.docx`` and the same document
inside ``dataroom.zip``): their work is done once (steps are cached on the content, the
manifest is ``manifests/<sha256>.json``), but each arrival is an *upload* with a record of its
own in storage, beside the content's manifest:

- ``uploads/<upload id>.json``: an :class:`UploadRecord` (name, parent upload, batch, times,
  file id, status, manifest location, callback URL, options, whether the work was shared);
- ``uploads/<upload id>.run``: the id of the router run that owns the upload, written
  create-only, so the same upload notified twice is processed by one run (:func:`claim`);
- ``uploads-by-file/<sha256>/<upload id>``: an empty marker per upload of that content, so
  ``fileflow show`` lists every upload of a file.

The upload id is the caller's idempotency key (checked by :func:`check_upload_id`) or one
fileflow makes: :func:`new_upload_id` (the upload API, ``fileflow process``), or
:func:`upload_id_for` (``submit`` and the event trigger: the same file under the same name is
the same upload), :func:`member_upload_id` (an archive member: its parent upload and its path).

When an upload reaches its terminal status, :func:`announce` tells others (the terminal event,
and through it the webhook).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from blocks.storage import StorageConfig, Store, manifest_key, upload_claim_key, upload_key, uploads_of_file_prefix
from fileflow.settings import NotifySettings

UPLOAD_SCHEMA_VERSION = 1

#: what an upload id (a caller's idempotency key) may be: it becomes a storage key
UPLOAD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
#: per-upload options a caller may set, with what checks them (converters' own option parsers)
UPLOAD_OPTIONS = ("ocr_languages", "preview_sizes")

Status = Literal["received", "processing", "completed", "failed"]
TERMINAL = ("completed", "failed")


def check_upload_id(upload_id: str) -> str:
    """``upload_id`` if it is a valid id, else :class:`ValueError` saying what one is."""
    if not isinstance(upload_id, str) or not UPLOAD_ID.fullmatch(upload_id) or ".." in upload_id:
        raise ValueError(f"invalid upload id {upload_id!r}: 1-128 characters of A-Z a-z 0-9 . _ : -, "
                         "starting with a letter or digit, without '..'")
    return upload_id


def check_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """Per-upload options, checked as the converters will read them; :class:`ValueError` names
    the option that is unknown or unusable."""
    from converters.options import preview_sizes
    from converters.tesseract import languages_of

    options = dict(options or {})
    unknown = sorted(set(options) - set(UPLOAD_OPTIONS))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; per-upload options are {', '.join(UPLOAD_OPTIONS)}")
    if "preview_sizes" in options:
        sizes = preview_sizes(options, accept_single=True)
        if not sizes:
            raise ValueError("option 'preview_sizes' needs at least one size")
        options["preview_sizes"] = sizes
    if "ocr_languages" in options:
        if not isinstance(options["ocr_languages"], str):
            raise ValueError(f"option 'ocr_languages' must be a string such as 'auto', 'deu' or 'eng+fra', "
                             f"got {options['ocr_languages']!r}")
        languages_of(options["ocr_languages"])
    return options


def check_callback_url(url: str | None) -> str | None:
    """An upload's callback URL as given (None for none); :class:`ValueError` when it is not an
    http(s) URL with a host, which the callback outbox could never deliver to."""
    from fileflow.engine.callbacks import check_url

    if url is None or url == "":
        return None
    try:
        return check_url(url)
    except ValueError:
        raise ValueError(f"callback_url must be an http:// or https:// URL with a host, got {url!r}") from None


def new_upload_id() -> str:
    return f"u-{uuid.uuid4().hex}"


def upload_id_for(file_id: str, name: str) -> str:
    """The id of an upload notified without one: the same bytes under the same name are the
    same upload (as ``submit``'s and the REST path's idempotency key always said)."""
    return "u-" + hashlib.sha256(f"{file_id}:{name}".encode()).hexdigest()[:32]


def member_upload_id(parent_upload: str, member_name: str) -> str:
    """An archive member's upload: its archive's upload and its path inside it."""
    return f"{parent_upload}.m{hashlib.sha256(member_name.encode()).hexdigest()[:12]}"


def now() -> datetime:
    return datetime.now(timezone.utc)


class UploadRecord(BaseModel):
    """One upload: what arrived, under which name, and how its processing ended."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = UPLOAD_SCHEMA_VERSION
    upload_id: str = Field(description="the caller's idempotency key, or one fileflow made")
    name: str = Field(description="the uploaded name, sanitised for display (a member: <archive>/<path>)")
    file_id: str = Field(description="SHA-256 hex of the content: the manifest is manifests/<file_id>.json")
    size: int
    parent: str | None = Field(None, description="upload id of the archive this upload was found in")
    parent_file_id: str | None = Field(None, description="file id of that archive")
    batch: str | None = Field(None, description="the batch (fileflow process/submit) or null")
    status: Status
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    flow_run_id: str | None = Field(None, description="the router run that processed the upload")
    kind: str | None = None
    manifest: str = Field(description="storage key of the content's manifest")
    error: dict[str, Any] | None = Field(None, description="the first failed step's type, message and step")
    callback_url: str | None = Field(None, description="where the caller wants to hear of the terminal status")
    options: dict[str, Any] = Field(default_factory=dict, description="per-upload options (ocr_languages, preview_sizes)")
    steps_run: int = Field(0, description="steps that ran for this upload")
    steps_cached: int = Field(0, description="steps whose result came from earlier work on the same content")
    shared: bool = Field(False, description="no step ran for this upload: its work was shared with an earlier "
                                            "upload (or run) of the same content")

    def key(self) -> str:
        return upload_key(self.upload_id)


def received(upload_id: str, *, name: str, file_id: str, size: int, parent: str | None = None,
             parent_file_id: str | None = None, batch: str | None = None, callback_url: str | None = None,
             options: dict[str, Any] | None = None) -> UploadRecord:
    at = now()
    return UploadRecord(upload_id=check_upload_id(upload_id), name=name, file_id=file_id, size=size, parent=parent,
                        parent_file_id=parent_file_id, batch=batch, status="received", created_at=at, updated_at=at,
                        manifest=manifest_key(file_id), callback_url=callback_url, options=dict(options or {}))


def read(store: Store, upload_id: str) -> UploadRecord | None:
    key = upload_key(check_upload_id(upload_id))
    if not store.exists(key):
        return None
    return UploadRecord.model_validate_json(store.get_bytes(key))


def write(store: Store, record: UploadRecord) -> None:
    """The record, and its marker under its content (``uploads-by-file/``)."""
    record = record.model_copy(update={"updated_at": now()})
    store.put_bytes(record.model_dump_json(indent=2).encode(), record.key())
    marker = uploads_of_file_prefix(record.file_id) + record.upload_id
    if not store.exists(marker):
        store.put_bytes(b"", marker)


def uploads_of(store: Store, file_id: str) -> list[str]:
    """The ids of every upload of the content ``file_id``, sorted."""
    prefix = uploads_of_file_prefix(file_id)
    return sorted(k[len(prefix):] for k in store.keys(prefix))


def claim(store: Store, upload_id: str, flow_run_id: str) -> str | None:
    """Make ``flow_run_id`` the run of the upload, unless another run already is: that run's
    id (the caller decides whether it still counts), else None."""
    key = upload_claim_key(check_upload_id(upload_id))
    if store.put_new(flow_run_id.encode(), key):
        return None
    owner = store.get_bytes(key).decode().strip()
    return None if owner == flow_run_id else owner


def owner(store: Store, upload_id: str) -> str | None:
    """The id of the run that claimed the upload, if one did."""
    key = upload_claim_key(check_upload_id(upload_id))
    return store.get_bytes(key).decode().strip() if store.exists(key) else None


def take_over(store: Store, upload_id: str, flow_run_id: str) -> None:
    """Make ``flow_run_id`` the upload's run after its former run ended without processing it."""
    store.put_bytes(flow_run_id.encode(), upload_claim_key(check_upload_id(upload_id)))


def finished(record: UploadRecord, manifest: dict[str, Any], flow_run_id: str | None) -> UploadRecord:
    """The record once its manifest is written."""
    from fileflow.engine.events import first_error

    done = [s for s in manifest["steps"] if s["status"] == "completed"]
    cached = sum(bool(s.get("cached")) for s in done)
    at = now()
    return record.model_copy(update={
        "status": manifest["status"], "finished_at": at, "updated_at": at, "kind": manifest["kind"],
        "error": first_error(manifest), "flow_run_id": flow_run_id or record.flow_run_id,
        "steps_run": len(done) - cached, "steps_cached": cached, "shared": bool(done) and cached == len(done),
    })


def summary(record: UploadRecord, storage: StorageConfig) -> dict[str, Any]:
    """What events and the webhook say of an upload."""
    from fileflow.engine.events import storage_url

    return {
        "upload_id": record.upload_id, "name": record.name, "parent": record.parent, "batch": record.batch,
        "status": record.status, "shared": record.shared, "steps_run": record.steps_run,
        "steps_cached": record.steps_cached,
        "record": {"key": record.key(), "url": storage_url(storage, record.key())},
    }


def announce(store: Store, notify: NotifySettings, record: UploadRecord, manifest: dict[str, Any],
             flow_run_id: str | None) -> None:
    """Tell others that ``record`` reached its terminal status, the one place an upload's answer
    leaves fileflow: the file's terminal event carrying the upload (:mod:`fileflow.engine.events`),
    and through the callback outbox (:mod:`fileflow.engine.callbacks`, signed and retried) the
    global webhook and the upload's own ``callback_url``. A storage failure here raises, so the
    run fails and is run again rather than losing the answer."""
    from fileflow.engine.events import emit_terminal, enqueue_callback, enqueue_webhook

    upload = summary(record, store.config)
    event_id = emit_terminal(manifest, store.config, upload=upload)
    enqueue_webhook(store, notify, manifest, event_id=event_id, flow_run_id=flow_run_id, upload=upload)
    if record.callback_url:
        enqueue_callback(store, record.callback_url, manifest, upload, event_id=event_id, flow_run_id=flow_run_id)


def dumps(record: UploadRecord) -> dict[str, Any]:
    return json.loads(record.model_dump_json())
