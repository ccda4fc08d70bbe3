"""S3 notifications through SQS start processing: moto's server delivers the bucket's real
notifications to a real (moto) queue, and a real Prefect server records the runs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid

import pytest

from blocks.storage import StorageConfig, original_key
from fileflow.names import ROUTER_FLOW
from fileflow.server.s3_events import Consumer, Created, Malformed, parse
from fileflow.settings import S3EventsSettings

PREFIX = "ff"


def _clients(endpoint):
    import boto3

    kw = dict(endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
              region_name="us-east-1")
    return boto3.client("s3", **kw), boto3.client("sqs", **kw)


@pytest.fixture
def notified(s3_endpoint, s3_bucket):
    """The bucket notifies a fresh queue of objects created under ff/incoming/ (as docs/callbacks.md sets it up)."""
    s3, sqs = _clients(s3_endpoint)
    queue_url = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:8]}", Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_notification_configuration(Bucket=s3_bucket, NotificationConfiguration={"QueueConfigurations": [{
        "QueueArn": arn, "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": f"{PREFIX}/incoming/"}]}},
    }]})
    storage = StorageConfig(kind="s3", bucket=s3_bucket, prefix=PREFIX, endpoint_url=s3_endpoint, region="us-east-1",
                            access_key_id="testing", secret_access_key="testing")
    consumer = Consumer(storage, S3EventsSettings(queue_url=queue_url, sqs_endpoint_url=s3_endpoint, wait_s=1))
    return {"s3": s3, "sqs": sqs, "queue_url": queue_url, "bucket": s3_bucket, "consumer": consumer}


@pytest.fixture
def router_deployment(prefect_server):
    return make_router_deployment()


def make_router_deployment():
    """A ``process-file`` deployment on a pool no worker serves: runs are created, not run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    async def make():
        async with get_client() as client:
            try:
                await client.create_work_pool(WorkPoolCreate(name="s3-events-test", type="process"))
            except ObjectAlreadyExists:
                pass
            flow_id = await client.create_flow_from_name(ROUTER_FLOW)
            return await client.create_deployment(flow_id=flow_id, name=ROUTER_FLOW, work_pool_name="s3-events-test",
                                                  entrypoint="flows/router.py:process_file")

    return asyncio.run(make())


async def _with_client(fn):
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await fn(client)


def poll(consumer, wait_s=1):
    return asyncio.run(_with_client(lambda c: consumer.poll_once(c, wait_s=wait_s)))


def runs_with_key_prefix(file_id: str):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    async def read(client):
        runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["s3-event"])))
        return [r for r in runs if r.parameters.get("file_id") == file_id]

    return asyncio.run(_with_client(read))


def drain(ctx, rounds=4):
    outcomes = []
    for _ in range(rounds):
        outcomes += poll(ctx["consumer"])
    return outcomes


def queue_empty(ctx) -> bool:
    attrs = ctx["sqs"].get_queue_attributes(
        QueueUrl=ctx["queue_url"],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return attrs["ApproximateNumberOfMessages"] == "0" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_moto_delivers_the_notification_and_one_run_starts_per_object_version(notified, router_deployment):
    ctx = notified
    data = b"a contract that arrived by S3 " * 1000
    sha = hashlib.sha256(data).hexdigest()
    ctx["s3"].put_object(Bucket=ctx["bucket"], Key=f"{PREFIX}/incoming/a contract.txt", Body=data)
    ctx["s3"].put_object(Bucket=ctx["bucket"], Key=f"{PREFIX}/elsewhere/not-me.txt", Body=b"x")  # not notified
    outcomes = drain(ctx)
    assert "test" in outcomes and outcomes.count("started") == 1  # moto sends s3:TestEvent on configuration too
    (run,) = runs_with_key_prefix(sha)
    upload_id = run.parameters.pop("upload_id")  # the object version's own upload (fileflow.engine.uploads)
    assert run.parameters == {"key": original_key(sha), "file_id": sha, "name": "a contract.txt", "size": len(data),
                              "callback_url": None, "options": {}}
    assert upload_id.startswith("s3-") and len(upload_id) == 35
    assert run.name == "file:a contract.txt" and run.idempotency_key.startswith(
        f"s3:{ctx['bucket']}/{PREFIX}/incoming/a contract.txt#")
    stored = ctx["s3"].get_object(Bucket=ctx["bucket"], Key=f"{PREFIX}/{original_key(sha)}")["Body"].read()
    assert stored == data
    assert ctx["s3"].head_object(Bucket=ctx["bucket"], Key=f"{PREFIX}/incoming/a contract.txt")  # left where it landed
    assert queue_empty(ctx)


def test_an_objects_metadata_carries_its_callback_url_and_options(notified, router_deployment):
    """What the upload API takes as parameters, an object in the bucket carries as user metadata
    (``x-amz-meta-fileflow-*``); the router checks them (tests/test_uploads.py)."""
    ctx = notified
    data = b"a scan in German, told back to its sender " * 100
    sha = hashlib.sha256(data).hexdigest()
    ctx["s3"].put_object(Bucket=ctx["bucket"], Key=f"{PREFIX}/incoming/scan.txt", Body=data, Metadata={
        "fileflow-callback-url": "https://uploads.example/answers/7", "fileflow-ocr-languages": "deu",
        "fileflow-preview-sizes": "320,1280", "unrelated": "ignored"})
    assert drain(ctx).count("started") == 1
    (run,) = runs_with_key_prefix(sha)
    assert run.parameters["callback_url"] == "https://uploads.example/answers/7"
    assert run.parameters["options"] == {"ocr_languages": "deu", "preview_sizes": "320,1280"}


def test_duplicate_notifications_start_one_run(notified, router_deployment):
    ctx = notified
    drain(ctx, rounds=1)  # the TestEvent
    put = ctx["s3"].put_object(Bucket=ctx["bucket"], Key=f"{PREFIX}/incoming/twice.txt", Body=b"notified twice")
    sha = hashlib.sha256(b"notified twice").hexdigest()
    body = aws_record(ctx["bucket"], f"{PREFIX}/incoming/twice.txt", put["VersionId"], put["ETag"], 14)
    for _ in range(3):  # S3 delivers at least once: the same event again, twice
        ctx["sqs"].send_message(QueueUrl=ctx["queue_url"], MessageBody=body)
    outcomes = drain(ctx)
    assert outcomes.count("started") == 4  # moto's own notification + the three copies
    (run,) = runs_with_key_prefix(sha)  # every one re-attached to the same run
    assert run.idempotency_key == f"s3:{ctx['bucket']}/{PREFIX}/incoming/twice.txt#{put['VersionId']}"
    assert queue_empty(ctx)
    # a new version of the same key is a new upload: a run of its own
    again = ctx["s3"].put_object(Bucket=ctx["bucket"], Key=f"{PREFIX}/incoming/twice.txt", Body=b"notified twice")
    ctx["sqs"].send_message(QueueUrl=ctx["queue_url"], MessageBody=aws_record(
        ctx["bucket"], f"{PREFIX}/incoming/twice.txt", again["VersionId"], again["ETag"], 14))
    drain(ctx)
    assert len(runs_with_key_prefix(sha)) == 2


def test_the_message_stays_when_the_run_cannot_be_started(notified, prefect_server):
    from prefect.client.orchestration import get_client

    ctx = notified

    async def no_router():  # processing cannot start: the deployment is not there
        async with get_client() as client:
            try:
                deployment = await client.read_deployment_by_name(f"{ROUTER_FLOW}/{ROUTER_FLOW}")
            except Exception:
                return
            await client.delete_deployment(deployment.id)

    asyncio.run(no_router())
    data = b"wait for me"
    sha = hashlib.sha256(data).hexdigest()
    ctx["s3"].put_object(Bucket=ctx["bucket"], Key=f"{PREFIX}/incoming/later.txt", Body=data)
    outcomes = drain(ctx, rounds=3)
    assert "kept" in outcomes and "started" not in outcomes
    assert not queue_empty(ctx)  # back after the visibility timeout
    ctx["consumer"]._deployment_id = None
    make_router_deployment()
    outcomes = drain(ctx, rounds=4)
    assert "started" in outcomes
    assert len(runs_with_key_prefix(sha)) == 1 and queue_empty(ctx)


def test_malformed_messages_are_logged_and_deleted(notified, prefect_server, caplog):
    ctx = notified
    drain(ctx, rounds=1)
    for body in ("not json at all", json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "s3": {}}]}),
                 json.dumps({"Records": "nope"}), json.dumps([1, 2])):
        ctx["sqs"].send_message(QueueUrl=ctx["queue_url"], MessageBody=body)
    with caplog.at_level(logging.ERROR, logger="fileflow.server.s3_events"):
        outcomes = drain(ctx, rounds=3)
    assert outcomes.count("malformed") == 4 and queue_empty(ctx)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 4 and all("malformed S3 notification" in e and "deleted" in e for e in errors)
    assert any("not json at all" in e for e in errors)


def aws_record(bucket: str, key: str, version_id: str | None, etag: str, size: int) -> str:
    """A notification exactly as AWS sends it (event structure version 2.1): the key URL-encoded."""
    from urllib.parse import quote_plus

    obj = {"key": quote_plus(key, safe="/"), "size": size, "eTag": etag.strip('"'), "sequencer": "0066A1B2C3D4E5F607"}
    if version_id:
        obj["versionId"] = version_id
    return json.dumps({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-12-05T21:00:00.000Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"}, "requestParameters": {"sourceIPAddress": "203.0.113.9"},
        "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810", "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "fileflow-uploads",
               "bucket": {"name": bucket, "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                          "arn": f"arn:aws:s3:::{bucket}"},
               "object": obj},
    }]})


def test_parse_reads_the_aws_shapes():
    body = aws_record("b", "ff/incoming/Rapport final+v2 é.pdf", "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY", '"abc"', 5)
    (obj,) = parse(body)
    assert obj == Created("b", "ff/incoming/Rapport final+v2 é.pdf", "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY", "abc", 5)
    assert obj.idempotency_key == "s3:b/ff/incoming/Rapport final+v2 é.pdf#3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"
    assert parse(json.dumps({"Type": "Notification", "Message": body}))[0] == obj  # through SNS
    assert parse(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"})) is None
    removed = json.loads(body)
    removed["Records"][0]["eventName"] = "ObjectRemoved:Delete"
    assert parse(json.dumps(removed)) == []
    with pytest.raises(Malformed, match="no Records"):
        parse("{}")


def test_the_consumer_refuses_a_bad_configuration(s3_endpoint):
    with pytest.raises(ValueError, match="need S3 storage"):
        Consumer(StorageConfig(basepath="/tmp/x"), S3EventsSettings(queue_url="http://q"))
    with pytest.raises(ValueError, match="QUEUE_URL"):
        Consumer(StorageConfig(kind="s3", bucket="b", endpoint_url=s3_endpoint), S3EventsSettings())
    with pytest.raises(ValueError, match="UPLOADS_PREFIX"):
        S3EventsSettings(uploads_prefix="uploads/")
    with pytest.raises(ValueError, match="UPLOADS_PREFIX"):
        S3EventsSettings(uploads_prefix="incoming")


def test_an_unversioned_bucket_keys_runs_by_etag_and_skips_a_replaced_object(s3_endpoint, s3_bucket, router_deployment):
    s3, sqs = _clients(s3_endpoint)
    queue_url = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:8]}", Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    storage = StorageConfig(kind="s3", bucket=s3_bucket, prefix=PREFIX, endpoint_url=s3_endpoint, region="us-east-1",
                            access_key_id="testing", secret_access_key="testing")
    ctx = {"s3": s3, "sqs": sqs, "queue_url": queue_url, "bucket": s3_bucket,
           "consumer": Consumer(storage, S3EventsSettings(queue_url=queue_url, sqs_endpoint_url=s3_endpoint, wait_s=1))}
    key = f"{PREFIX}/incoming/plain.txt"
    first = s3.put_object(Bucket=s3_bucket, Key=key, Body=b"first bytes")
    stale = aws_record(s3_bucket, key, None, first["ETag"], 11)
    for _ in range(2):
        sqs.send_message(QueueUrl=queue_url, MessageBody=stale)
    assert drain(ctx, rounds=2).count("started") == 2
    sha = hashlib.sha256(b"first bytes").hexdigest()
    (run,) = runs_with_key_prefix(sha)
    assert run.idempotency_key == f"s3:{s3_bucket}/{key}#etag:{first['ETag'].strip(chr(34))}"
    s3.put_object(Bucket=s3_bucket, Key=key, Body=b"second bytes")  # replaced: the old notification is stale
    sqs.send_message(QueueUrl=queue_url, MessageBody=stale.replace(first["ETag"].strip('"'), "0" * 32))
    assert drain(ctx, rounds=2) == ["ignored"] and queue_empty(ctx)
