"""Where fileflow keeps originals, renditions, step results and manifests.

Storage is a Prefect filesystem block: ``LocalFileSystem`` (a folder, the embedded default) or
prefect-aws ``S3Bucket`` with ``AwsCredentials``. :class:`StorageConfig` is the small, picklable
description a child process rebuilds the block from; :class:`Store` is the handful of
operations the pipeline needs, over either block, streaming files rather than holding them in
memory.

Layout (content-addressed: keys derive from SHA-256 digests, never from user-supplied names,
so every write is idempotent)::

    originals/<sha[:2]>/<sha>              the uploaded bytes
    derived/<sha>/<converter>/<file>       renditions made by a converter for that file
    manifests/<sha>.json                   the manifest downstream systems read
    uploads/<upload id>.json               one record per upload (its name, parent, status ...)
    uploads/<upload id>.run                which router run owns the upload (written create-only)
    uploads-by-file/<sha>/<upload id>      an empty marker per upload of that content
    tmp/...                                scratch objects; a bucket lifecycle rule expires them
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

from fileflow import retry
from fileflow.errors import StorageUnavailable


def _part_of(dest: Path) -> Path:
    """Where an object is written before it is renamed into place: a name of the writer's own,
    so two writers of the same key (the same upload submitted twice at once) never share one."""
    return dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}.part")


log = logging.getLogger(__name__)

#: attempts of one S3 request by botocore itself (its "standard" retry mode)
S3_MAX_ATTEMPTS = 14


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps: boto3's transfer errors wrap the cause) says the S3
    endpoint could not be reached, as opposed to an answer from it."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, (BotoConnectionError, HTTPClientError, ConnectionError, TimeoutError)):
            return True
        if type(exc).__name__ in ("S3UploadFailedError", "RetriesExceededError") and (
            "connect" in str(exc).lower() or "timed out" in str(exc).lower()
        ):
            return True
        exc = getattr(exc, "last_exception", None) or exc.__cause__ or exc.__context__
        seen += 1
    return False


@dataclass(frozen=True)
class StorageConfig:
    kind: Literal["local", "s3"] = "local"
    basepath: str = "fileflow-out"
    """Local folder (kind "local")."""
    bucket: str | None = None
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    retry_s: float = 120.0
    """How long an S3 operation keeps retrying while the endpoint cannot be reached."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        if self.kind == "local":
            return str(Path(self.basepath).resolve())
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")


def original_key(sha256: str) -> str:
    return f"originals/{sha256[:2]}/{sha256}"


def derived_prefix(sha256: str, converter: str) -> str:
    return f"derived/{sha256}/{converter}"


def manifest_key(sha256: str) -> str:
    return f"manifests/{sha256}.json"


def upload_key(upload_id: str) -> str:
    return f"uploads/{upload_id}.json"


def upload_claim_key(upload_id: str) -> str:
    return f"uploads/{upload_id}.run"


def uploads_of_file_prefix(sha256: str) -> str:
    return f"uploads-by-file/{sha256}/"


def check_key(key: str) -> str:
    """Keys are ours, but a bug must never turn one into a path outside the store."""
    parts = key.split("/")
    if key.startswith("/") or "\\" in key or any(p in ("..", ".", "") for p in parts):
        raise ValueError(f"invalid storage key {key!r}")
    return key


def make_block(config: StorageConfig):
    """The Prefect filesystem block for a storage configuration."""
    if config.kind == "local":
        from prefect.filesystems import LocalFileSystem

        return LocalFileSystem(basepath=str(Path(config.basepath).resolve()))
    if config.kind == "s3":
        from prefect_aws import AwsCredentials, S3Bucket
        from prefect_aws.client_parameters import AwsClientParameters

        if not config.bucket:
            raise ValueError("S3 storage needs a bucket (FILEFLOW_STORAGE_BUCKET)")
        credentials = AwsCredentials(
            aws_access_key_id=config.access_key_id,
            aws_secret_access_key=config.secret_access_key,
            region_name=config.region,
            # botocore's own retries also cover Prefect's reads and writes of persisted results
            # through this block: "standard" backoff (up to 20 s each) over 14 attempts waits
            # about 95 s on average for an unreachable endpoint, and Store adds its deadline
            aws_client_parameters=AwsClientParameters(
                endpoint_url=config.endpoint_url,
                config={"retries": {"mode": "standard", "max_attempts": S3_MAX_ATTEMPTS}},
            ),
        )
        return S3Bucket(bucket_name=config.bucket, bucket_folder=config.prefix, credentials=credentials)
    raise ValueError(f"unknown storage kind {config.kind!r}; expected 'local' or 's3'")


class Store:
    """Streaming file operations over a storage block."""

    def __init__(self, config: StorageConfig):
        self.config = config
        self.block = make_block(config)
        self._s3 = None

    def connect(self) -> "Store":
        """Build what this store's operations need (the S3 client) now, not at the first one."""
        if self.config.kind == "s3":
            self._client()
        return self

    # -- local folder -------------------------------------------------------------------
    def _local(self, key: str) -> Path:
        return Path(self.block.basepath) / check_key(key)

    # -- S3 -----------------------------------------------------------------------------
    def _client(self):
        if self._s3 is None:
            from botocore.config import Config

            # few attempts inside botocore: _s3_call keeps to its own deadline (retry_s)
            self._s3 = self.block.credentials.get_boto3_session().client(
                "s3", endpoint_url=self.config.endpoint_url,
                config=Config(retries={"mode": "standard", "max_attempts": 3}),
            )
        return self._s3

    def _s3_key(self, key: str) -> str:
        prefix = self.config.prefix.strip("/")
        return f"{prefix}/{check_key(key)}" if prefix else check_key(key)

    def _s3_call(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)``, retried with backoff for ``retry_s`` while S3 is unreachable.

        An outage of the endpoint (refused or dropped connections, timeouts) is waited out, so
        a step, a worker or a mediator does not fail a file for it; after ``retry_s`` it is
        :class:`StorageUnavailable` (transient: the step is retried). An answer from S3 (a
        ``ClientError``: missing key, denied) is never retried here.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        where = self.config.endpoint_url or "AWS"

        def waiting(exc: BaseException | None, _result: object, seconds: float) -> None:
            log.warning("S3 at %s unreachable (%s); retrying in %.1f s", where, exc, seconds)

        try:
            return retry.call(
                fn, *args,
                retry=retry.retry_if_exception(lambda e: not isinstance(e, ClientError) and _unreachable(e)),
                wait=retry.doubling(0.5, 5.0), stop=retry.stop_before_delay(self.config.retry_s), on_wait=waiting,
                **kwargs,
            )
        except ClientError:
            raise
        except Exception as exc:
            if isinstance(exc, BotoCoreError) or _unreachable(exc):
                raise StorageUnavailable(f"S3 at {where}: {exc}") from exc
            raise

    # -- operations ---------------------------------------------------------------------
    def put_file(self, path: Path, key: str) -> int:
        size = path.stat().st_size
        if self.config.kind == "local":
            dest = self._local(key)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = _part_of(dest)
            shutil.copyfile(path, tmp)
            tmp.replace(dest)  # readers never see half a file
        else:
            self._s3_call(self._client().upload_file, str(path), self.config.bucket, self._s3_key(key))
        return size

    def get_file(self, key: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if self.config.kind == "local":
            src = self._local(key)
            if not src.is_file():
                raise FileNotFoundError(f"{key} is not in storage {self.config.describe()}")
            shutil.copyfile(src, dest)
        else:
            self._s3_call(self._client().download_file, self.config.bucket, self._s3_key(key), str(dest))
        return dest

    def put_bytes(self, data: bytes, key: str) -> None:
        if self.config.kind == "local":
            dest = self._local(key)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = _part_of(dest)
            tmp.write_bytes(data)
            tmp.replace(dest)
        else:
            self._s3_call(
                self._client().put_object, Bucket=self.config.bucket, Key=self._s3_key(key), Body=data
            )

    def put_new(self, data: bytes, key: str) -> bool:
        """Write ``data`` at ``key`` only if nothing is there yet; whether it was written.

        Atomic against a concurrent writer of the same key: a hard link on a local folder, a
        conditional ``PutObject`` (``If-None-Match: *``) on S3.
        """
        if self.config.kind == "local":
            dest = self._local(key)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = _part_of(dest)
            tmp.write_bytes(data)
            try:
                os.link(tmp, dest)  # fails if dest exists, never replaces it
            except FileExistsError:
                return False
            finally:
                tmp.unlink()
            return True
        from botocore.exceptions import ClientError

        try:
            self._s3_call(self._client().put_object, Bucket=self.config.bucket, Key=self._s3_key(key), Body=data,
                          IfNoneMatch="*")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        """Remove ``key``; nothing happens if it is not there."""
        if self.config.kind == "local":
            self._local(key).unlink(missing_ok=True)
        else:
            self._s3_call(self._client().delete_object, Bucket=self.config.bucket, Key=self._s3_key(key))

    def get_bytes(self, key: str) -> bytes:
        if self.config.kind == "local":
            return self._local(key).read_bytes()
        body = self._s3_call(self._client().get_object, Bucket=self.config.bucket, Key=self._s3_key(key))
        return body["Body"].read()

    def exists(self, key: str) -> bool:
        if self.config.kind == "local":
            return self._local(key).is_file()
        from botocore.exceptions import ClientError

        try:
            self._s3_call(self._client().head_object, Bucket=self.config.bucket, Key=self._s3_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def keys(self, prefix: str) -> list[str]:
        """Keys that start with ``prefix`` (e.g. ``manifests/3fa9``), sorted."""
        if self.config.kind == "local":
            base = Path(self.block.basepath)
            folder, _, start = prefix.rpartition("/")
            root = base / check_key(folder) if folder else base
            if not root.is_dir():
                return []
            return sorted(
                str(p.relative_to(base)) for p in root.iterdir()
                if p.is_file() and p.name.startswith(start) and not p.name.startswith(".")
            )
        base = self.config.prefix.strip("/")
        pages = self._client().get_paginator("list_objects_v2").paginate(
            Bucket=self.config.bucket, Prefix=f"{base}/{prefix}" if base else prefix
        )
        strip = len(base) + 1 if base else 0
        return sorted(o["Key"][strip:] for page in self._s3_call(list, pages) for o in page.get("Contents", []))

    def list(self, prefix: str) -> Iterator[tuple[str, float]]:
        """``(key, modified)`` of every object under ``prefix`` (modified: POSIX seconds), in key order."""
        base = check_key(prefix.strip("/"))
        if self.config.kind == "local":
            root = Path(self.block.basepath)
            folder = root / base
            if folder.is_dir():
                for path in sorted(folder.rglob("*")):
                    if path.is_file() and not path.name.startswith("."):  # not a write in progress
                        yield path.relative_to(root).as_posix(), path.stat().st_mtime
            return
        full = self._s3_key(base) + "/"
        strip = len(full) - len(base) - 1
        pages = self._client().get_paginator("list_objects_v2")
        for page in self._s3_call(pages.paginate, Bucket=self.config.bucket, Prefix=full):
            for obj in page.get("Contents", []):
                yield obj["Key"][strip:], obj["LastModified"].timestamp()
