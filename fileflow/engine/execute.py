"""What a step does, inside the child process: fetch, convert, store.

The mediator never opens a file's bytes: it sends :func:`run_step` a payload naming the
converter, the storage, the input key and the options; the child downloads the input into a
private scratch folder, runs the converter, uploads every output under the file's own derived
prefix (archive members under their own content-addressed original keys) and returns a
JSON-able description of what it stored. Nothing outside that scratch folder and those keys is
ever written.
"""

from __future__ import annotations

import tempfile
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import converters
from blocks.storage import StorageConfig, Store, original_key
from converters.inspect import sha256_of
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


def run_step(payload: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    store = _store(StorageConfig(**payload["storage"]))
    module = converters.load(payload["converter"])
    with tempfile.TemporaryDirectory(prefix="fileflow-step-", dir=payload.get("scratch_dir")) as tmp:
        src = Path(tmp) / f"input.{payload['input_ext']}"
        store.get_file(payload["input_key"], src)
        out = Path(tmp) / "out"
        out.mkdir()
        result = module.convert(src, out, payload.get("options") or {})
        renditions = []
        for rendition in result.renditions:
            local = _inside(out, rendition.path)
            key = f"{payload['output_prefix']}/{rendition.path}"
            rendition.bytes = store.put_file(local, key)
            rendition.path = key
            renditions.append(rendition)
        members = []
        for member in result.members:
            local = _inside(out, member.path)
            digest = sha256_of(local)
            size = store.put_file(local, original_key(digest))
            members.append({"name": member.name, "sha256": digest, "key": original_key(digest), "size": size})
    outcome = result.to_dict()
    outcome["renditions"] = [r.__dict__ for r in renditions]
    outcome["members"] = members
    outcome["converter"] = module.SPEC.name
    outcome["converter_version"] = module.SPEC.version
    outcome["duration_s"] = round(time.perf_counter() - started, 3)
    return outcome
