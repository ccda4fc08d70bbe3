"""Settings, one class per concern, read once from the environment and passed down frozen."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Mapping

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from blocks.storage import StorageConfig


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
