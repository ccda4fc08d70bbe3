"""The S3 bucket prepared for fileflow: ``fileflow storage prepare-bucket``.

:func:`prepare_bucket` (synchronous, idempotent) creates the bucket if missing and sets what
fileflow relies on: public access blocked, default encryption, and a lifecycle rule that
expires ``tmp/``.

The storage itself is not saved as a Prefect block: fileflow reads it from ``FILEFLOW_STORAGE_*``
only (:class:`fileflow.settings.StorageSettings`, the one source of truth), so there is no block
in the Prefect UI whose edits would change nothing (docs/storage.md).
"""

from __future__ import annotations

import logging
from typing import Any

from blocks.storage import StorageConfig
from fileflow.errors import StorageUnavailable

log = logging.getLogger(__name__)

LIFECYCLE_RULE_ID = "fileflow-expire-tmp"
ABORT_MULTIPART_DAYS = 1

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
