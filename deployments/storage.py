"""Storage as Prefect blocks, and the S3 bucket prepared for fileflow.

Two idempotent operations, both plain synchronous functions for the CLI
(``fileflow storage blocks`` and ``fileflow storage prepare-bucket``):

* :func:`save_storage_blocks` saves the Prefect block(s) that describe the configured storage,
  so a worker on another machine finds it by block name (:func:`load_storage_config`);
* :func:`prepare_bucket` creates the S3 bucket if missing and sets what fileflow relies on:
  public access blocked, default encryption, and a lifecycle rule that expires ``tmp/``.

Sync and async callers
----------------------
Prefect's ``Block.save`` / ``Block.load`` are *async-dispatched*: called from inside a running
event loop (an async flow, a notebook cell, an ``async def``) they silently return a coroutine
instead of doing the work. Every Prefect call here passes ``_sync=True``, which forces Prefect's
synchronous implementation (a synchronous HTTP client), so these functions do their work and
return their result whether they are called from sync code or from inside an event loop. From
async code they block the loop for the few requests they make; to avoid that, run them in a
thread: ``await asyncio.to_thread(save_storage_blocks, config)``.
"""

from __future__ import annotations

import logging
from typing import Any

from blocks.storage import StorageConfig, make_block
from fileflow.errors import StorageUnavailable
from fileflow.names import STORAGE_BLOCK

log = logging.getLogger(__name__)

LIFECYCLE_RULE_ID = "fileflow-expire-tmp"
ABORT_MULTIPART_DAYS = 1

# Block type slugs of the two storage kinds.
S3_SLUG = "s3-bucket"
LOCAL_SLUG = "local-file-system"

# S3 error codes that mean "these credentials are not accepted here", not "no such thing".
_CREDENTIAL_CODES = {
    "AccessDenied",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidClientTokenId",
    "InvalidToken",
    "SignatureDoesNotMatch",
    "403",
}
_NOT_IMPLEMENTED_CODES = {"NotImplemented", "501", "XNotImplemented"}


# -- Prefect blocks ---------------------------------------------------------------------------


def credentials_block_name(name: str) -> str:
    """The name of the ``AwsCredentials`` block that goes with the storage block ``name``."""
    return f"{name}-credentials"


def _fingerprint(block) -> dict[str, Any]:
    """What a block document would hold: field values with secrets revealed, nested blocks
    by document id (two blocks with equal fingerprints save to identical documents)."""
    from prefect.blocks.core import Block

    fields = set(type(block).model_fields)
    nested = {k for k in fields if isinstance(getattr(block, k), Block)}
    data = block.model_dump(mode="json", context={"include_secrets": True}, include=fields - nested)
    for key in nested:
        data[key] = str(getattr(block, key)._block_document_id)
    return data


def _save_block(block, name: str) -> tuple[str, bool]:
    """Save ``block`` as ``name`` unless an identical document is already saved under that name.

    Returns (block document id, whether anything was written). Either way ``block`` ends up
    bound to the saved document, so a parent block saved next references it by id.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    cls = type(block)
    with get_client(sync_client=True) as client:
        try:
            doc = client.read_block_document_by_name(
                name=name, block_type_slug=cls.get_block_type_slug(), include_secrets=True
            )
        except ObjectNotFound:
            doc = None
    if doc is not None and doc.block_schema is not None:
        same_schema = doc.block_schema.checksum == cls._calculate_schema_checksum()
        existing = cls.load(name, _sync=True) if same_schema else None
        if existing is not None and _fingerprint(existing) == _fingerprint(block):
            block._block_document_id = existing._block_document_id
            block._block_document_name = name
            return str(existing._block_document_id), False
    # Creates the document, or updates it in place (same id) when the name is taken.
    document_id = block.save(name, overwrite=True, _sync=True)
    return str(document_id), True


def save_storage_blocks(config: StorageConfig, name: str = STORAGE_BLOCK) -> str:
    """Save the Prefect block(s) for ``config`` and return the storage block's slug.

    * kind "s3": an ``AwsCredentials`` block ``<name>-credentials`` (access key, secret - kept
      as a secret by Prefect -, region, endpoint) and an ``S3Bucket`` block ``name``
      (bucket, ``bucket_folder`` = prefix) that references it; returns ``"s3-bucket/<name>"``.
    * kind "local": a ``LocalFileSystem`` block ``name`` (absolute folder); returns
      ``"local-file-system/<name>"``.

    Idempotent: a block whose saved document already holds these values is not written again;
    one that differs is updated in place, keeping its id (so references to it stay valid).
    Synchronous; safe to call from inside an event loop too (see the module docstring).
    Needs the Prefect API (``PREFECT_API_URL``).
    """
    block = make_block(config)  # validates kind and, for S3, the bucket name
    if config.kind == "s3":
        creds_id, creds_written = _save_block(block.credentials, credentials_block_name(name))
        log.info(
            "AwsCredentials block %s %s (%s)",
            credentials_block_name(name), "saved" if creds_written else "unchanged", creds_id,
        )
    document_id, written = _save_block(block, name)
    slug = f"{type(block).get_block_type_slug()}/{name}"
    log.info("storage block %s %s (%s)", slug, "saved" if written else "unchanged", document_id)
    return slug


def load_storage_config(name: str = STORAGE_BLOCK) -> StorageConfig:
    """Rebuild the :class:`StorageConfig` from a block saved by :func:`save_storage_blocks`.

    ``name`` is a block name (``fileflow-storage``) or a slug (``s3-bucket/fileflow-storage``,
    ``local-file-system/fileflow-storage``). A bare name that exists as both an S3 and a local
    block is ambiguous and refused: pass the slug. The S3 bucket's credentials may be
    ``AwsCredentials`` or ``MinIOCredentials``.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    if "/" in name:
        slug, _, block_name = name.partition("/")
        if slug not in (S3_SLUG, LOCAL_SLUG):
            raise ValueError(f"{name!r}: fileflow storage is a {S3_SLUG} or {LOCAL_SLUG} block")
        candidates = [slug]
    else:
        block_name = name
        candidates = [S3_SLUG, LOCAL_SLUG]

    found = []
    with get_client(sync_client=True) as client:
        for slug in candidates:
            try:
                client.read_block_document_by_name(name=block_name, block_type_slug=slug)
            except ObjectNotFound:
                continue
            found.append(slug)
    if not found:
        raise ValueError(
            f"no storage block named {name!r} ({' or '.join(candidates)}); "
            "save one with `fileflow storage blocks`"
        )
    if len(found) > 1:
        raise ValueError(
            f"both {S3_SLUG}/{block_name} and {LOCAL_SLUG}/{block_name} exist; pass the slug"
        )

    if found[0] == LOCAL_SLUG:
        from prefect.filesystems import LocalFileSystem

        local = LocalFileSystem.load(block_name, _sync=True)
        return StorageConfig(kind="local", basepath=local.basepath or StorageConfig.basepath)

    from prefect_aws import AwsCredentials, MinIOCredentials, S3Bucket

    bucket = S3Bucket.load(block_name, _sync=True)
    creds = bucket.credentials
    if isinstance(creds, AwsCredentials):
        key_id, secret = creds.aws_access_key_id, creds.aws_secret_access_key
    elif isinstance(creds, MinIOCredentials):
        key_id, secret = creds.minio_root_user, creds.minio_root_password
    else:  # pragma: no cover - S3Bucket accepts only the two
        raise ValueError(f"{name!r}: unsupported credentials block {type(creds).__name__}")
    return StorageConfig(
        kind="s3",
        bucket=bucket.bucket_name,
        prefix=bucket.bucket_folder,
        endpoint_url=creds.aws_client_parameters.endpoint_url,
        region=creds.region_name,
        access_key_id=key_id,
        secret_access_key=secret.get_secret_value() if secret is not None else None,
    )


# -- the S3 bucket ------------------------------------------------------------------------------


def tmp_prefix(prefix: str) -> str:
    """The key prefix of scratch objects, as :class:`blocks.storage.Store` writes them:
    ``tmp/`` at the bucket root, ``<prefix>/tmp/`` under a prefix."""
    prefix = prefix.strip("/")
    return f"{prefix}/tmp/" if prefix else "tmp/"


def lifecycle_rule(prefix: str, tmp_days: int) -> dict[str, Any]:
    """fileflow's lifecycle rule: expire scratch objects, abort forgotten multipart uploads."""
    return {
        "ID": LIFECYCLE_RULE_ID,
        "Filter": {"Prefix": tmp_prefix(prefix)},
        "Status": "Enabled",
        "Expiration": {"Days": tmp_days},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_MULTIPART_DAYS},
    }


def _endpoint(config: StorageConfig) -> str:
    return config.endpoint_url or "AWS S3 (default endpoint)"


def _code(exc) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _s3_client(config: StorageConfig):
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=config.secret_access_key,
        region_name=config.region,
    )
    return session.client(
        "s3",
        endpoint_url=config.endpoint_url,
        config=Config(connect_timeout=5, read_timeout=30, retries={"mode": "standard", "total_max_attempts": 3}),
    )


class _Guard:
    """Connection and credential failures become StorageUnavailable naming the endpoint;
    a bucket name S3 or botocore refuses becomes ValueError."""

    def __init__(self, config: StorageConfig, what: str):
        self.config, self.what = config, what

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

        if exc is None:
            return False
        where = f"S3 at {_endpoint(self.config)}, bucket {self.config.bucket!r}"
        if isinstance(exc, ParamValidationError):  # refused by botocore before any request
            raise ValueError(f"{self.what}: {exc} (check FILEFLOW_STORAGE_BUCKET)") from exc
        if isinstance(exc, BotoCoreError):
            raise StorageUnavailable(f"{where}: {self.what} failed: {exc}") from exc
        if isinstance(exc, ClientError) and _code(exc) == "InvalidBucketName":
            raise ValueError(
                f"{self.config.bucket!r} is not a valid bucket name (FILEFLOW_STORAGE_BUCKET)"
            ) from exc
        if isinstance(exc, ClientError) and _code(exc) in _CREDENTIAL_CODES:
            raise StorageUnavailable(
                f"{where}: {self.what} refused ({_code(exc)}); check "
                "FILEFLOW_STORAGE_ACCESS_KEY_ID / FILEFLOW_STORAGE_SECRET_ACCESS_KEY"
            ) from exc
        return False


def prepare_bucket(config: StorageConfig, *, tmp_days: int = 1) -> dict[str, Any]:
    """Create and configure the S3 bucket of ``config``; idempotent. Returns a summary.

    * creates the bucket if missing (with a ``LocationConstraint`` outside us-east-1);
    * blocks all public access (the four ``PublicAccessBlock`` flags), where the endpoint
      supports it - one that answers NotImplemented is reported, not an error;
    * default encryption SSE-S3 (AES256) when the bucket has none; an existing default (e.g.
      SSE-KMS chosen on purpose) is kept and reported;
    * the lifecycle rule ``fileflow-expire-tmp``: objects under ``<prefix>/tmp/`` expire after
      ``tmp_days`` days, incomplete multipart uploads are aborted after 1 day. Other rules of
      the bucket are kept; only this one is replaced (in place), and only when it differs.

    Raises ValueError for a configuration that is not S3 or has no (valid) bucket, StorageUnavailable
    (with the endpoint) when S3 cannot be reached or refuses the credentials.
    """
    from botocore.exceptions import ClientError

    if config.kind != "s3":
        raise ValueError(
            f"prepare_bucket is for S3 storage; FILEFLOW_STORAGE_KIND is {config.kind!r}, not 's3'"
        )
    if not config.bucket:
        raise ValueError("S3 storage needs a bucket: set FILEFLOW_STORAGE_BUCKET")
    if tmp_days < 1:
        raise ValueError(f"tmp_days must be at least 1 day, not {tmp_days}")

    client = _s3_client(config)
    bucket = config.bucket
    region = client.meta.region_name
    summary: dict[str, Any] = {
        "bucket": bucket,
        "endpoint": _endpoint(config),
        "region": region,
    }

    # 1. the bucket
    with _Guard(config, "checking the bucket"):
        try:
            client.head_bucket(Bucket=bucket)
            exists = True
        except ClientError as exc:
            if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise
            exists = False
    created = False
    if not exists:
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if region and region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        with _Guard(config, "creating the bucket"):
            try:
                client.create_bucket(**kwargs)
                created = True
            except ClientError as exc:
                if _code(exc) == "BucketAlreadyOwnedByYou":  # created meanwhile, by us
                    pass
                elif _code(exc) == "BucketAlreadyExists":
                    raise StorageUnavailable(
                        f"S3 at {_endpoint(config)}: bucket name {bucket!r} is taken by another "
                        "account; choose another FILEFLOW_STORAGE_BUCKET"
                    ) from exc
                else:
                    raise
    summary["bucket_created"] = created

    # 2. no public access
    with _Guard(config, "blocking public access"):
        try:
            client.put_public_access_block(
                Bucket=bucket,
                PublicAccessBlockConfiguration={
                    "BlockPublicAcls": True,
                    "IgnorePublicAcls": True,
                    "BlockPublicPolicy": True,
                    "RestrictPublicBuckets": True,
                },
            )
            summary["public_access_block"] = "all four blocked"
        except ClientError as exc:
            if _code(exc) not in _NOT_IMPLEMENTED_CODES:
                raise
            summary["public_access_block"] = f"not supported by this endpoint ({_code(exc)})"

    # 3. default encryption
    with _Guard(config, "setting default encryption"):
        try:
            current = client.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
            algorithms = sorted(
                {r["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] for r in current.get("Rules", [])
                 if "ApplyServerSideEncryptionByDefault" in r}
            )
        except ClientError as exc:
            if _code(exc) in _NOT_IMPLEMENTED_CODES:
                algorithms = None
                summary["encryption"] = f"not supported by this endpoint ({_code(exc)})"
            elif _code(exc) == "ServerSideEncryptionConfigurationNotFoundError":
                algorithms = []
            else:
                raise
        if algorithms:
            summary["encryption"] = f"kept existing default: {', '.join(algorithms)}"
        elif algorithms == []:
            try:
                client.put_bucket_encryption(
                    Bucket=bucket,
                    ServerSideEncryptionConfiguration={
                        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
                    },
                )
                summary["encryption"] = "set: SSE-S3 (AES256)"
            except ClientError as exc:
                if _code(exc) not in _NOT_IMPLEMENTED_CODES:
                    raise
                summary["encryption"] = f"not supported by this endpoint ({_code(exc)})"

    # 4. lifecycle: merge our rule into the bucket's rules
    ours = lifecycle_rule(config.prefix, tmp_days)
    with _Guard(config, "setting the lifecycle rule"):
        try:
            current = client.get_bucket_lifecycle_configuration(Bucket=bucket)
        except ClientError as exc:
            if _code(exc) != "NoSuchLifecycleConfiguration":
                raise
            current = {}
        rules = current.get("Rules", [])
        others = [r for r in rules if r.get("ID") != LIFECYCLE_RULE_ID]
        previous = [r for r in rules if r.get("ID") == LIFECYCLE_RULE_ID]
        changed = previous != [ours]
        if changed:
            merged, placed = [], False
            for rule in rules:  # keep the bucket's order; ours where it was, else last
                if rule.get("ID") != LIFECYCLE_RULE_ID:
                    merged.append(rule)
                elif not placed:
                    merged.append(ours)
                    placed = True
            if not placed:
                merged.append(ours)
            kwargs = {"Bucket": bucket, "LifecycleConfiguration": {"Rules": merged}}
            if current.get("TransitionDefaultMinimumObjectSize"):
                kwargs["TransitionDefaultMinimumObjectSize"] = current["TransitionDefaultMinimumObjectSize"]
            client.put_bucket_lifecycle_configuration(**kwargs)
    summary["lifecycle_rule"] = ours
    summary["lifecycle"] = ("replaced" if previous else "added") if changed else "unchanged"
    summary["other_lifecycle_rules"] = [r.get("ID", "") for r in others]
    log.info("bucket %s prepared: %s", bucket, summary)
    return summary
