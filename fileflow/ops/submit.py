"""``fileflow submit``: what an upload service does when a file arrives.

The file's bytes go to storage under their SHA-256 (for a local path; an ``s3://`` object is
copied into that layout), then the ``process-file`` deployment is started with an idempotency
key made of the upload's id (:func:`fileflow.engine.uploads.upload_id_for`: digest and name):
the same upload notified twice starts one run. The runs of one ``submit`` are tagged ``batch:<id>``.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blocks.storage import StorageConfig, Store, manifest_key, original_key
from converters.inspect import sha256_of
from fileflow.engine import uploads
from fileflow.names import ROUTER_DEPLOYMENT



@dataclass
class Submitted:
    name: str
    file_id: str
    flow_run_id: str
    flow_run_name: str


def idempotency_key(upload_id: str) -> str:
    """Prefect's idempotency key of an upload's router run: one run per upload, whoever asks."""
    return f"upload:{upload_id}"


def _fetch_s3(url: str, dest: Path, config: StorageConfig) -> Path:
    """Download an ``s3://`` object; from the storage's S3 service (endpoint, keys) when
    fileflow's storage is S3 too, else with boto3's default credential chain."""
    import boto3

    bucket, _, key = url[len("s3://"):].partition("/")
    if not bucket or not key:
        raise ValueError(f"{url!r} is not s3://bucket/key")
    if config.kind == "s3":
        client = boto3.client(
            "s3", endpoint_url=config.endpoint_url, region_name=config.region,
            aws_access_key_id=config.access_key_id, aws_secret_access_key=config.secret_access_key,
        )
    else:
        client = boto3.client("s3")
    client.download_file(bucket, key, str(dest))
    return dest


async def start_upload(client, deployment_id, *, key: str, file_id: str, name: str, size: int, batch_id: str | None,
                       upload_id: str, callback_url: str | None = None, options: dict[str, Any] | None = None):
    """Create the router run of one upload whose bytes are in storage under ``key``: one run
    per upload id (Prefect's idempotency key; the router refuses a second run of an upload too).
    The ``upload`` API and ``submit`` start runs this one way."""
    from prefect.states import Scheduled

    from fileflow.engine.mediator import display_name

    return await client.create_flow_run_from_deployment(
        deployment_id,
        parameters={"key": key, "file_id": file_id, "name": name, "size": size, "upload_id": upload_id,
                    "batch": batch_id, "callback_url": callback_url, "options": options or {}},
        state=Scheduled(),
        name=f"file:{display_name(name)}",  # named while it waits, not only once it starts
        tags=["fileflow", "upload"] + ([f"batch:{batch_id}"] if batch_id else []),
        idempotency_key=idempotency_key(upload_id),
    )


#: router runs created at once by one ``submit``: run creation is one API call that waits on the
#: server's database, so a few in flight keep it busy; more only queue in the server
SUBMIT_CONCURRENCY = 8


async def submit(sources: list[str], store: Store, batch_id: str | None = None, *,
                 concurrency: int = SUBMIT_CONCURRENCY, on_submitted=None) -> list[Submitted]:
    """Upload every source and start its router run, ``concurrency`` files at a time; the runs in
    the order of ``sources``. Every local path is checked before anything is uploaded, so a
    missing one starts nothing. ``on_submitted(Submitted)`` is called as each run is created."""
    from prefect.client.orchestration import get_client
    from fileflow.engine.mediator import display_name
    from fileflow.ops.batch import new_batch_id

    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    malformed = [s for s in sources if s.startswith("s3://") and not all(s[len("s3://"):].partition("/")[::2])]
    if malformed:
        raise ValueError(f"not s3://bucket/key: {', '.join(malformed)} (nothing was submitted)")
    missing = [s for s in sources if not s.startswith("s3://") and not Path(s).is_file()]
    if missing:
        raise FileNotFoundError(f"not a file: {', '.join(missing)} (nothing was submitted)")
    batch_id = batch_id or new_batch_id()
    gate = asyncio.Semaphore(concurrency)
    with tempfile.TemporaryDirectory(prefix="fileflow-submit-") as tmp:
        async with get_client() as client:
            deployment = await client.read_deployment_by_name(ROUTER_DEPLOYMENT)

            async def one(i: int, source: str) -> Submitted:
                async with gate:
                    if source.startswith("s3://"):
                        name = source.rsplit("/", 1)[-1]
                        path = await asyncio.to_thread(_fetch_s3, source, Path(tmp) / f"object-{i}", store.config)
                    else:
                        path = Path(source)
                        name = path.name
                    digest = await asyncio.to_thread(sha256_of, path)
                    key = original_key(digest)
                    if not await asyncio.to_thread(store.exists, key):
                        await asyncio.to_thread(store.put_file, path, key)
                    run = await start_upload(client, deployment.id, key=key, file_id=digest, name=name,
                                             size=path.stat().st_size, batch_id=batch_id,
                                             upload_id=uploads.upload_id_for(digest, display_name(name)))
                    if source.startswith("s3://"):
                        path.unlink()
                    done = Submitted(name, digest, str(run.id), run.name)
                    if on_submitted:
                        on_submitted(done)
                    return done

            results = await asyncio.gather(*(one(i, s) for i, s in enumerate(sources)), return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:  # the others were submitted (and reported); submitting again starts only the missing ones
        raise failed[0]
    return results


#: a Crashed router run is resumed (the automation at once, else the resumer within about 45 s,
#: docs/distributed.md): it counts as ended only when it stays Crashed this long
RESUME_GRACE_S = 120.0


async def wait_for(runs: list[Submitted], store: Store, *, on_progress=None, timeout_s: float = 3600) -> list[dict[str, Any]]:
    """Follow the router runs until each is final; their manifests, read from storage."""
    from datetime import datetime, timezone
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    def ended(state) -> bool:
        if not (state and state.is_final()):
            return False
        if state.is_crashed():  # it will be resumed unless it stays so
            return (datetime.now(timezone.utc) - state.timestamp).total_seconds() > RESUME_GRACE_S
        return True

    pending = {r.flow_run_id: r for r in runs}
    states: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    async with get_client() as client:
        while pending and time.monotonic() < deadline:
            ids = list(pending)
            for at in range(0, len(ids), 200):  # one read per 200 runs
                chunk = [UUID(i) for i in ids[at:at + 200]]
                for flow_run in await client.read_flow_runs(
                        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)), limit=len(chunk)):
                    run_id = str(flow_run.id)
                    states[run_id] = flow_run.state.name if flow_run.state else "?"
                    if ended(flow_run.state):
                        pending.pop(run_id)
            if on_progress:
                on_progress(len(runs) - len(pending), len(runs), states)
            if pending:
                await asyncio.sleep(0.5)
    manifests = []
    for run in runs:
        if await asyncio.to_thread(store.exists, manifest_key(run.file_id)):
            manifest = json.loads(await asyncio.to_thread(store.get_bytes, manifest_key(run.file_id)))
            # the content's manifest names whichever upload of it wrote it last (an archive's member,
            # say): the table speaks of this upload, submitted at the top level
            manifests.append({**manifest, "name": run.name, "parent": None})
        else:
            manifests.append({"name": run.name, "file_id": run.file_id, "status": states.get(run.flow_run_id, "lost"),
                              "kind": "unknown", "steps": [], "renditions": [], "language": None})
    return manifests


def storage_for(config: StorageConfig) -> Store:
    return Store(config)
