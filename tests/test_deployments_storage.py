"""Storage from the environment only (no saved block on a real Prefect test server), and bucket
preparation on moto's S3 server."""

from __future__ import annotations

import uuid

import boto3
import pytest

from blocks.storage import StorageConfig, Store
from deployments.storage import LIFECYCLE_RULE_ID, lifecycle_rule, prepare_bucket, tmp_prefix
from fileflow.errors import StorageUnavailable, is_transient

SECRET = "s3cr3t-value-never-printed"


def unique(stem: str) -> str:
    """Block and bucket names: the Prefect server and moto live for the whole session."""
    return f"{stem}-{uuid.uuid4().hex[:8]}"


def s3_config(endpoint: str, bucket: str | None, prefix: str = "", **kw) -> StorageConfig:
    values = dict(
        kind="s3", bucket=bucket, prefix=prefix, endpoint_url=endpoint, region="us-east-1",
        access_key_id="testing", secret_access_key=SECRET,
    )
    values.update(kw)
    return StorageConfig(**values)


def s3(endpoint: str, region: str = "us-east-1"):
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name=region,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )


# -- one source of truth: the environment ---------------------------------------------------------


def test_no_storage_block_is_saved_and_the_old_command_says_why(prefect_server, tmp_path):
    """fileflow reads its storage from FILEFLOW_STORAGE_* only, so it saves no block whose edit in
    the Prefect UI would change nothing: `fileflow storage blocks` explains, fails and saves
    nothing, and neither the setup nor anything else leaves a storage block on the server."""
    import os
    import subprocess
    import sys

    from prefect.client.orchestration import get_client

    env = {**os.environ, "PREFECT_API_URL": prefect_server, "FILEFLOW_STORAGE_KIND": "local",
           "FILEFLOW_STORAGE_PATH": str(tmp_path), "COLUMNS": "200"}
    fileflow = os.path.join(os.path.dirname(sys.executable), "fileflow")
    result = subprocess.run([fileflow, "storage", "blocks"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "FILEFLOW_STORAGE_" in result.stderr and "docs/storage.md" in result.stderr, result.stderr
    with get_client(sync_client=True) as client:
        saved = client.read_block_documents(include_secrets=False, limit=200)
    assert len(saved) < 200  # one page held them all
    storage_types = {"s3-bucket", "local-file-system", "aws-credentials"}
    # fileflow's only saved storage blocks are its results blocks, named after a digest of the
    # storage they point at (fileflow.names.RESULTS_BLOCK_PREFIX): copies of the settings
    # (the command saved local-file-system/fileflow-storage before; its absence is the point)
    assert [(d.block_type.slug, d.name) for d in saved if d.block_type and d.block_type.slug in storage_types
            and d.name.startswith("fileflow-") and not d.name.startswith("fileflow-results-")] == []


def test_storage_follows_the_environment_of_each_process(tmp_path, monkeypatch):
    """An edit of FILEFLOW_STORAGE_* takes effect in every process started after it."""
    from fileflow.settings import StorageSettings

    monkeypatch.setenv("FILEFLOW_STORAGE_KIND", "s3")
    monkeypatch.setenv("FILEFLOW_STORAGE_BUCKET", "first")
    assert StorageSettings().config().bucket == "first"
    monkeypatch.setenv("FILEFLOW_STORAGE_BUCKET", "edited")
    monkeypatch.setenv("FILEFLOW_STORAGE_PREFIX", "tenant-b")
    config = StorageSettings().config()
    assert (config.kind, config.bucket, config.prefix) == ("s3", "edited", "tenant-b")


# -- prepare_bucket ------------------------------------------------------------------------------


def our_rules(client, bucket: str) -> list[dict]:
    rules = client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    return [r for r in rules if r["ID"] == LIFECYCLE_RULE_ID]


def test_prepare_creates_and_configures_a_new_bucket(s3_endpoint):
    bucket = unique("fileflow-new")
    summary = prepare_bucket(s3_config(s3_endpoint, bucket), tmp_days=2)
    assert summary["bucket_created"] is True
    assert summary["lifecycle"] == "added"
    client = s3(s3_endpoint)
    client.head_bucket(Bucket=bucket)

    (rule,) = our_rules(client, bucket)
    assert rule["Filter"] == {"Prefix": "tmp/"}
    assert rule["Status"] == "Enabled"
    assert rule["Expiration"] == {"Days": 2}
    assert rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}

    encryption = client.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert encryption["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    if summary["public_access_block"] == "all four blocked":
        flags = client.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert flags == dict.fromkeys(
            ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), True
        )
    else:  # an endpoint without the API is reported, not an error
        assert summary["public_access_block"].startswith("not supported")


def test_prepare_twice_keeps_one_rule_and_foreign_rules(s3_endpoint, s3_bucket):
    client = s3(s3_endpoint)
    foreign = {"ID": "keep-logs", "Filter": {"Prefix": "logs/"}, "Status": "Enabled", "Expiration": {"Days": 30}}
    client.put_bucket_lifecycle_configuration(Bucket=s3_bucket, LifecycleConfiguration={"Rules": [foreign]})
    config = s3_config(s3_endpoint, s3_bucket, prefix="tenant")

    first = prepare_bucket(config)
    assert first["bucket_created"] is False and first["lifecycle"] == "added"
    assert first["other_lifecycle_rules"] == ["keep-logs"]
    second = prepare_bucket(config)
    assert second["lifecycle"] == "unchanged"
    third = prepare_bucket(config, tmp_days=7)
    assert third["lifecycle"] == "replaced"

    rules = client.get_bucket_lifecycle_configuration(Bucket=s3_bucket)["Rules"]
    assert [r["ID"] for r in rules] == ["keep-logs", LIFECYCLE_RULE_ID]
    assert rules[0] == foreign
    assert rules[1]["Expiration"] == {"Days": 7}


def test_existing_default_encryption_is_kept(s3_endpoint, s3_bucket):
    client = s3(s3_endpoint)
    kms = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]}
    client.put_bucket_encryption(Bucket=s3_bucket, ServerSideEncryptionConfiguration=kms)
    summary = prepare_bucket(s3_config(s3_endpoint, s3_bucket))
    assert summary["encryption"] == "kept existing default: aws:kms"
    rules = client.get_bucket_encryption(Bucket=s3_bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"


@pytest.mark.parametrize(("prefix", "expected"), [("", "tmp/"), ("tenant", "tenant/tmp/"), ("/tenant/", "tenant/tmp/")])
def test_rule_prefix_follows_the_storage_prefix(s3_endpoint, prefix, expected):
    assert tmp_prefix(prefix) == expected
    bucket = unique("fileflow-prefix")
    prepare_bucket(s3_config(s3_endpoint, bucket, prefix=prefix))
    (rule,) = our_rules(s3(s3_endpoint), bucket)
    assert rule["Filter"]["Prefix"] == expected


def test_bucket_outside_us_east_1_is_created_in_its_region(s3_endpoint):
    bucket = unique("fileflow-eu")
    summary = prepare_bucket(s3_config(s3_endpoint, bucket, region="eu-west-1"))
    assert summary["bucket_created"] is True and summary["region"] == "eu-west-1"
    location = s3(s3_endpoint, "eu-west-1").get_bucket_location(Bucket=bucket)["LocationConstraint"]
    assert location == "eu-west-1"


@pytest.mark.parametrize("prefix", ["", "tenant"])
def test_only_scratch_objects_match_the_rule(s3_endpoint, prefix):
    """Objects the Store writes under tmp/ fall under the rule, the others do not.

    moto stores lifecycle rules but never expires anything, so this checks the rule's filter
    against the keys actually written (S3 matches a Prefix filter by plain string prefix).
    """
    bucket = unique("fileflow-scratch")
    config = s3_config(s3_endpoint, bucket, prefix=prefix)
    prepare_bucket(config)
    (rule,) = our_rules(s3(s3_endpoint), bucket)
    store = Store(config)
    store.put_bytes(b"scratch", "tmp/upload-1/part")
    store.put_bytes(b"original", "originals/ab/" + "ab" * 32)
    store.put_bytes(b"{}", "manifests/" + "ab" * 32 + ".json")
    store.put_bytes(b"not scratch", "derived/" + "ab" * 32 + "/tmp/file")  # "tmp" deeper down
    keys = [o["Key"] for o in s3(s3_endpoint).list_objects_v2(Bucket=bucket)["Contents"]]
    expiring = sorted(k for k in keys if k.startswith(rule["Filter"]["Prefix"]))
    assert expiring == [f"{prefix}/tmp/upload-1/part" if prefix else "tmp/upload-1/part"]
    assert len(keys) == 4


def test_rule_shape():
    assert lifecycle_rule("a/b/", 3) == {
        "ID": LIFECYCLE_RULE_ID,
        "Filter": {"Prefix": "a/b/tmp/"},
        "Status": "Enabled",
        "Expiration": {"Days": 3},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
    }


def test_unreachable_endpoint_is_storage_unavailable():
    with pytest.raises(StorageUnavailable, match=r"http://127\.0\.0\.1:9") as info:
        prepare_bucket(s3_config("http://127.0.0.1:9", "fileflow-nowhere"))
    assert is_transient(info.value)


def test_configuration_errors_are_value_errors(s3_endpoint):
    with pytest.raises(ValueError, match="FILEFLOW_STORAGE_BUCKET"):
        prepare_bucket(s3_config(s3_endpoint, None))
    with pytest.raises(ValueError, match="FILEFLOW_STORAGE_KIND"):
        prepare_bucket(StorageConfig(kind="local"))
    with pytest.raises(ValueError, match="not a valid bucket name"):
        prepare_bucket(s3_config(s3_endpoint, "x"))
    with pytest.raises(ValueError, match="tmp_days"):
        prepare_bucket(s3_config(s3_endpoint, "fileflow-x"), tmp_days=0)
