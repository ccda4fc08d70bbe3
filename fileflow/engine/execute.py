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


def run_step(request: StepRequest) -> StepOutcome:
    started = time.perf_counter()
    if request.storage is None:
        raise ToolError("a step request reached its child without storage")
    store = _store(request.storage)
    module = converters.load(request.converter)
    with tempfile.TemporaryDirectory(prefix="fileflow-step-", dir=request.scratch_dir) as tmp:
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
