"""S3 event notifications: processing starts when an object lands in the bucket.

The storage bucket sends its ``s3:ObjectCreated:*`` notifications for ``<prefix>/incoming/``
(``FILEFLOW_S3_EVENTS_UPLOADS_PREFIX``) to an SQS queue; this consumer (``fileflow s3-events``,
``python -m fileflow.server.s3_events``; started by ``fileflow up`` when storage is S3 and
``FILEFLOW_S3_EVENTS_QUEUE_URL`` is set, and by the Helm chart) long-polls the queue and, for
every new object, does what ``fileflow submit`` does:

1. reads the object once, streaming, to hash it (pinned to the notified version, or ETag);
2. copies it inside S3 to ``originals/<sha[:2]>/<sha>`` unless that exists (a server-side copy:
   the bytes do not pass through the consumer twice, and the upload stays where it landed);
3. creates the ``process-file`` run with the idempotency key ``s3:<bucket>/<key>#<version>``
   (the object's ``versionId`` from the notification or, in a versioned bucket, from S3's answer;
   in an unversioned bucket ``etag:<ETag>``): a duplicate notification re-attaches to the run
   that exists;
4. deletes the message, only once every object it names has its run.

What becomes of a message:

==============================================  ============================================
``s3:TestEvent`` (sent when notifications are   deleted, logged at INFO
configured)
an object outside the uploads prefix, another   ignored (logged), the message deleted
bucket, a folder marker (key ending in ``/``)
malformed (not JSON, no ``Records``, a record   an ERROR log line with the message id and its
without bucket or key)                          first 500 characters, then **deleted**: it
                                                can never become well-formed, and retrying it
                                                would only hide good messages
the object changed or vanished since the        WARNING, deleted: the newer object has a
notification (412 / 404)                        notification of its own
hashing, copying or creating the run fails      the message is **kept**: SQS shows it again
(S3 or Prefect unreachable)                     after the queue's visibility timeout; give the
                                                queue a redrive policy (``maxReceiveCount``)
                                                so that a message failing for good ends in a
                                                dead-letter queue instead of looping
==============================================  ============================================
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import signal
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote_plus

from blocks.storage import StorageConfig, original_key
from fileflow.names import ROUTER_DEPLOYMENT
from fileflow.settings import S3EventsSettings, StorageSettings
from fileflow.server.logs import setup_logging

log = logging.getLogger("fileflow.server.s3_events")

CHUNK = 1024 * 1024
TAGS = ["fileflow", "upload", "s3-event"]


#: the object's user metadata (``x-amz-meta-<name>``) an upload service sets to hear back about
#: this upload and to choose its options, as the upload API's parameters of the same names
META_CALLBACK_URL = "fileflow-callback-url"
META_OPTIONS = {"fileflow-ocr-languages": "ocr_languages", "fileflow-preview-sizes": "preview_sizes"}


def upload_metadata(metadata: dict[str, str]) -> tuple[str | None, dict[str, str]]:
    """The callback URL and the per-upload options an object's metadata carries, unchecked: the
    router checks them and refuses the upload, saying why, when one cannot be used."""
    options = {option: metadata[name] for name, option in META_OPTIONS.items() if metadata.get(name)}
    return metadata.get(META_CALLBACK_URL) or None, options


class Malformed(ValueError):
    """A message that is not an S3 notification fileflow can read."""


@dataclass(frozen=True)
class Created:
    """One ``ObjectCreated`` record: the object, and the version it was notified for."""

    bucket: str
    key: str
    version_id: str | None
    etag: str | None
    size: int | None

    @property
    def version(self) -> str:
        return self.version_id or (f"etag:{self.etag}" if self.etag else "unversioned")

    @property
    def idempotency_key(self) -> str:
        return f"s3:{self.bucket}/{self.key}#{self.version}"

    @property
    def upload_id(self) -> str:
        """The upload this object version is (:mod:`fileflow.engine.uploads`): its record, its answers."""
        return "s3-" + hashlib.sha256(self.idempotency_key.encode()).hexdigest()[:32]

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


def parse(body: str) -> list[Created] | None:
    """The created objects of one message body; None for ``s3:TestEvent``. Raises :class:`Malformed`.

    Reads S3's own event (``{"Records": [...]}``) and the same wrapped by SNS
    (``{"Type": "Notification", "Message": "<json>"}``); other event names (removals ...) are skipped.
    """
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise Malformed(f"not JSON: {exc}") from exc
    if isinstance(data, dict) and data.get("Type") == "Notification" and isinstance(data.get("Message"), str):
        return parse(data["Message"])
    if not isinstance(data, dict):
        raise Malformed("not a JSON object")
    if data.get("Event") == "s3:TestEvent":
        return None
    records = data.get("Records")
    if not isinstance(records, list) or not records:
        raise Malformed("no Records list")
    created = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise Malformed(f"record {i} is not an object")
        if not str(record.get("eventName", "")).startswith("ObjectCreated:"):
            continue
        s3 = record.get("s3") or {}
        bucket = (s3.get("bucket") or {}).get("name")
        obj = s3.get("object") or {}
        key = obj.get("key")
        if not isinstance(bucket, str) or not bucket or not isinstance(key, str) or not key:
            raise Malformed(f"record {i} has no s3.bucket.name or s3.object.key")
        size = obj.get("size")
        created.append(Created(bucket, unquote_plus(key), obj.get("versionId") or None,
                               (obj.get("eTag") or "").strip('"') or None, size if isinstance(size, int) else None))
    return created


class Gone(Exception):
    """The notified version of the object is no longer there (replaced or deleted)."""


class Consumer:
    """Turns the queue's notifications into ``process-file`` runs; one or more per queue."""

    def __init__(self, storage: StorageConfig, settings: S3EventsSettings):
        import boto3

        if storage.kind != "s3" or not storage.bucket:
            raise ValueError("S3 notifications need S3 storage (FILEFLOW_STORAGE_KIND=s3 and FILEFLOW_STORAGE_BUCKET)")
        if not settings.queue_url:
            raise ValueError("S3 notifications need FILEFLOW_S3_EVENTS_QUEUE_URL, the queue the bucket notifies")
        self.storage, self.settings = storage, settings
        creds = {"region_name": storage.region, "aws_access_key_id": storage.access_key_id,
                 "aws_secret_access_key": storage.secret_access_key}
        self.s3 = boto3.client("s3", endpoint_url=storage.endpoint_url, **creds)
        self.sqs = boto3.client("sqs", endpoint_url=settings.sqs_endpoint_url, **creds)
        base = storage.prefix.strip("/")
        self.base = f"{base}/" if base else ""
        self.uploads = self.base + settings.uploads_prefix
        self._deployment_id = None

    # -- one object --------------------------------------------------------------------------
    def wanted(self, obj: Created) -> bool:
        return obj.bucket == self.storage.bucket and obj.key.startswith(self.uploads) and not obj.key.endswith("/")

    def _pinned(self, obj: Created) -> dict[str, str]:
        if obj.version_id:
            return {"VersionId": obj.version_id}
        return {"IfMatch": f'"{obj.etag}"'} if obj.etag else {}

    def store_original(self, obj: Created) -> tuple[str, int, Created, dict[str, str]]:
        """Hash the object (streamed) and copy it under ``originals/``; its digest, size, the
        object with the version read (a notification without ``versionId`` from a versioned
        bucket, as moto sends, gets the version S3 answered for its ETag), and its user metadata."""
        from botocore.exceptions import ClientError

        try:
            answer = self.s3.get_object(Bucket=obj.bucket, Key=obj.key, **self._pinned(obj))
            digest, size = hashlib.sha256(), 0
            for chunk in answer["Body"].iter_chunks(CHUNK):
                digest.update(chunk)
                size += len(chunk)
            sha = digest.hexdigest()
            metadata = {k.lower(): v for k, v in (answer.get("Metadata") or {}).items()}
            if not obj.version_id and answer.get("VersionId") not in (None, "null"):
                obj = replace(obj, version_id=answer["VersionId"])
            target = self.base + original_key(sha)
            if not self._exists(target):
                source = {"Bucket": obj.bucket, "Key": obj.key, **({"VersionId": obj.version_id} if obj.version_id else {})}
                extra = {"CopySourceIfMatch": f'"{obj.etag}"'} if obj.etag and not obj.version_id else {}
                self.s3.copy(source, self.storage.bucket, target, ExtraArgs=extra or None)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "NoSuchVersion", "404", "PreconditionFailed", "412"):
                raise Gone(f"{obj.key} ({obj.version}): {code}") from exc
            raise
        return sha, size, obj, metadata

    def _exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.s3.head_object(Bucket=self.storage.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    async def start(self, client, obj: Created) -> str:
        """The object's ``process-file`` run (created, or the one its idempotency key already has)."""
        from prefect.states import Scheduled

        sha, size, obj, metadata = await asyncio.to_thread(self.store_original, obj)
        callback_url, options = upload_metadata(metadata)
        if self._deployment_id is None:
            self._deployment_id = (await client.read_deployment_by_name(ROUTER_DEPLOYMENT)).id
        run = await client.create_flow_run_from_deployment(
            self._deployment_id,
            parameters={"key": original_key(sha), "file_id": sha, "name": obj.name, "size": size,
                        "upload_id": obj.upload_id, "callback_url": callback_url, "options": options},
            state=Scheduled(), name=f"file:{obj.name}", tags=TAGS, idempotency_key=obj.idempotency_key,
        )
        log.info("s3://%s/%s (%s): run %s for %s", obj.bucket, obj.key, obj.version, run.id, sha[:12])
        return str(run.id)

    # -- one message -------------------------------------------------------------------------
    async def handle(self, client, message: dict[str, Any]) -> str:
        """Start what ``message`` names; what was done: test|ignored|malformed|started. Deletes the
        message unless starting a run failed (then it raises and the message comes back)."""
        message_id = message.get("MessageId", "?")
        body = message.get("Body", "")
        try:
            objects = parse(body)
        except Malformed as exc:
            log.error("malformed S3 notification %s deleted (%s): %.500s", message_id, exc, body)
            await self._delete(message)
            return "malformed"
        if objects is None:
            log.info("s3:TestEvent %s: the bucket's notifications reach this queue", message_id)
            await self._delete(message)
            return "test"
        outcome = "ignored"
        for obj in objects:
            if not self.wanted(obj):
                log.info("ignored s3://%s/%s: not under s3://%s/%s", obj.bucket, obj.key, self.storage.bucket, self.uploads)
                continue
            try:
                await self.start(client, obj)
                outcome = "started"
            except Gone as exc:
                log.warning("object changed or removed since its notification, skipped: %s", exc)
        await self._delete(message)  # only now: every object it names has its run
        return outcome

    async def _delete(self, message: dict[str, Any]) -> None:
        await asyncio.to_thread(self.sqs.delete_message, QueueUrl=self.settings.queue_url,
                                ReceiptHandle=message["ReceiptHandle"])

    async def poll_once(self, client, wait_s: int | None = None) -> list[str]:
        """One long poll of the queue and the handling of what it returned."""
        answer = await asyncio.to_thread(
            self.sqs.receive_message, QueueUrl=self.settings.queue_url, MaxNumberOfMessages=self.settings.max_messages,
            WaitTimeSeconds=self.settings.wait_s if wait_s is None else wait_s,
        )
        outcomes = []
        for message in answer.get("Messages", []):
            try:
                outcomes.append(await self.handle(client, message))
            except Exception:  # kept in the queue: it comes back after the visibility timeout
                log.exception("could not start processing for message %s; left in the queue", message.get("MessageId"))
                outcomes.append("kept")
        return outcomes

    async def run(self, stop: asyncio.Event) -> None:
        from prefect.client.orchestration import get_client

        log.info("consuming %s for s3://%s/%s", self.settings.queue_url, self.storage.bucket, self.uploads)
        async with get_client() as client:
            while not stop.is_set():
                try:
                    await self.poll_once(client)
                except Exception:  # SQS unreachable: wait, then again
                    log.exception("receiving from %s failed; trying again", self.settings.queue_url)
                    await asyncio.sleep(5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fileflow.server.s3_events", description=__doc__.split("\n")[0])
    parser.parse_args(argv)
    setup_logging()
    consumer = Consumer(StorageSettings().config(), S3EventsSettings())

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await consumer.run(stop)

    asyncio.run(go())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
