"""The mediator's machinery, shared by every flow under ``flows/``.

A flow describes *which* steps a file goes through; this module is *how* a step is run:

- :class:`FileRef` is what a flow knows about a file (never its bytes).
- :func:`run_step` is the one Prefect task: it sends the step to a warm child process
  (:mod:`fileflow.engine.isolation`), which fetches the input from storage, converts and stores the
  outputs (:mod:`fileflow.engine.execute`). Its result is persisted in storage and cached on the
  input's content hash, the converter's version and its options, so processing the same file
  again skips finished steps and a new converter version redoes only its own step. Transient
  failures (crash, timeout, storage) are retried with backoff; corrupt or unsupported input is
  not.
- :class:`Mediation` records each step of one file and, at the end, writes its manifest and
  a markdown artifact for the Prefect UI.
- :class:`Runtime` holds what one mediator process shares: settings, storage, the child pool,
  the services converters declare (:mod:`fileflow.engine.services`) and the progress tracker.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
import unicodedata
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

from prefect import task
from prefect.artifacts import acreate_markdown_artifact
from prefect.context import FlowRunContext, TagsContext, TaskRunContext
from pydantic import BaseModel

import converters
from blocks.storage import StorageConfig, Store, derived_prefix, make_block, manifest_key, original_key
from fileflow.errors import FileflowError, ToolError, is_transient
from fileflow.engine import uploads
from fileflow.engine.events import emit_terminal, enqueue_webhook
from fileflow.engine.isolation import ChildPool
from fileflow.engine.locks import Bounded, held, lock_manager
from fileflow.engine.manifest import Manifest, RenditionRecord, StepError, StepRecord
from fileflow.engine.progress import Tracker
from fileflow.engine.services import Services
from fileflow.engine.step import StepRequest
from fileflow.engine.steering import Steering
from fileflow.names import RESULTS_BLOCK_PREFIX, STEP_TASK_NAME
from fileflow.settings import NotifySettings, PipelineSettings, StorageSettings

# ---------------------------------------------------------------------------------------
# What a flow knows about a file
# ---------------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def display_name(name: str, limit: int = 255) -> str:
    """A user-supplied name made safe to show and log: no control characters, <= 255 bytes.

    The name is only ever displayed and recorded; storage keys come from content hashes.
    """
    name = unicodedata.normalize("NFC", _CONTROL.sub("?", name)).strip() or "unnamed"
    if len(name.encode()) <= limit:
        return name
    stem, dot, ext = name.rpartition(".")
    ext = f".{ext}" if dot and len(ext.encode()) <= 16 else ""
    budget = limit - len(ext.encode()) - len("…".encode())
    short = (stem if ext else name).encode()[:budget].decode(errors="ignore")
    return f"{short}…{ext}"


class FileRef(BaseModel):
    file_id: str
    name: str
    key: str
    size: int
    mime: str | None = None
    kind: str = "unknown"
    ext: str = "bin"
    parent: str | None = None
    depth: int = 0
    upload_id: str | None = None
    """This arrival's upload (:mod:`fileflow.engine.uploads`); None: content processed outside an
    upload (``fileflow reprocess``), which writes the manifest but no upload record."""
    parent_upload: str | None = None
    batch: str | None = None
    callback_url: str | None = None
    options: dict[str, Any] = {}
    """The upload's own options (``ocr_languages``, ``preview_sizes``): over the settings, for the
    steps that read them; archive members inherit them."""

    @property
    def token(self) -> str:
        """Identifies this occurrence of the file (the same bytes may arrive twice in a batch)."""
        return f"{self.parent or ''}|{self.name}|{self.file_id}"


@dataclass(frozen=True)
class Source:
    """The input of a step: the original or another step's output."""

    key: str
    ext: str
    digest: str
    """Content identity: the SHA-256 of an original, the cache key of the step that made a derived file."""


# ---------------------------------------------------------------------------------------
# What one mediator process shares
# ---------------------------------------------------------------------------------------


@dataclass
class Runtime:
    pipeline: PipelineSettings
    storage: StorageConfig
    tracker: Tracker = field(default_factory=Tracker)
    pool: ChildPool | None = None
    _store: Store | None = None
    _results: Any = None
    lane: str = "upload"
    """'upload', or 'reprocess': lower priority (reprocess queues on pools, niced children here)."""
    refresh: frozenset[str] = frozenset()
    """Converters whose cached results are ignored (``fileflow reprocess --redo``)."""
    run_scope: str = ""
    """Added to pool runs' idempotency keys, so a reprocessing job does not re-attach to old runs."""
    results_slug: str | None = None
    """``<block type>/<name>`` of the results block, once :meth:`results_block` saved it."""
    _saving: tuple[asyncio.AbstractEventLoop, asyncio.Task] | None = None
    notify: NotifySettings = field(default_factory=NotifySettings)
    """the global webhook (FILEFLOW_NOTIFY_*): every terminal event goes to the callback outbox"""
    _locks: Any = None

    def __post_init__(self) -> None:
        if self.pool is None:
            # reprocessing's children yield the CPU to the uploads' (nice 10)
            self.pool = ChildPool(self.pipeline.child_processes, nice=10 if self.lane == "reprocess" else 0)
        self.steering = Steering()
        self.services = Services(self.pipeline)

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.storage)
        return self._store

    async def results_block(self):
        """Where step results are persisted: ``results/`` beside the files they describe.

        Prefect needs a result storage block saved server-side; it is saved once per process
        under a name derived from the storage location (idempotent). The files that start
        together wait for the one save instead of each saving it again.
        """
        if self._results is None:
            loop = asyncio.get_running_loop()
            if self._saving is None or self._saving[0] is not loop or self._saving[1].done():
                self._saving = (loop, loop.create_task(self._save_results_block()))
            await asyncio.shield(self._saving[1])
        return self._results

    async def _save_results_block(self) -> None:
        if self.storage.kind == "local":
            config = replace(self.storage, basepath=str(Path(self.storage.basepath) / "results"))
        else:
            config = replace(self.storage, prefix=f"{self.storage.prefix.strip('/')}/results".lstrip("/"))
        block = make_block(config)
        name = RESULTS_BLOCK_PREFIX + hashlib.sha256(config.describe().encode()).hexdigest()[:12]
        # one process at a time reads or writes it: on a fresh PostgreSQL database, six at once
        # collided on the block's name and on the server's encryption key (UniqueViolation)
        async with held(self.locks, f"{name}-save", hold_s=120, wait_s=120):
            self._results = await _saved_once(block, name)
        self.results_slug = f"{block.get_block_type_slug()}/{name}"

    @property
    def locks(self):
        """The lock manager of this process's step locks (:mod:`fileflow.engine.locks`)."""
        if self._locks is None:
            self._locks = lock_manager(self.pipeline.lock_redis_url, self.pipeline.lock_dir)
        return self._locks

    def close(self) -> None:
        self.services.close()
        self.pool.close()


async def _saved_once(block, name: str):
    """``block`` as saved under ``name``, written only when the server does not hold it already.

    Every mediator and worker process needs this block, and many start at once (a stack, a
    burst of pool steps): loading is a read, so they do not collide, and an unchanged block is
    not written again (an S3 block would also leave a new anonymous credentials document behind
    on every save). A save that loses a race with another process's save of the same name
    loads the winner's, which holds the same values (the name is derived from them).
    """
    kind = type(block)
    try:
        saved = await kind.aload(name)
    except ValueError:  # no block document of that name yet
        saved = None
    if saved is not None and saved.model_dump() == block.model_dump():
        return saved
    try:
        await block.asave(name, overwrite=True)
        return block
    except Exception as exc:  # another process saved it between our read and our write
        try:
            return await kind.aload(name)
        except Exception:
            raise exc from None


_default: Runtime | None = None
_default_lock = threading.Lock()
#: the runtime of the run in this context: a process may hold runs of several runtimes at once
#: (the warm mediator runs uploads and a reprocessing job side by side, each with its own lane)
_bound: ContextVar[Runtime | None] = ContextVar("fileflow_runtime", default=None)


def current() -> Runtime:
    """The runtime of the run in this context; else the process's default, built from the
    environment on first use."""
    global _default
    rt = _bound.get()
    if rt is not None:
        return rt
    with _default_lock:
        if _default is None:
            _default = Runtime(PipelineSettings(), StorageSettings().config())
        return _default


@contextmanager
def runtime(rt: Runtime) -> Iterator[Runtime]:
    """Install ``rt`` for the code run in this context (and the tasks it starts); closed at the end."""
    token = _bound.set(rt)
    try:
        yield rt
    finally:
        rt.close()
        _bound.reset(token)


# ---------------------------------------------------------------------------------------
# The one step task
# ---------------------------------------------------------------------------------------


def step_cache_key(converter: str, source: Source, options: dict[str, Any], module: str | None = None) -> str:
    """``<converter>-<version>-<digest of (input identity, options)>``.

    The input identity is the whole SHA-256 of an original or the whole cache key of the step
    that made a derived input; options that only say where a service listens are never part
    of it (:mod:`fileflow.engine.services` adds them after), since they do not change the output. A replacement ``module`` (``converter_modules``) has
    its own version and is part of the identity: its results are never mistaken for the
    built-in's, nor the other way round.
    """
    spec = converters.implementation(converter, module).SPEC
    parts = [source.digest, options] + ([module] if module and module != converter else [])
    identity = json.dumps(parts, sort_keys=True, default=str)
    return f"{spec.name}-{spec.version}-{hashlib.sha256(identity.encode()).hexdigest()[:32]}"


def _retry_if_transient(task, task_run, state) -> bool:
    return isinstance(state.data, BaseException) and is_transient(state.data)


#: every step task run's task key starts so (Prefect's key is the function's name and a hash
#: of its code): how ``fileflow status`` tells steps from other task runs (a member's run stands as one)
STEP_TASK_KEY_PREFIX = "_run_step-"


@task(name=STEP_TASK_NAME)
async def _run_step(
    converter: str, file_id: str, token: str, label: str, cache_key: str, source: Source, options: dict
) -> dict:
    rt = current()
    # operators' limits and pauses (fileflow/ops/limits.py): wait here, before any capacity is taken
    async with rt.steering.converter_slot(converter, on_wait=lambda why: rt.tracker.stage(token, f"{converter} (waiting)")):
        rt.tracker.stage(token, converter)
        return await _execute_step(rt, converter, file_id, label, cache_key, source, options)


async def _execute_step(
    rt: Runtime, converter: str, file_id: str, label: str, cache_key: str, source: Source, options: dict
) -> dict:
    module = rt.pipeline.module_of(converter)
    spec = converters.implementation(converter, module).SPEC
    on_pool = rt.pipeline.placement_of(converter) == "pool"
    request = StepRequest(
        converter=module,  # a pool's worker chooses its module from its own settings
        input_key=source.key, input_ext=source.ext, output_prefix=derived_prefix(file_id, converter),
        options=options, scratch_dir=str(rt.pipeline.scratch_dir) if rt.pipeline.scratch_dir else None,
    )
    if on_pool:  # the pool's worker provides the services and its own storage
        from fileflow.engine.pools import run_on_pool

        outcome = await run_on_pool(
            converter,
            label,
            request,
            store=rt.store,
            cache_key=cache_key,
            file_id=file_id,
            attempt=TaskRunContext.get().task_run.run_count,
            timeout_s=rt.pipeline.pool_queue_timeout_s + spec.timeout_s,
            poll_s=rt.pipeline.pool_poll_s,
            work_queue_name="reprocess" if rt.lane == "reprocess" else None,
            scope=rt.run_scope,
        )
        return outcome.to_dict()
    if spec.services:  # where they listen: added after the cache key was made
        request = request.with_options(await asyncio.to_thread(rt.services.options, spec.services))
    outcome = await rt.pool.acall(
        "fileflow.engine.execute:run_step",
        replace(request, storage=rt.storage),
        timeout_s=spec.timeout_s,
        memory_mb=spec.memory_mb,
        gate=rt.services.gate(spec.services),
    )
    return outcome.to_dict()


async def step_task(converter: str, rt: Runtime, cache_key: str):
    """The step task configured for one converter: retries, backoff, persisted cached result."""
    from prefect.cache_policies import CacheKeyFnPolicy

    spec = converters.implementation(converter, rt.pipeline.module_of(converter)).SPEC
    delay = rt.pipeline.retry_delay_s
    delays = [delay * 2**i for i in range(max(spec.retries, 1))]
    # the lock on the step's cache key outlives every attempt (each up to its timeout, a pool
    # step also waiting for a worker, and started again when its run's process is lost) and the
    # waits between them; then it expires, so a holder that died never blocks the file's
    # resumed run for good
    from fileflow.engine.pools import INFRA_RESTARTS

    starts = (spec.retries + 1) * (INFRA_RESTARTS + 1 if rt.pipeline.placement_of(converter) == "pool" else 1)
    hold_s = starts * (spec.timeout_s + rt.pipeline.pool_queue_timeout_s) + sum(delays) + 60
    # SERIALIZABLE: the same file processed twice at once runs the step once; the second run
    # waits for the first one's result and takes it from the cache (fileflow/engine/locks.py)
    policy = CacheKeyFnPolicy(cache_key_fn=lambda *_: cache_key).configure(
        isolation_level="SERIALIZABLE", lock_manager=Bounded(rt.locks, hold_s))
    return _run_step.with_options(
        task_run_name=converter,
        retries=spec.retries,
        retry_delay_seconds=delays,
        retry_condition_fn=_retry_if_transient,
        cache_policy=policy,
        refresh_cache=converter in rt.refresh,
        persist_result=True,
        result_storage=await rt.results_block(),
        result_serializer="json",
    )


# ---------------------------------------------------------------------------------------
# One file's steps and manifest
# ---------------------------------------------------------------------------------------


async def _exception_of(state) -> BaseException:
    try:
        data = await state.aresult(raise_on_failure=False)
    except Exception as exc:  # the failure itself could not be read back
        data = exc
    if isinstance(data, BaseException):
        return data
    return ToolError(state.message or f"step ended {state.name}")


class Mediation:
    """Runs the steps of one file in a flow and assembles its manifest."""

    def __init__(self, file: FileRef) -> None:
        self.file = file
        self.rt = current()
        self.steps: list[StepRecord] = []
        self._renditions: dict[int, list[RenditionRecord]] = {}  # by step, so order is stable
        self.metadata: dict[str, Any] = {}
        self.text: str | None = None
        self.language: str | None = None
        self.language_confidence: float | None = None
        self.members: list[FileRef] = []
        """Files found inside this one by its steps (archive members): each is processed as a
        file of its own, linked to this one as its parent."""
        self.children: list[str] = []
        self._made_by: dict[str, str] = {}  # a step's cache key -> its converter, for the inputs of later steps

    @property
    def original(self) -> Source:
        return Source(self.file.key, self.file.ext, self.file.file_id)

    def source_of(self, result: dict[str, Any] | None, role: str) -> Source | None:
        """The rendition of ``role`` a step made, as the input of a later step."""
        if result is None:
            return None
        for rendition in result["renditions"]:
            if rendition["role"] == role:
                ext = rendition["path"].rsplit(".", 1)[-1]
                return Source(rendition["path"], ext, result["cache_key"])
        return None

    async def step(
        self,
        converter: str,
        source: Source | None = None,
        options: dict[str, Any] | None = None,
        *,
        needs: tuple[Any, ...] = (),
    ) -> dict[str, Any] | None:
        """Run one converter on the file (or on ``source``); None if it failed or was skipped.

        ``needs`` are results of earlier steps this one depends on: if any of them is None
        (failed), this step is recorded as skipped.
        """
        index = len(self.steps)
        made_by = self._made_by.get(source.digest) if source is not None else None
        self.steps.append(StepRecord(name=converter, converter_version=None, status="skipped", input=made_by))
        if any(n is None for n in needs):
            return None
        source = source or self.original
        opts = self.options_for(converter, options)
        key = step_cache_key(converter, source, opts, self.rt.pipeline.module_of(converter))
        task = await step_task(converter, self.rt, key)
        # untagged: Prefect's engine asks the server for a concurrency slot of every tag a task
        # run carries (a write transaction each, limit or not); on the embedded SQLite database
        # those writes met others, and every "database is locked" cost a 2 s client retry. The
        # step is found by its name (the converter) and task key; its flow runs keep the tags
        with TagsContext(current_tags=set()):
            state = await task(
                converter, self.file.file_id, self.file.token, self.file.name, key, source, opts, return_state=True
            )
        if state.is_completed():
            result = await state.aresult()
            result["cache_key"] = key
            result["cached"] = state.name == "Cached"
            self._record(index, converter, result, cached=state.name == "Cached")
            return result
        exc = await _exception_of(state)
        self.fail(converter, exc, index=index)
        return None

    def options_for(self, converter: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
        """What ``converter`` is given, and so what its cache key holds: the file's MIME type,
        of the run-wide options (settings, then the upload's own) only those its spec
        ``reads``, then the flow's ``options`` for this step."""
        reads = converters.implementation(converter, self.rt.pipeline.module_of(converter)).SPEC.reads
        shared = {**self.rt.pipeline.converter_options(), **self.file.options, "depth": self.file.depth}
        return {"mime": self.file.mime, **{k: v for k, v in shared.items() if k in reads}, **(options or {})}

    def _record(self, index: int, converter: str, result: dict[str, Any], *, cached: bool) -> None:
        self.steps[index] = StepRecord(
            name=converter,
            converter_version=result["converter_version"],
            status="completed",
            duration_s=result["duration_s"],
            cached=cached,
            input=self.steps[index].input,
        )
        if result.get("cache_key"):
            self._made_by[result["cache_key"]] = converter
        if result["metadata"]:
            self.metadata[converter] = result["metadata"]
        self._renditions[index] = [RenditionRecord(**r) for r in result["renditions"]]
        for rendition in result["renditions"]:
            if rendition["role"] == "text":
                self.text = rendition["path"]
        if result.get("language"):
            self.language = result["language"]
            self.language_confidence = result["language_confidence"]
        for entry in result.get("members") or ():
            name = f"{self.file.name}/{entry['name']}"
            upload = uploads.member_upload_id(self.file.upload_id, name) if self.file.upload_id else None
            self.members.append(FileRef(file_id=entry["sha256"], name=display_name(name), key=original_key(entry["sha256"]),
                                        size=entry["size"], parent=self.file.file_id, depth=self.file.depth + 1,
                                        upload_id=upload, parent_upload=self.file.upload_id, batch=self.file.batch,
                                        options=self.file.options))

    def fail(self, converter: str, exc: BaseException, *, index: int | None = None) -> None:
        """Record a failed step (``index`` of a reserved slot, else a new one)."""
        etype = type(exc).__name__ if isinstance(exc, FileflowError) else "ToolError"
        try:
            version = converters.implementation(converter, self.rt.pipeline.module_of(converter)).SPEC.version
        except Exception:
            version = None
        record = StepRecord(
            name=converter,
            converter_version=version,
            status="failed",
            error=StepError(type=etype, message=str(exc) or etype),
            input=self.steps[index].input if index is not None else None,
        )
        if index is None:
            self.steps.append(record)
        else:
            self.steps[index] = record

    async def finish(self, run_id: str | None = None) -> dict[str, Any]:
        """Write the manifest to storage, leave it as an artifact on the run, emit the file's
        terminal event (:mod:`fileflow.engine.events`), report progress. ``run_id``: the file's
        run, when this is called outside it (the resumer ending a run that cannot start)."""
        failed = any(s.status == "failed" for s in self.steps)
        manifest = Manifest(
            file_id=self.file.file_id,
            name=self.file.name,
            size=self.file.size,
            mime=self.file.mime,
            kind=self.file.kind,  # type: ignore[arg-type]
            status="failed" if failed else "completed",
            steps=self.steps,
            renditions=[r for i in sorted(self._renditions) for r in self._renditions[i]],
            text=self.text,
            language=self.language,
            language_confidence=self.language_confidence,
            metadata=self.metadata,
            children=self.children,
            parent=self.file.parent,
        )
        data = manifest.model_dump(mode="json")
        body = json.dumps(data, indent=2, ensure_ascii=False).encode()
        key = manifest_key(self.file.file_id)
        if not (self._only_the_run_broke() and await asyncio.to_thread(_completed_in, self.rt.store, key)):
            await asyncio.to_thread(self.rt.store.put_bytes, body, key)
        # else the run broke, not the content: the manifest another run completed for the same bytes
        # (another upload of them) is every such upload's, and stays; this upload alone ends failed
        if FlowRunContext.get() is not None:  # the artifact belongs on the file's run
            await acreate_markdown_artifact(
                key=f"manifest-{self.file.file_id[:32]}",
                markdown=manifest.markdown(),
                description=f"fileflow manifest of {self.file.name}",
            )
        run_id = run_id or _flow_run_id()
        if self.file.upload_id:
            record = uploads.finished(await asyncio.to_thread(self.upload_record), data, run_id)
            await asyncio.to_thread(uploads.write, self.rt.store, record)
            # tells the upload service: the event, the webhook and the upload's own callback
            await asyncio.to_thread(uploads.announce, self.rt.store, self.rt.notify, record, data, run_id)
        else:
            event_id = emit_terminal(data, self.rt.storage)  # docs/events.md
            # the global webhook, through the callback outbox (signed, retried): a storage failure
            # here fails the run, which is run again, rather than losing the answer
            await asyncio.to_thread(enqueue_webhook, self.rt.store, self.rt.notify, data, event_id=event_id,
                                    flow_run_id=run_id)
        self.rt.tracker.finished(self.file.token, data)
        return data

    def _only_the_run_broke(self) -> bool:
        """Whether this file's steps are only the failed ``router`` step: its run broke (crashed
        past its resumes, the API or storage failed it) before any step spoke for the content."""
        return [(s.name, s.status) for s in self.steps] == [("router", "failed")]

    def upload_record(self) -> uploads.UploadRecord:
        """The upload's record in storage, or a new one (an upload the router was told of alone)."""
        f = self.file
        record = uploads.read(self.rt.store, f.upload_id)
        if record is None:
            record = uploads.received(f.upload_id, name=f.name, file_id=f.file_id, size=f.size, parent=f.parent_upload,
                                      parent_file_id=f.parent, batch=f.batch, callback_url=f.callback_url,
                                      options=f.options)
        return record


def _completed_in(store: Store, key: str) -> bool:
    return store.exists(key) and json.loads(store.get_bytes(key)).get("status") == "completed"


def _flow_run_id() -> str | None:
    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx is not None and ctx.flow_run is not None else None
