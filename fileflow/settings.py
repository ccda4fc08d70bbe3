"""Settings, one class per concern, read once from the environment and passed down frozen."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Mapping

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from blocks.storage import StorageConfig
from fileflow.names import FILE_COMPLETED, FILE_FAILED


class StorageSettings(BaseSettings):
    """Where originals, renditions and manifests go (``FILEFLOW_STORAGE_*``)."""

    model_config = SettingsConfigDict(env_prefix="FILEFLOW_STORAGE_", frozen=True)

    kind: Literal["local", "s3"] = Field("local", description="local folder or S3 bucket")
    path: Path = Field(Path("fileflow-out"), description="local folder (kind=local); --out overrides it")
    bucket: str | None = Field(None, description="S3 bucket name (kind=s3)")
    prefix: str = Field("", description="key prefix inside the bucket")
    endpoint_url: str | None = Field(None, description="S3 endpoint, for S3-compatible stores")
    region: str | None = Field(None, description="S3 region")
    access_key_id: str | None = Field(None, description="S3 access key (else the AWS default chain)")
    secret_access_key: SecretStr | None = Field(None, description="S3 secret key")
    retry_s: float = Field(
        120.0, ge=0, description="how long an S3 operation keeps retrying while the endpoint cannot be reached"
    )

    def config(self, out: Path | None = None) -> StorageConfig:
        return StorageConfig(
            kind=self.kind,
            basepath=str((out or self.path).resolve()),
            bucket=self.bucket,
            prefix=self.prefix,
            endpoint_url=self.endpoint_url,
            region=self.region,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key.get_secret_value() if self.secret_access_key else None,
            retry_s=self.retry_s,
        )


class PipelineSettings(BaseSettings):
    """How the mediator runs steps (``FILEFLOW_*``)."""

    model_config = SettingsConfigDict(env_prefix="FILEFLOW_", frozen=True)

    max_active_files: int = Field(
        4, ge=1, description="files processed at once; Prefect on SQLite fails with 'database is locked' past ~8"
    )
    max_active_members: int = Field(2, ge=1, description="members of one archive processed at once")
    child_processes: int = Field(
        max(2, os.cpu_count() or 2), ge=1, description="warm child processes that run steps"
    )
    scratch_dir: Path | None = Field(None, description="where steps unpack their inputs (default: system temp)")
    lock_redis_url: str | None = Field(
        None, description="Redis (redis://host:port/db) holding the step locks, so that a file processed twice at "
        "once runs each step once across machines; unset: lock files in lock_dir (one machine)"
    )
    lock_dir: Path | None = Field(None, description="folder of the step lock files (default <PREFECT_HOME>/locks)")
    ocr_languages: str = Field(
        "auto", description="Tesseract languages for OCR: 'auto' (each page in its own language, among "
        "ocr_allowed_languages) or fixed, e.g. 'eng' or 'deu'"
    )
    ocr_allowed_languages: str = Field(
        "eng+deu+fra+spa+ita+nld+por+pol+rus",
        description="languages 'auto' OCR may choose (Tesseract codes joined by '+'; each needs its "
        "tesseract-ocr-<code> package)",
    )
    tessdata: Path = Field(Path("/usr/share/tesseract-ocr/5/tessdata"), description="Tesseract data folder")
    preview_sizes: tuple[int, ...] = Field((160, 480, 1280), description="long side of each preview, px")
    max_archive_depth: int = Field(3, ge=1, description="how deep archives inside archives are expanded")
    retry_delay_s: float = Field(1.0, ge=0, description="first retry delay of a transient failure; doubles")
    unoserver_port: int = Field(0, ge=0, description="port of the warm LibreOffice (0: pick a free one)")
    default_placement: Literal["local", "pool"] = Field(
        "local", description="where steps run: 'local' (child process here) or 'pool' (converter work pool)"
    )
    placement: dict[str, Literal["local", "pool"]] = Field(
        default_factory=dict, description="per-converter override of default_placement, e.g. {\"ocr\": \"local\"}"
    )
    pool_poll_s: float = Field(
        5.0, gt=0, description="interval between two reads of a step running on a pool, after the reads at 0.25, 0.5 and 1 s; "
                               "the run's end event normally wakes the mediator first"
    )
    converter_modules: dict[str, str] = Field(
        default_factory=dict,
        description="converters replaced by another module with the same contract (dotted path), e.g. "
        "{\"text_extract\": \"mypackage.text_extract_fixed\"} to try a fixed build; the module's SPEC "
        "(same name; its version, timeout and retries) applies. Mediators and converter workers read it alike",
    )
    pool_queue_timeout_s: float = Field(
        600, gt=0, description="how long a pool step may wait for a worker before it counts as timed out"
    )

    def module_of(self, converter: str) -> str:
        """The module that runs ``converter``: its own, unless ``converter_modules`` replaces it."""
        return self.converter_modules.get(converter, converter)

    def placement_of(self, converter: str) -> str:
        return self.placement.get(converter, self.default_placement)

    def converter_options(self) -> dict:
        return {
            "ocr_languages": self.ocr_languages,
            "ocr_allowed_languages": self.ocr_allowed_languages,
            "tessdata": str(self.tessdata),
            "preview_sizes": list(self.preview_sizes),
            "max_depth": self.max_archive_depth,
        }


class LivenessSettings(BaseSettings):
    """How a run whose process died is found and recovered (``FILEFLOW_LIVENESS_*``).

    Every flow run of the stack emits ``prefect.flow-run.heartbeat`` events (Prefect's flow
    engine, ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``, set from ``heartbeat_s``); the automations of
    :mod:`deployments.liveness` mark a run without one for ``crashed_after_s`` seconds Crashed,
    as well as a run left ``Pending`` for ``pending_after_s`` seconds by a worker that died before
    starting it, and put a Crashed router run back to Scheduled (see docs/reliability.md).
    """

    model_config = SettingsConfigDict(env_prefix="FILEFLOW_LIVENESS_", frozen=True)

    heartbeat_s: int = Field(30, ge=30, description="seconds between two heartbeats of a run (Prefect's minimum: 30)")
    crashed_after_s: int = Field(
        90, ge=60, description="a Running run with no heartbeat for this long is marked Crashed (3 heartbeats)"
    )
    pending_after_s: int = Field(
        120, ge=30, description="a run claimed by a worker (Pending) that has not started after this long is marked "
        "Crashed: its worker died between claiming and starting it"
    )
    resume_after_s: int = Field(
        10, ge=10, description="a router run still Crashed this long after its Crashed event is set back to "
        "Scheduled (Prefect's minimum window for a proactive trigger: 10 s)"
    )
    mediator_resumes: int = Field(
        2, ge=0, description="how often a crashed router run is resumed before its file ends failed"
    )

    @model_validator(mode="after")
    def _window_spans_heartbeats(self) -> "LivenessSettings":
        if self.crashed_after_s < 2 * self.heartbeat_s:  # one late heartbeat must not crash a live run
            raise ValueError(f"crashed_after_s ({self.crashed_after_s}) must be at least twice heartbeat_s "
                             f"({self.heartbeat_s})")
        return self


#: Prefect settings of ``fileflow process``'s embedded server (Prefect's SQLite one), unless
#: the environment sets them. Prefect's task-run recorder writes the task runs of every
#: step from their state events; by default it writes each event in a transaction of its own,
#: three per step. Here it writes what arrived in the last second together: on SQLite those
#: single writes meet the API's own, and every "database is locked" is answered 503 and retried
#: by Prefect's client only after 2 s; batched, there are about half as many. A step's state
#: reaches the database up to a second later; the server, stopped at the end of the batch,
#: writes what it holds first. On the PostgreSQL server of ``fileflow up`` the setting makes no
#: difference, so the stack keeps Prefect's default.
#: The embedded server gets 120 s to answer, not Prefect's 20: its first start migrates a new
#: SQLite database, which on a slow disk takes longer than 20 s, and `fileflow process` would
#: fail with "Timed out while attempting to connect to ephemeral Prefect API server".
EMBEDDED_SERVER_DEFAULTS = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def embedded_server_defaults(environ: Mapping[str, str]) -> dict[str, str]:
    """:data:`EMBEDDED_SERVER_DEFAULTS` that ``environ`` does not set (by either of Prefect's names)."""
    def own(name: str) -> bool:
        return name in environ or name.replace("PREFECT_SERVER_SERVICES_", "PREFECT_API_SERVICES_") in environ

    return {k: v for k, v in EMBEDDED_SERVER_DEFAULTS.items() if not own(k)}


class CallbackSettings(BaseSettings):
    """How answers reach upload services (``FILEFLOW_CALLBACK_*``): the outbox in storage and
    its deliverer (:mod:`fileflow.engine.callbacks`, docs/callbacks.md)."""

    model_config = SettingsConfigDict(env_prefix="FILEFLOW_CALLBACK_", frozen=True)

    secret: SecretStr | None = Field(
        None, description="shared secret of the HMAC-SHA256 signature of every delivery (at least 16 characters); "
        "unset: deliveries are sent unsigned and the deliverer warns once"
    )
    retry_window_s: float = Field(
        6 * 3600.0, gt=0, description="how long a delivery is retried, from when it was enqueued, before it is failed"
    )
    first_retry_s: float = Field(5.0, gt=0, description="the wait after the first failed attempt; doubles each time")
    max_retry_s: float = Field(600.0, gt=0, description="the longest wait between two attempts (before jitter)")
    timeout_s: float = Field(10.0, gt=0, description="how long one POST may take (connect and answer)")
    poll_s: float = Field(1.0, gt=0, description="how often the deliverer looks for due deliveries")
    concurrency: int = Field(8, ge=1, description="deliveries attempted at once (a slow receiver does not hold up others)")

    @model_validator(mode="after")
    def _secret_long_enough(self) -> "CallbackSettings":
        if self.secret is not None and len(self.secret.get_secret_value()) < 16:
            raise ValueError("FILEFLOW_CALLBACK_SECRET must be at least 16 characters (e.g. `openssl rand -hex 32`)")
        return self


class NotifySettings(BaseSettings):
    """The global webhook told of every finished file (``FILEFLOW_NOTIFY_*``, docs/events.md):
    every terminal event goes through the callback outbox to this URL, signed and retried."""

    model_config = SettingsConfigDict(env_prefix="FILEFLOW_NOTIFY_", frozen=True)

    webhook_url: str | None = Field(None, description="URL every terminal file event is POSTed to; unset: off")
    webhook_headers: dict[str, str] = Field(
        default_factory=dict, description='headers sent with it, e.g. {"Authorization": "Bearer ..."}'
    )
    events: tuple[str, ...] = Field(
        (FILE_COMPLETED, FILE_FAILED), description="which terminal events are sent (default: both)"
    )

    @model_validator(mode="after")
    def _url_is_http(self) -> "NotifySettings":
        from urllib.parse import urlsplit

        if self.webhook_url is not None:
            parts = urlsplit(self.webhook_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"FILEFLOW_NOTIFY_WEBHOOK_URL is not an http(s) URL with a host: {self.webhook_url!r}")
        unknown = set(self.events) - {FILE_COMPLETED, FILE_FAILED}
        if unknown:
            raise ValueError(f"FILEFLOW_NOTIFY_EVENTS: unknown events {sorted(unknown)}; "
                             f"choose among {FILE_COMPLETED!r}, {FILE_FAILED!r}")
        return self


class S3EventsSettings(BaseSettings):
    """The consumer of the bucket's ``ObjectCreated`` notifications (``FILEFLOW_S3_EVENTS_*``,
    :mod:`fileflow.server.s3_events`, docs/callbacks.md). The bucket is the storage's
    (``FILEFLOW_STORAGE_*``), and so are the credentials and region."""

    model_config = SettingsConfigDict(env_prefix="FILEFLOW_S3_EVENTS_", frozen=True)

    queue_url: str | None = Field(None, description="the SQS queue the bucket notifies; unset: no consumer")
    sqs_endpoint_url: str | None = Field(None, description="SQS endpoint, for SQS-compatible services (default: AWS)")
    uploads_prefix: str = Field(
        "incoming/", description="where uploads land, under the storage prefix; objects elsewhere are ignored. "
        "Not 'uploads/': that is where upload records live"
    )
    wait_s: int = Field(20, ge=1, le=20, description="SQS long polling: how long one receive waits for messages")
    max_messages: int = Field(10, ge=1, le=10, description="messages taken per receive")

    @model_validator(mode="after")
    def _prefix_is_a_folder(self) -> "S3EventsSettings":
        prefix = self.uploads_prefix
        if not prefix.endswith("/") or prefix.startswith("/") or ".." in prefix.split("/"):
            raise ValueError(f"FILEFLOW_S3_EVENTS_UPLOADS_PREFIX must be a relative folder ending in '/', not {prefix!r}")
        if prefix.split("/")[0] in ("originals", "derived", "manifests", "results", "callbacks", "uploads", "tmp"):
            raise ValueError(f"FILEFLOW_S3_EVENTS_UPLOADS_PREFIX {prefix!r} is one of fileflow's own folders")
        return self


class ApiSettings(BaseSettings):
    """The upload API, ``fileflow api`` (``FILEFLOW_API_*``)."""

    model_config = SettingsConfigDict(env_prefix="FILEFLOW_API_", frozen=True)

    tokens: list[SecretStr] = Field(
        default_factory=list, description="bearer tokens accepted (JSON list); the API refuses to start without one"
    )
    max_upload_bytes: int = Field(
        5 * 1024**3, ge=1, description="largest upload accepted; a bigger body is refused with 413 while it streams"
    )
    public_url: str | None = Field(
        None, description="the API's address as callers reach it, for status URLs; else the request's own"
    )
    spool_dir: Path | None = Field(
        None, description="where an upload's bytes are spooled while hashed (default: the system's temporary folder)"
    )
