"""Item 4, upload to first preview, on a running distributed stack.

For a JPEG, a DOCX and a 10-second video, ``--n`` distinct files each (fresh content, so no
cache hit), one upload at a time: the clock starts before ``fileflow submit``'s call (the
upload into storage and the ``process-file`` run) and stops when the first ``preview-*.jpg``
of the file exists in storage (checked every 10 ms on the stack's local storage). The next
upload waits until the file's manifest is written, so uploads do not overlap. The kinds are
interleaved (JPEG, DOCX, video, JPEG, ...) so machine noise falls on all of them alike.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import stats

PREVIEW_STEP = {"jpeg": "image_renditions", "docx": "pdf_preview", "video": "video_poster"}


def make(kind: str, folder: Path, i: int) -> Path:
    from fileflow.testing.samplegen import corpus, media

    folder.mkdir(parents=True, exist_ok=True)
    if kind == "jpeg":
        return corpus.image(folder / f"preview-{i:04d}.jpg", 5000 + i)
    if kind == "docx":
        return corpus.office(folder / f"preview-{i:04d}.docx", 5000 + i)
    return media.video(folder / f"preview-{i:04d}.mp4", width=320 + 16 * (i % 20), height=240, seconds=10.0,
                       fps=24 + i % 6)


async def one(path: Path, kind: str, store, storage: Path, timeout_s: float) -> dict:
    from blocks.storage import derived_prefix, manifest_key
    from converters.inspect import sha256_of
    from fileflow.ops.submit import submit

    digest = sha256_of(path)
    folder = storage / derived_prefix(digest, PREVIEW_STEP[kind])
    started = time.perf_counter()
    await submit([str(path)], store)
    submitted = time.perf_counter() - started
    preview = None
    while time.perf_counter() - started < timeout_s:
        if folder.exists() and any(folder.glob("preview-*.jpg")):
            preview = time.perf_counter() - started
            break
        await asyncio.sleep(0.01)
    while time.perf_counter() - started < timeout_s and not (storage / manifest_key(digest)).exists():
        await asyncio.sleep(0.05)
    return {"kind": kind, "submit_s": round(submitted, 3), "first_preview_s": round(preview, 3) if preview else None,
            "manifest_s": round(time.perf_counter() - started, 3)}


def run(work: Path, stack, *, n: int, timeout_s: float = 600) -> dict:
    from blocks.storage import StorageConfig, Store

    storage = stack.storage_path.resolve()
    store = Store(StorageConfig(kind="local", basepath=str(storage)))
    kinds = ("jpeg", "docx", "video")
    files = {kind: [make(kind, work / "preview-files", 1000 * k + i) for i in range(n)]
             for k, kind in enumerate(kinds)}

    async def go() -> list[dict]:
        out = []
        for i in range(n):
            for kind in kinds:
                out.append(await one(files[kind][i], kind, store, storage, timeout_s))
                print(f"    first preview {kind}: {out[-1]['first_preview_s']} s", flush=True, file=sys.stderr)
        return out

    raw = asyncio.run(go())
    import json

    placement = json.loads(stack.env().get("FILEFLOW_PLACEMENT") or "{}")
    summary = {"n": n, "local_steps": sorted(c for c, where in placement.items() if where == "local"), "raw": raw}
    for kind in kinds:
        times = [r["first_preview_s"] for r in raw if r["kind"] == kind]
        summary[kind] = stats([t for t in times if t is not None])
        summary[kind]["missing"] = sum(t is None for t in times)
        summary[kind]["manifest"] = stats([r["manifest_s"] for r in raw if r["kind"] == kind])
    return summary


def main() -> None:
    """Standalone: ``fileflow up`` on a fresh PostgreSQL database (the stack's own placement),
    then ``--n`` uploads of each kind; ``make bench`` runs the same on its shared stack."""
    import argparse
    import json

    from common import stack

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=Path(".bench/first-preview"))
    parser.add_argument("--n", type=int, default=5, help="uploads of each kind")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    work = args.work.resolve()
    with stack(work / "home", workers=1, db_name="bench_first_preview", storage=work / "storage") as s:
        figures = run(work, s, n=args.n)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps({k: v for k, v in figures.items() if k != "raw"}, indent=2))


if __name__ == "__main__":
    main()
