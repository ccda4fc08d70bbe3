"""Storage blocks on a real Prefect test server, and bucket preparation on moto's S3 server."""

from __future__ import annotations

import asyncio
import uuid

import boto3
import pytest

from blocks.storage import StorageConfig, Store
from deployments.storage import (
    LIFECYCLE_RULE_ID,
    credentials_block_name,
    lifecycle_rule,
    load_storage_config,
    prepare_bucket,
    save_storage_blocks,
    tmp_prefix,
)
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


def documents(name: str) -> dict:
    """The saved block documents (as the API stores them, secrets hidden) by block type."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {
            "bucket": client.read_block_document_by_name(name, "s3-bucket", include_secrets=False),
            "credentials": client.read_block_document_by_name(
                credentials_block_name(name), "aws-credentials", include_secrets=False
            ),
        }


# -- Prefect blocks ----------------------------------------------------------------------------


def test_s3_blocks_are_saved_once_and_resaving_changes_nothing(prefect_server, s3_endpoint):
    from prefect_aws import AwsCredentials, S3Bucket
    from pydantic import SecretStr

    name = unique("ff-s3")
    config = s3_config(s3_endpoint, "fileflow-blocks", prefix="tenant")
    assert save_storage_blocks(config, name) == f"s3-bucket/{name}"
    first = documents(name)
    assert save_storage_blocks(config, name) == f"s3-bucket/{name}"
    second = documents(name)
    for kind in ("bucket", "credentials"):
        assert second[kind].id == first[kind].id
        assert second[kind].updated == first[kind].updated, f"{kind} block was written again"

    creds = AwsCredentials.load(credentials_block_name(name))
    assert creds.aws_access_key_id == "testing"
    assert isinstance(creds.aws_secret_access_key, SecretStr)
    assert creds.aws_secret_access_key.get_secret_value() == SECRET
    assert creds.region_name == "us-east-1"
    assert creds.aws_client_parameters.endpoint_url == s3_endpoint
    assert SECRET not in repr(creds) and SECRET not in str(creds)
    # the API hands the secret out only on request
    assert SECRET not in str(first["credentials"].data)

    bucket = S3Bucket.load(name)
    assert bucket.bucket_name == "fileflow-blocks" and bucket.bucket_folder == "tenant"
    # the bucket references the named credentials block, it does not embed an anonymous copy
    assert bucket.credentials._block_document_id == first["credentials"].id
    assert bucket.credentials.aws_secret_access_key.get_secret_value() == SECRET
    assert SECRET not in repr(bucket)


def test_changed_settings_update_the_blocks_in_place(prefect_server, s3_endpoint):
    from prefect_aws import AwsCredentials, S3Bucket

    name = unique("ff-s3")
    save_storage_blocks(s3_config(s3_endpoint, "fileflow-one"), name)
    before = documents(name)
    save_storage_blocks(s3_config(s3_endpoint, "fileflow-two", prefix="p", secret_access_key="rotated"), name)
    after = documents(name)
    assert {k: v.id for k, v in after.items()} == {k: v.id for k, v in before.items()}
    assert S3Bucket.load(name).bucket_name == "fileflow-two"
    assert AwsCredentials.load(credentials_block_name(name)).aws_secret_access_key.get_secret_value() == "rotated"


def test_saved_s3_block_reaches_the_bucket(prefect_server, s3_endpoint, s3_bucket):
    from prefect_aws import S3Bucket

    name = unique("ff-s3")
    save_storage_blocks(s3_config(s3_endpoint, s3_bucket, prefix="tenant"), name)
    S3Bucket.load(name).write_path("probe.txt", b"via the block")
    body = s3(s3_endpoint).get_object(Bucket=s3_bucket, Key="tenant/probe.txt")["Body"].read()
    assert body == b"via the block"


def test_s3_storage_config_round_trips_through_the_block(prefect_server, s3_endpoint):
    name = unique("ff-s3")
    config = s3_config(s3_endpoint, "fileflow-roundtrip", prefix="tenant-a", region="eu-west-1")
    slug = save_storage_blocks(config, name)
    # basepath only means something for kind "local": the rebuilt config keeps the default
    assert load_storage_config(name) == config
    assert load_storage_config(slug) == config


def test_s3_config_without_keys_round_trips(prefect_server, s3_endpoint):
    """No keys in the settings: the block leaves them empty and boto3's default chain applies."""
    name = unique("ff-s3")
    config = s3_config(s3_endpoint, "fileflow-chain", access_key_id=None, secret_access_key=None, region=None)
    save_storage_blocks(config, name)
    save_storage_blocks(config, name)
    assert load_storage_config(name) == config


def test_local_block_and_round_trip(prefect_server, tmp_path):
    from prefect.filesystems import LocalFileSystem

    name = unique("ff-local")
    config = StorageConfig(kind="local", basepath=str(tmp_path.resolve()))
    assert save_storage_blocks(config, name) == f"local-file-system/{name}"
    assert save_storage_blocks(config, name) == f"local-file-system/{name}"
    assert LocalFileSystem.load(name).basepath == str(tmp_path.resolve())
    assert load_storage_config(name) == config


def test_unknown_or_ambiguous_block_names_are_refused(prefect_server, s3_endpoint, tmp_path):
    with pytest.raises(ValueError, match="no storage block named"):
        load_storage_config(unique("missing"))
    with pytest.raises(ValueError, match="s3-bucket or local-file-system"):
        load_storage_config("secret/whatever")
    name = unique("ff-both")
    save_storage_blocks(StorageConfig(kind="local", basepath=str(tmp_path)), name)
    save_storage_blocks(s3_config(s3_endpoint, "fileflow-both"), name)
    with pytest.raises(ValueError, match="pass the slug"):
        load_storage_config(name)
    assert load_storage_config(f"s3-bucket/{name}").bucket == "fileflow-both"


def test_saving_works_from_inside_an_event_loop(prefect_server, s3_endpoint):
    """Block.save is async-dispatched; inside a loop it would return an un-awaited coroutine."""
    from prefect_aws import S3Bucket

    name = unique("ff-async")

    async def from_async_code():
        slug = save_storage_blocks(s3_config(s3_endpoint, "fileflow-async"), name)
        return slug, load_storage_config(name)

    slug, config = asyncio.run(from_async_code())
    assert slug == f"s3-bucket/{name}"
    assert config.bucket == "fileflow-async"
    assert S3Bucket.load(name).bucket_name == "fileflow-async"


def test_blocks_need_a_bucket_name():
    with pytest.raises(ValueError, match="FILEFLOW_STORAGE_BUCKET"):
        save_storage_blocks(StorageConfig(kind="s3"), "never-saved")


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
