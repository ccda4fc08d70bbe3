"""``fileflow api``: the upload API an upload service calls (FastAPI on uvicorn).

- ``POST /uploads`` with the bytes as the body (``application/octet-stream``, the name in
  ``?name=``): streamed to a spool file while hashed, never held in memory, refused with
  ``413`` past ``FILEFLOW_API_MAX_UPLOAD_BYTES``, then stored as ``originals/<sha[:2]>/<sha>``.
  Or a JSON body ``{"key": ...}`` naming an object already written to fileflow's storage.
  Either way with an optional ``Idempotency-Key`` header (the upload's id; else fileflow makes
  one), ``callback_url`` and per-upload options (``ocr_languages``, ``preview_sizes``). It
  writes the upload's record, starts the ``process-file`` deployment exactly as
  ``fileflow submit`` does (:func:`fileflow.ops.submit.start_upload`) and answers ``202`` with
  the upload id and its status URL. The same idempotency key again answers with the same upload
  and run (``409`` if it came with other bytes).
- ``GET /uploads/{id}``: the upload's record, its stage (``queued``, the step it is at,
  ``completed``/``failed``) and, once it ended, the content's manifest.
- ``GET /healthz`` (alive) and ``GET /readyz`` (Prefect and storage answer): no token needed.
- OpenAPI at ``/openapi.json``, docs at ``/docs``.

Every other call needs ``Authorization: Bearer <token>`` with a token of ``FILEFLOW_API_TOKENS``:
none is ``401``, a wrong one ``403``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from blocks.storage import Store, check_key, original_key
from fileflow.engine import uploads
from fileflow.engine.mediator import display_name
from fileflow.names import ROUTER_DEPLOYMENT
from fileflow.ops.submit import start_upload
from fileflow.settings import ApiSettings

#: fileflow's own prefixes: an upload named by storage key must be the caller's object
OWN_PREFIXES = ("uploads/", "uploads-by-file/", "manifests/", "results/", "derived/")
#: a JSON body (a storage key and a few fields) is never larger
MAX_JSON_BYTES = 64 * 1024


class StoredObject(BaseModel):
    """An upload whose bytes the caller already wrote to fileflow's storage."""

    model_config = ConfigDict(extra="forbid")
    key: str = Field(description="the object's key in fileflow's storage (relative to its prefix)")
    name: str | None = Field(None, description="the upload's name; default: the key's last part")
    idempotency_key: str | None = Field(None, description="the upload's id (else the Idempotency-Key header)")
    callback_url: str | None = Field(None, description="http(s) URL told of the upload's terminal status")
    options: dict[str, Any] = Field(default_factory=dict, description="per-upload options: ocr_languages, preview_sizes")


class Accepted(BaseModel):
    upload_id: str
    file_id: str
    size: int
    status: str
    status_url: str
    flow_run_id: str
    repeated: bool = Field(description="this idempotency key was already known: the same upload and run")


class UploadStatus(BaseModel):
    upload: dict[str, Any] = Field(description="the upload's record (docs/manifest.md, upload records)")
    stage: str = Field(description="queued, the step(s) running, routing, completed or failed")
    status: Literal["received", "processing", "completed", "failed"]
    manifest: dict[str, Any] | None = Field(description="the content's manifest, once the upload ended")


def _problem(status: int, detail: str, **headers: str) -> HTTPException:
    return HTTPException(status_code=status, detail=detail, headers=headers or None)


def create_app(settings: ApiSettings, store: Store) -> FastAPI:
    """The upload API over ``store``, talking to the Prefect API of the environment."""
    if not settings.tokens:
        raise ValueError("the upload API needs at least one bearer token: set FILEFLOW_API_TOKENS, "
                         "e.g. '[\"<a long random string>\"]'")
    tokens = [t.get_secret_value().encode() for t in settings.tokens]
    spool = settings.spool_dir

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from prefect.client.orchestration import get_client

        async with get_client() as client:  # one client for every request (each new one builds an SSL context)
            app.state.prefect = client
            app.state.deployment_id = None
            yield

    app = FastAPI(title="fileflow upload API", version="1", lifespan=lifespan,
                  description="Upload a file, learn when it can be shown. See docs/api.md.")
    bearer = HTTPBearer(auto_error=False, description="a token of FILEFLOW_API_TOKENS")

    def authorised(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise _problem(401, "missing bearer token (Authorization: Bearer <token>)", **{"WWW-Authenticate": "Bearer"})
        given = credentials.credentials.encode()
        if not any(hmac.compare_digest(given, t) for t in tokens):
            raise _problem(403, "this token is not accepted")

    async def deployment_id(request: Request):
        if request.app.state.deployment_id is None:
            from prefect.exceptions import ObjectNotFound

            try:
                deployment = await request.app.state.prefect.read_deployment_by_name(ROUTER_DEPLOYMENT)
            except ObjectNotFound:
                raise _problem(503, f"the deployment {ROUTER_DEPLOYMENT} does not exist on the Prefect server: "
                                    "run `python -m deployments.setup` (fileflow up does)") from None
            request.app.state.deployment_id = deployment.id
        return request.app.state.deployment_id

    def status_url(request: Request, upload_id: str) -> str:
        base = settings.public_url.rstrip("/") if settings.public_url else str(request.base_url).rstrip("/")
        return f"{base}/uploads/{upload_id}"

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        problems = []
        try:
            failure = await request.app.state.prefect.api_healthcheck()
            if failure is not None:
                problems.append(f"Prefect API: {failure}")
        except Exception as exc:
            problems.append(f"Prefect API: {exc}")
        try:
            await asyncio.to_thread(store.exists, "uploads/.ready")
        except Exception as exc:
            problems.append(f"storage: {exc}")
        return JSONResponse({"status": "not ready" if problems else "ready", "problems": problems},
                            status_code=503 if problems else 200)

    @app.post(
        "/uploads", status_code=202, response_model=Accepted, dependencies=[Depends(authorised)],
        responses={400: {"description": "no name or no bytes"}, 401: {"description": "no token"},
                   403: {"description": "wrong token"}, 404: {"description": "no object at that storage key"},
                   409: {"description": "the idempotency key was used for other bytes"},
                   413: {"description": "larger than FILEFLOW_API_MAX_UPLOAD_BYTES"},
                   415: {"description": "neither application/octet-stream nor application/json"},
                   422: {"description": "a bad option, upload id, callback URL or key"},
                   503: {"description": "Prefect or its process-file deployment is not there"}},
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": StoredObject.model_json_schema()},
        }}},
    )
    async def create_upload(
        request: Request,
        name: Annotated[str | None, Query(description="the upload's name (required with a body of bytes)")] = None,
        callback_url: Annotated[str | None, Query(description="http(s) URL told of the terminal status")] = None,
        ocr_languages: Annotated[str | None, Query(description="e.g. deu, eng+fra, auto")] = None,
        preview_sizes: Annotated[str | None, Query(description="long sides in px, e.g. 160,480")] = None,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", description="the upload's id")] = None,
    ) -> JSONResponse:
        """Accept one upload: its bytes as the body, or the key of an object already in storage."""
        kind = request.headers.get("content-type", "application/octet-stream").split(";")[0].strip().lower()
        options = {k: v for k, v in (("ocr_languages", ocr_languages), ("preview_sizes", preview_sizes)) if v is not None}
        stored: StoredObject | None = None
        if kind == "application/json":
            stored = await _stored_object(request)
            options = {**stored.options, **options}
            name = name or stored.name or stored.key.rsplit("/", 1)[-1]
            idempotency_key = idempotency_key or stored.idempotency_key
            callback_url = callback_url or stored.callback_url
        elif kind != "application/octet-stream":
            raise _problem(415, f"send the bytes as application/octet-stream, or JSON naming a storage key; not {kind}")
        elif not name:
            raise _problem(400, "name the upload: POST /uploads?name=<file name>")
        try:
            upload_id = uploads.check_upload_id(idempotency_key) if idempotency_key else uploads.new_upload_id()
            options = uploads.check_options(options)
            callback_url = uploads.check_callback_url(callback_url)
        except ValueError as exc:
            raise _problem(422, str(exc)) from None
        name = display_name(name)
        if stored is not None:
            file_id, size = await _adopt(stored.key)
        else:
            file_id, size = await _receive(request)
        record = await asyncio.to_thread(uploads.read, store, upload_id)
        repeated = record is not None
        if record is not None and record.file_id != file_id:
            raise _problem(409, f"upload {upload_id} was made with other bytes ({record.file_id[:12]}…); "
                                "use a new Idempotency-Key for a new upload")
        if record is None:
            record = uploads.received(upload_id, name=name, file_id=file_id, size=size, callback_url=callback_url,
                                      options=options)
            await asyncio.to_thread(uploads.write, store, record)
        run = await start_upload(  # idempotent: the same upload id gives the same run
            request.app.state.prefect, await deployment_id(request), key=original_key(file_id), file_id=file_id,
            name=record.name, size=record.size, batch_id=None, upload_id=upload_id,
            callback_url=record.callback_url, options=record.options,
        )
        await asyncio.to_thread(_note_run, upload_id, str(run.id))
        body = Accepted(upload_id=upload_id, file_id=file_id, size=size, status=record.status,
                        status_url=status_url(request, upload_id), flow_run_id=str(run.id), repeated=repeated)
        return JSONResponse(body.model_dump(), status_code=202, headers={"Location": body.status_url})

    @app.get("/uploads/{upload_id}", response_model=UploadStatus, dependencies=[Depends(authorised)],
             responses={404: {"description": "no such upload"}, 422: {"description": "not an upload id"}})
    async def upload_status(upload_id: str, request: Request) -> UploadStatus:
        """The upload's stage and status, and its manifest once it ended."""
        try:
            uploads.check_upload_id(upload_id)
        except ValueError as exc:
            raise _problem(422, str(exc)) from None
        record = await asyncio.to_thread(uploads.read, store, upload_id)
        if record is None:
            raise _problem(404, f"no upload {upload_id}")
        manifest = None
        if record.status in uploads.TERMINAL:
            stage = record.status
            if await asyncio.to_thread(store.exists, record.manifest):
                manifest = json.loads(await asyncio.to_thread(store.get_bytes, record.manifest))
        else:
            stage = await _stage(request.app.state.prefect, record.flow_run_id)
        return UploadStatus(upload=uploads.dumps(record), stage=stage, status=record.status, manifest=manifest)

    async def _stored_object(request: Request) -> StoredObject:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_JSON_BYTES:
                raise _problem(413, f"a JSON body is at most {MAX_JSON_BYTES} bytes; send bytes as application/octet-stream")
        try:
            return StoredObject.model_validate_json(body)
        except ValidationError as exc:
            raise _problem(422, "bad JSON body: " + "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())) from None

    async def _receive(request: Request) -> tuple[str, int]:
        """The body into a spool file while hashed, then into storage: (sha256, size)."""
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > settings.max_upload_bytes:
            raise _problem(413, f"{declared} bytes is more than the {settings.max_upload_bytes} accepted")
        digest, size = hashlib.sha256(), 0
        with tempfile.NamedTemporaryFile(dir=spool, prefix="fileflow-upload-") as spooled:
            async for chunk in request.stream():
                size += len(chunk)
                if size > settings.max_upload_bytes:
                    raise _problem(413, f"the upload is larger than the {settings.max_upload_bytes} bytes accepted")
                digest.update(chunk)
                spooled.write(chunk)
            if size == 0:
                raise _problem(400, "the request has no bytes: send the file as the body")
            spooled.flush()
            file_id = digest.hexdigest()
            key = original_key(file_id)
            if not await asyncio.to_thread(store.exists, key):
                await asyncio.to_thread(store.put_file, Path(spooled.name), key)
        return file_id, size

    async def _adopt(key: str) -> tuple[str, int]:
        """An object the caller wrote to storage, hashed and kept as an original: (sha256, size)."""
        try:
            check_key(key)
        except ValueError as exc:
            raise _problem(422, str(exc)) from None
        if key.startswith(OWN_PREFIXES):
            raise _problem(422, f"{key!r} is under fileflow's own prefixes ({', '.join(OWN_PREFIXES)}); "
                                "write uploads elsewhere, e.g. incoming/")
        if not await asyncio.to_thread(store.exists, key):
            raise _problem(404, f"no object {key!r} in fileflow's storage ({store.config.describe()})")
        with tempfile.TemporaryDirectory(dir=spool, prefix="fileflow-adopt-") as tmp:
            path = await asyncio.to_thread(store.get_file, key, Path(tmp) / "object")
            size = path.stat().st_size
            if size > settings.max_upload_bytes:
                raise _problem(413, f"{key!r} has {size} bytes, more than the {settings.max_upload_bytes} accepted")
            file_id = await asyncio.to_thread(_sha256_of, path)
            if key != original_key(file_id) and not await asyncio.to_thread(store.exists, original_key(file_id)):
                await asyncio.to_thread(store.put_file, path, original_key(file_id))
        return file_id, size

    def _note_run(upload_id: str, run_id: str) -> None:
        """The run on a record that has none yet (the router records it too once it starts)."""
        record = uploads.read(store, upload_id)
        if record is not None and record.flow_run_id is None and record.status == "received":
            uploads.write(store, record.model_copy(update={"flow_run_id": run_id}))

    return app


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


async def _stage(client, flow_run_id: str | None) -> str:
    """Where an unfinished upload is: queued, the step(s) running, or its run's state."""
    from uuid import UUID

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterState
    from prefect.client.schemas.filters import TaskRunFilterStateType
    from prefect.client.schemas.objects import StateType

    if flow_run_id is None:
        return "queued"
    run = await client.read_flow_run(UUID(flow_run_id))
    if run.state is None or run.state.type in (StateType.SCHEDULED, StateType.PENDING):
        return "queued"
    if run.state.type != StateType.RUNNING:
        return run.state.name.lower()
    steps = await client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
        task_run_filter=TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.RUNNING]))),
    )
    return ", ".join(sorted(t.name for t in steps)) or "routing"


def main(argv: list[str] | None = None) -> None:
    """``python -m fileflow.server.api --host H --port P``: serve the API (``fileflow api`` does the same)."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    serve(args.host, args.port)


def serve(host: str, port: int) -> None:
    import uvicorn

    from fileflow.settings import StorageSettings

    app = create_app(ApiSettings(), Store(StorageSettings().config()))
    uvicorn.run(app, host=host, port=port, log_level="info", proxy_headers=True)


if __name__ == "__main__":
    main()
