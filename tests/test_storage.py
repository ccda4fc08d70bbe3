"""Storage through Prefect blocks: a local folder and an S3 bucket (moto's server)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import boto3
import pytest

from blocks.storage import StorageConfig, Store, check_key, make_block, original_key


def s3_config(endpoint: str, bucket: str, prefix: str = "tenant-a") -> StorageConfig:
    return StorageConfig(
        kind="s3", bucket=bucket, prefix=prefix, endpoint_url=endpoint, region="us-east-1",
        access_key_id="testing", secret_access_key="testing",
    )


def roundtrip(store: Store, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"\x00fileflow" * 10_000)
    key = original_key("ab" * 32)
    assert not store.exists(key)
    assert store.put_file(src, key) == src.stat().st_size
    assert store.exists(key)
    dest = store.get_file(key, tmp_path / "back" / "dest.bin")
    assert dest.read_bytes() == src.read_bytes()
    store.put_bytes(b'{"a": 1}', "manifests/x.json")
    assert store.get_bytes("manifests/x.json") == b'{"a": 1}'


def test_local_folder_roundtrip(tmp_path):
    store = Store(StorageConfig(kind="local", basepath=str(tmp_path / "store")))
    roundtrip(store, tmp_path)
    assert (tmp_path / "store" / "originals" / "ab").is_dir()
    assert not list((tmp_path / "store").rglob("*.part"))


def test_s3_bucket_roundtrip(tmp_path, s3_endpoint, s3_bucket):
    store = Store(s3_config(s3_endpoint, s3_bucket))
    roundtrip(store, tmp_path)
    keys = [o["Key"] for o in boto3.client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1"
    ).list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert f"tenant-a/{original_key('ab' * 32)}" in keys
    assert all(k.startswith("tenant-a/") for k in keys)


def test_blocks_are_prefect_filesystem_blocks(tmp_path, s3_endpoint):
    from prefect.filesystems import LocalFileSystem
    from prefect_aws import S3Bucket

    assert isinstance(make_block(StorageConfig(basepath=str(tmp_path))), LocalFileSystem)
    s3 = make_block(s3_config(s3_endpoint, "b"))
    assert isinstance(s3, S3Bucket)
    assert s3.credentials.aws_client_parameters.endpoint_url == s3_endpoint


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a/../../b", "", "a//b", "./a"])
def test_keys_never_escape_the_store(key):
    with pytest.raises(ValueError):
        check_key(key)


def test_unreachable_s3_is_a_transient_storage_error(tmp_path):
    from fileflow.errors import StorageUnavailable, is_transient

    store = Store(replace(s3_config("http://127.0.0.1:9", "nowhere"), retry_s=1))
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as info:
        store.exists("originals/ab/x")
    assert is_transient(info.value)
    assert time.monotonic() - started >= 1  # it waited out its retry window first


def test_an_outage_shorter_than_the_retry_window_is_waited_out(tmp_path, s3_endpoint, s3_bucket):
    """The endpoint refuses connections for 3 s (a proxy cut at the network boundary): every
    operation begun meanwhile waits and succeeds once it is back, with the data intact."""
    from urllib.parse import urlsplit

    from fileflow.testing.tcp_proxy import TcpProxy

    upstream = urlsplit(s3_endpoint)
    proxy = TcpProxy(upstream.hostname, upstream.port)
    try:
        store = Store(replace(s3_config(proxy.url, s3_bucket), retry_s=60))
        store.put_bytes(b"before", "manifests/a.json")
        proxy.cut()
        threading.Timer(3, proxy.restore).start()
        started = time.monotonic()
        assert store.get_bytes("manifests/a.json") == b"before"
        assert time.monotonic() - started >= 2.5
        assert proxy.refused >= 2  # it kept trying meanwhile
        store.put_bytes(b"after", "manifests/b.json")
        assert store.get_bytes("manifests/b.json") == b"after"
    finally:
        proxy.close()
