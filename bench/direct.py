"""The baseline of the efficiency benchmark: the same converter functions on the same files,
called directly in a process pool, with no orchestration at all (no Prefect, no flows, no task
runs, no manifests, no child supervision).

Each file goes through the same steps in the same order as its flow under ``flows/`` (inspect,
then the kind's steps, parallel where the flow is parallel; archive members as files of their
own); steps run by :func:`fileflow.engine.execute.run_step` in a ``ProcessPoolExecutor`` of
``--workers`` processes, with the same options as the mediator's. Office documents go through
a warm LibreOffice (unoserver) started here, as the embedded mode does.

Usage: ``python bench/direct.py FOLDER --out STORAGE [--workers N]``; prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from blocks.storage import StorageConfig, Store, derived_prefix, original_key
from converters.inspect import sha256_of
from fileflow.engine.execute import run_step
from fileflow.engine.step import StepRequest
from fileflow.settings import PipelineSettings


class Direct:
    def __init__(self, storage: StorageConfig, workers: int) -> None:
        self.storage = storage
        self.store = Store(storage)
        self.executor = ProcessPoolExecutor(workers)
        self.options = PipelineSettings().converter_options()
        self.office: dict = {}
        self.failed: list[str] = []
        self.steps = 0

    async def step(self, converter: str, file_id: str, key: str, ext: str, mime: str | None, depth: int,
                   extra: dict | None = None) -> dict | None:
        payload = StepRequest(converter=converter, storage=self.storage, input_key=key, input_ext=ext,
                              output_prefix=derived_prefix(file_id, converter),
                              options={**self.options, "mime": mime, "depth": depth, **(extra or {})})
        self.steps += 1
        try:
            outcome = await asyncio.get_running_loop().run_in_executor(self.executor, run_step, payload)
            return outcome.to_dict()
        except Exception as exc:  # a converter's typed failure: the file goes on without this step
            self.failed.append(f"{converter}: {type(exc).__name__}")
            return None

    @staticmethod
    def rendition(result: dict | None, role: str) -> tuple[str, str] | None:
        for r in (result or {}).get("renditions", ()):
            if r["role"] == role:
                return r["path"], r["path"].rsplit(".", 1)[-1]
        return None

    async def file(self, file_id: str, key: str, depth: int = 0) -> None:
        inspected = await self.step("inspect", file_id, key, "bin", None, depth)
        if inspected is None:
            return
        info = inspected["metadata"]
        kind, mime, ext = info["kind"], info["mime"], info["extension"]
        s = lambda conv, k=key, e=ext, extra=None: self.step(conv, file_id, k, e, mime, depth, extra)

        async def language(text_result):
            source = self.rendition(text_result, "text")
            if source:
                await s("language", *source)

        if kind == "image":
            _, ocr = await asyncio.gather(s("image_renditions"), s("ocr"))
            await language(ocr)
        elif kind in ("pdf", "office"):
            k, e = key, ext
            if kind == "office":
                pdf = self.rendition(await s("office_pdf", extra=self.office), "pdf")
                if pdf is None:
                    return
                k, e = pdf
            _, text = await asyncio.gather(s("pdf_preview", k, e), s("pdf_text", k, e))
            await language(text)
        elif kind == "text":
            await language(await s("text_extract"))
        elif kind == "drawing":
            await s("drawing_render")
        elif kind == "video":
            if await s("video_probe") is not None:
                await asyncio.gather(s("video_transcode"), s("video_poster"))
        elif kind == "archive":
            expanded = await s("archive_expand")
            gate = asyncio.Semaphore(PipelineSettings().max_active_members)

            async def member(entry):
                async with gate:
                    await self.file(entry["sha256"], entry["key"], depth + 1)

            await asyncio.gather(*(member(e) for e in (expanded or {}).get("members", ())))


async def run(files: list[Path], storage: StorageConfig, workers: int, concurrency: int) -> dict:
    from fileflow.engine.office import UnoServer

    direct = Direct(storage, workers)
    office = UnoServer()
    try:
        office.ensure_running()
        direct.office = {"unoserver_host": office.host, "unoserver_port": office.port}
        gate = asyncio.Semaphore(concurrency)

        async def one(path: Path) -> None:
            async with gate:
                digest = sha256_of(path)
                direct.store.put_file(path, original_key(digest))  # the upload, as `fileflow process` does
                await direct.file(digest, original_key(digest))

        await asyncio.gather(*(one(p) for p in files))
    finally:
        office.stop()
        direct.executor.shutdown()
    return {"files": len(files), "steps": direct.steps, "failed_steps": direct.failed}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=PipelineSettings().child_processes)
    parser.add_argument("--concurrency", type=int, default=PipelineSettings().max_active_files,
                        help="files in progress at once (as FILEFLOW_MAX_ACTIVE_FILES)")
    args = parser.parse_args()
    started = time.perf_counter()
    files = sorted(p for p in args.folder.rglob("*") if p.is_file())
    storage = StorageConfig(kind="local", basepath=str(args.out.resolve()))
    report = asyncio.run(run(files, storage, args.workers, args.concurrency))
    report["wall_s"] = round(time.perf_counter() - started, 3)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
