"""What a step does, inside the child process: fetch, convert, store.

The mediator never opens a file's bytes: it sends :func:`run_step` a
:class:`~fileflow.engine.step.StepRequest` naming the converter, the storage, the input key and
the options; the child downloads the input into a
private scratch folder, runs the converter, uploads every output under the file's own derived
prefix (archive members under their own content-addressed original keys) and returns a
:class:`~fileflow.engine.step.StepOutcome`: what it stored. Nothing outside that scratch folder and those keys is
ever written.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from functools import lru_cache
from pathlib import Path

import converters
from blocks.storage import StorageConfig, Store, original_key
from converters.inspect import sha256_of
from fileflow.engine.step import StepOutcome, StepRequest
from fileflow.errors import ToolError


@lru_cache(maxsize=4)
def _store(config: StorageConfig) -> Store:
    return Store(config)


def _inside(root: Path, relative: str) -> Path:
    """A converter's output path, refused if it points outside the converter's out folder."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        raise ToolError(f"converter returned an output outside its folder or missing: {relative!r}")
    return path


#: a step's scratch folder: ``<prefix><pid of the child>-<random>``, so that one left by a child
#: that died (killed at its timeout, a segfault, its worker killed) can be told from a live one
SCRATCH_PREFIX = "fileflow-step-"
_swept: set[str] = set()


def sweep_stale_scratch(folder: str | None) -> list[str]:
    """Remove the scratch folders in ``folder`` (the temporary directory by default) whose child
    is dead; the names removed. Run once per child and folder, before its first step."""
    root = folder or tempfile.gettempdir()
    removed = []
    for entry in os.scandir(root):
        pid = entry.name.removeprefix(SCRATCH_PREFIX).split("-", 1)[0]
        if not entry.name.startswith(SCRATCH_PREFIX) or not pid.isdigit() or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            os.kill(int(pid), 0)
            continue  # alive (or another user's): not ours to remove
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(entry.name)
    return removed


def prepare_step(request: StepRequest) -> None:
    """What a child does once per converter and storage, before the step's clock starts
    (:mod:`fileflow.engine.isolation`): stale scratch swept, the storage client built, the
    converter's module imported. A warm child finds them done."""
    if request.scratch_dir not in _swept:
        _swept.add(request.scratch_dir)
        sweep_stale_scratch(request.scratch_dir)
    if request.storage is None:
        raise ToolError("a step request reached its child without storage")
    _store(request.storage).connect()
    converters.load(request.converter)


def run_step(request: StepRequest) -> StepOutcome:
    started = time.perf_counter()
    prepare_step(request)  # done already when a child pool ran it first; at once otherwise
    store = _store(request.storage)
    module = converters.load(request.converter)
    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=request.scratch_dir) as tmp:
        src = Path(tmp) / f"input.{request.input_ext}"
        store.get_file(request.input_key, src)
        out = Path(tmp) / "out"
        out.mkdir()
        result = module.convert(src, out, dict(request.options))
        renditions = []
        for rendition in result.renditions:
            local = _inside(out, rendition.path)
            key = f"{request.output_prefix}/{rendition.path}"
            rendition.bytes = store.put_file(local, key)
            rendition.path = key
            renditions.append(rendition)
        members = []
        for member in result.members:
            local = _inside(out, member.path)
            digest = sha256_of(local)
            size = store.put_file(local, original_key(digest))
            members.append({"name": member.name, "sha256": digest, "key": original_key(digest), "size": size})
    return StepOutcome(
        converter=module.SPEC.name, converter_version=module.SPEC.version,
        duration_s=round(time.perf_counter() - started, 3),
        renditions=tuple(dict(r.__dict__) for r in renditions), metadata=result.metadata,
        language=result.language, language_confidence=result.language_confidence, members=tuple(members),
    )


run_step.prepare = prepare_step  # type: ignore[attr-defined]  # run by the child pool outside the step's timeout
