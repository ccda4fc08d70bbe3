"""``fileflow show FILE``: one file's manifest (from storage) and its run in the Prefect UI.

``FILE`` is an upload id (``uploads/<id>.json``), a SHA-256 (the file id), a prefix of one (at
least 4 hex digits), or the name the file was uploaded with (an archive member's name is
``<archive>/<member path>``):

- an upload id shows that upload's record (its name, parent upload, batch, status) with the
  manifest of its content;

- an id or prefix is looked up among the manifests in storage (``manifests/<prefix>*``);
- a name is looked up among the router runs named ``file:<name>`` in Prefect, whose
  ``file_id`` parameter is the id (so the same name uploaded twice with different bytes is
  ambiguous, and says so).

The run shown is the one that finished the manifest: the file's run (``file:<name>``), which
carries the artifact ``manifest-<sha256[:32]>``. Its link is ``<UI URL>/runs/flow-run/<id>``; the UI URL is ``PREFECT_UI_URL``,
else derived from ``PREFECT_API_URL``, else ``http://127.0.0.1:4200`` (where
``prefect server start`` serves the embedded default's runs).
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any

from blocks.storage import Store, manifest_key
from fileflow.engine import uploads
from fileflow.errors import AmbiguousFile, UnknownFile

HEX = re.compile(r"[0-9a-f]{4,64}")
DEFAULT_UI_URL = "http://127.0.0.1:4200"


@dataclass
class Shown:
    file_id: str
    manifest: dict[str, Any]
    flow_run_id: str | None
    run_url: str | None
    upload: dict[str, Any] | None = None
    """the upload asked for by its id, else None"""
    uploads: list[dict[str, Any]] | None = None
    """every upload of this content (name, parent, status, shared): the same bytes arrive under several names"""

    def as_json(self) -> dict[str, Any]:
        return {"file_id": self.file_id, "flow_run_id": self.flow_run_id, "run_url": self.run_url,
                "upload": self.upload, "uploads": self.uploads or [], "manifest": self.manifest}


def ui_url() -> str:
    from prefect.settings import PREFECT_UI_URL

    return (PREFECT_UI_URL.value() or DEFAULT_UI_URL).rstrip("/")


def _ids_by_prefix(store: Store, prefix: str) -> list[str]:
    keys = store.keys(f"manifests/{prefix}")
    return [k.rsplit("/", 1)[-1].removesuffix(".json") for k in keys if k.endswith(".json")]


async def _ids_by_name(client, name: str) -> list[str]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"file:{name}"])))
    return sorted({r.parameters["file_id"] for r in runs if r.parameters.get("file_id")})


async def _run_of(client, file_id: str) -> str | None:
    """The flow run that carries the file's latest manifest artifact."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    artifacts = await client.read_artifacts(
        artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"manifest-{file_id[:32]}"])),
        sort=ArtifactSort.CREATED_DESC, limit=1,
    )
    return str(artifacts[0].flow_run_id) if artifacts and artifacts[0].flow_run_id else None


async def find(query: str, store: Store) -> Shown:
    """The file ``query`` names; :class:`UnknownFile` or :class:`AmbiguousFile` otherwise."""
    from prefect.client.orchestration import get_client

    query = query.strip()
    if not query:
        raise UnknownFile("no file given: pass an upload id, a file id (SHA-256 or a prefix of 4+ hex digits) or a name")
    upload = await asyncio.to_thread(_upload, store, query)
    async with get_client() as client:
        ids: list[str] = [upload["file_id"]] if upload else []
        if not ids and HEX.fullmatch(query.lower()):
            ids = await asyncio.to_thread(_ids_by_prefix, store, query.lower())
        if not ids:
            ids = await _ids_by_name(client, query)
        if not ids:
            raise UnknownFile(
                f"no file matches {query!r}: no manifest id starts with it in {store.config.describe()} "
                f"and no run is named 'file:{query}' in Prefect"
            )
        if len(ids) > 1:
            shown = ", ".join(i[:12] for i in ids[:10]) + (" ..." if len(ids) > 10 else "")
            raise AmbiguousFile(f"{len(ids)} files match {query!r}: {shown}; give more of the id", ids)
        file_id = ids[0]
        key = manifest_key(file_id)
        if not await asyncio.to_thread(store.exists, key):
            raise UnknownFile(f"{query!r} is file {file_id}, but its manifest is not in {store.config.describe()} "
                              "(still processing, or another storage)")
        manifest = json.loads(await asyncio.to_thread(store.get_bytes, key))
        run_id = (upload or {}).get("flow_run_id") or await _run_of(client, file_id)
    others = await asyncio.to_thread(_uploads_of, store, file_id)
    named = [row for row in others if row["name"] == query]
    if upload is None and len(named) == 1:  # asked by name: that upload, not the last to write the manifest
        upload = await asyncio.to_thread(_upload, store, named[0]["upload_id"])
        run_id = upload.get("flow_run_id") or run_id
    return Shown(file_id, manifest, run_id, f"{ui_url()}/runs/flow-run/{run_id}" if run_id else None,
                 upload=upload, uploads=others)


def _upload(store: Store, query: str) -> dict[str, Any] | None:
    """The record of the upload ``query`` names, if it is one."""
    try:
        record = uploads.read(store, query)
    except ValueError:  # not an upload id
        return None
    return uploads.dumps(record) if record else None


def _uploads_of(store: Store, file_id: str) -> list[dict[str, Any]]:
    """A line for every upload of the content: id, name, parent upload, batch, status, shared."""
    rows = []
    for upload_id in uploads.uploads_of(store, file_id):
        record = uploads.read(store, upload_id)
        if record is not None:
            rows.append({k: getattr(record, k) for k in ("upload_id", "name", "parent", "batch", "status", "shared")})
    return rows
