"""Steering: limits and pauses set through Prefect (API, `prefect` CLI, `fileflow limits`) are
honoured by running steps without a restart."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect import flow

import converters
from blocks.storage import StorageConfig, original_key
from fileflow.engine.steering import REFRESH_S, Steering
from fileflow.ops import limits
from fileflow.ops.batch import ingest
from fileflow.engine.mediator import FileRef, Mediation, Runtime, runtime
from fileflow.engine.progress import Tracker
from fileflow.settings import PipelineSettings

FILEFLOW = Path(sys.executable).parent / "fileflow"
ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, api: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_API_URL": api, "COLUMNS": "250"}
    return subprocess.run([str(FILEFLOW), *args], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)


async def gcl(name: str):
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await client.read_global_concurrency_limit_by_name(name)


async def pool_paused(name: str) -> bool:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return (await client.read_work_pool(name)).is_paused


async def _remove_fileflow_limits() -> None:
    """What these tests created: later tests in the session run as the embedded default does, without
    limits (on SQLite every slot taken is one more write)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolUpdate

    async with get_client() as client:
        for gcl in await client.read_global_concurrency_limits(limit=200):
            if gcl.name.startswith("fileflow-"):
                await client.delete_global_concurrency_limit_by_name(gcl.name)
        for pool in await client.read_work_pools():
            if pool.is_paused and pool.name.startswith("converter-"):
                await client.update_work_pool(pool.name, WorkPoolUpdate(is_paused=False))


@pytest.fixture(scope="module", autouse=True)
def _clean_up(prefect_server):
    yield
    asyncio.run(_remove_fileflow_limits())


def test_setup_creates_queues_and_limits_once_and_keeps_an_operators_values(prefect_server):
    from prefect.client.orchestration import get_client

    from deployments.setup import ensure_pools, ensure_steering, pool_names
    from fileflow.names import K8S_POOLS

    asyncio.run(ensure_pools())
    asyncio.run(ensure_steering())  # whatever an earlier test left: from here on it must be a no-op
    asyncio.run(limits.set_limit("ocr", 3))
    assert asyncio.run(ensure_steering()) == ([], [])
    assert asyncio.run(gcl("fileflow-converter-ocr")).limit == 3

    async def queues():
        async with get_client() as client:
            return {p: {q.name: q for q in await client.read_work_queues(work_pool_name=p)}
                    for p in [*pool_names(), *K8S_POOLS]}  # the Kubernetes video pool too

    for pool, by_name in asyncio.run(queues()).items():
        reprocess = by_name["reprocess"]
        assert reprocess.priority > by_name["default"].priority, pool  # served after uploads
        assert reprocess.concurrency_limit == limits.REPROCESS_QUEUE_LIMIT
    names = {spec.name for spec in limits.default_limits()}
    assert names == {limits.REPROCESS_FILES, limits.REPROCESS_RATE}  # uploads and converters: no cap until set


def test_pause_reprocess_pauses_the_queue_of_every_pool_the_kubernetes_one_included(prefect_server):
    """`fileflow limits pause reprocess` reaches the reprocess queue of the Kubernetes video pool
    too (a reprocessing job's video steps go there when prefect.yaml points video_transcode at it)."""
    from prefect.client.orchestration import get_client

    from fileflow.names import K8S_POOLS
    from deployments.setup import ensure_pools, pool_names

    asyncio.run(ensure_pools())

    async def reprocess_paused() -> dict[str, bool]:
        async with get_client() as client:
            return {p: (await client.read_work_queue_by_name("reprocess", work_pool_name=p)).is_paused
                    for p in [*pool_names(), *K8S_POOLS]}

    try:
        said = asyncio.run(limits.set_paused("reprocess", True))
        assert all(asyncio.run(reprocess_paused()).values()), said
        assert f"on {len(pool_names()) + len(K8S_POOLS)} pools" in said
    finally:
        asyncio.run(limits.set_paused("reprocess", False))
    assert not any(asyncio.run(reprocess_paused()).values())


def test_cli_sets_pauses_resumes_and_shows_through_prefect(prefect_server):
    assert cli("limits", "set", "pdf_text", "2", api=prefect_server).returncode == 0
    assert asyncio.run(gcl("fileflow-converter-pdf_text")).limit == 2
    done = cli("limits", "set", "reprocess-rate", "0.5", api=prefect_server)
    assert done.returncode == 0, done.stderr
    rate = asyncio.run(gcl(limits.REPROCESS_RATE))
    assert rate.slot_decay_per_second == 0.5 and rate.limit == 1

    assert cli("limits", "pause", "video_transcode", api=prefect_server).returncode == 0
    assert asyncio.run(pool_paused("converter-video_transcode"))
    shown = cli("limits", "show", api=prefect_server)
    assert shown.returncode == 0, shown.stderr
    rows = show_rows(shown.stdout)
    assert rows["video_transcode"][2] == "yes" and rows["ocr"][2] in ("no", "-")
    assert rows["reprocess-rate"][0] == "0.5/s" and rows["pdf_text"][0] == "2"
    assert cli("limits", "resume", "video_transcode", api=prefect_server).returncode == 0
    assert not asyncio.run(pool_paused("converter-video_transcode"))

    # what Prefect's own CLI changes, fileflow shows
    subprocess.run([sys.executable, "-m", "prefect", "gcl", "update", "fileflow-converter-pdf_text", "--limit", "5"],
                   env={**os.environ, "PREFECT_API_URL": prefect_server}, check=True, capture_output=True, timeout=120)
    assert show_rows(cli("limits", "show", api=prefect_server).stdout)["pdf_text"][0] == "5"

    # lifting the cap deletes the limit: nothing limits pdf_text any more, and saying so twice is fine
    lifted = cli("limits", "unset", "pdf_text", api=prefect_server)
    assert lifted.returncode == 0 and "no cap" in lifted.stderr, lifted.stdout + lifted.stderr
    assert show_rows(cli("limits", "show", api=prefect_server).stdout)["pdf_text"][0] == "none"
    again = cli("limits", "unset", "pdf_text", api=prefect_server)
    assert again.returncode == 0 and "there was none" in again.stderr


def show_rows(text: str) -> dict[str, list[str]]:
    """The rows of `fileflow limits show`'s table: target -> its other cells."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) == 5:
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.parametrize(
    "args, message",
    [
        (("set", "ocr", "0"), "pause ocr"),
        (("set", "ocr", "1.5"), "whole number"),
        (("set", "nosuch", "2"), "unknown target"),
        (("pause", "active-files"), "unknown target"),
        (("set", "reprocess-rate", "0"), "pause reprocess"),
        (("unset", "nosuch"), "unknown target"),
    ],
)
def test_cli_refuses_what_it_cannot_apply(prefect_server, args, message):
    result = cli("limits", *args, api=prefect_server)
    assert result.returncode == 2
    assert message in " ".join(result.stderr.split())


@flow(name="steered")
async def steered_flow(file: FileRef, converter: str, options: dict):
    m = Mediation(file)
    await m.step(converter, options=options)
    return await m.finish()


async def _stage_of(tracker: Tracker, label: str, want: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stages = {lbl: stage for lbl, stage, _ in tracker.snapshot()["in_flight"]}
        if stages.get(label) == want:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{label} never reached stage {want!r}: {tracker.snapshot()['in_flight']}")


def test_steps_finding_a_stale_snapshot_at_once_share_one_read(prefect_server):
    """Hundreds of steps held by a paused converter wake together: one read of Prefect serves
    them all (each read is several API calls), and the next stale moment reads again."""
    steering = Steering(refresh_s=0.2)

    async def wake(n: int):
        return await asyncio.gather(*(steering.snapshot() for _ in range(n)))

    first = asyncio.run(wake(200))
    assert len({id(snap) for snap in first}) == 1
    time.sleep(0.3)
    second = asyncio.run(wake(200))  # a new event loop, as the embedded runtime outlives its loops
    assert len({id(snap) for snap in second}) == 1 and second[0] is not first[0]
    assert second[0].taken > first[0].taken


def test_local_step_waits_while_paused_or_at_limit_zero_and_runs_when_released(prefect_server, tmp_path):
    """Local placement has no work pool to hold it: the mediator reads the pause itself."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    storage = StorageConfig(basepath=str(tmp_path / "out"))
    intervals = tmp_path / "intervals.txt"
    sample = tmp_path / "held.txt"
    sample.write_text("held back by an operator " * 5)
    name = "fileflow-converter-overlap"

    async def scenario():
        tracker = Tracker()
        with runtime(Runtime(PipelineSettings(child_processes=1), storage, tracker)) as rt:
            digest, size = ingest(sample, rt.store)
            file = FileRef(file_id=digest, name="held.txt", key=original_key(digest), size=size)
            tracker.started(file.token, file.name)
            await limits.set_paused_pool("converter-tests.extra_converters.overlap", True)
            run = asyncio.create_task(steered_flow(file, "tests.extra_converters.overlap",
                                                   {"intervals": str(intervals), "hold_s": 0}))
            await _stage_of(tracker, "held.txt", "tests.extra_converters.overlap (waiting)")
            assert not intervals.exists() and not run.done()
            # an operator sets the limit to 0 in the UI, then resumes the pool: still held
            async with get_client() as client:
                await client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=0))
            await limits.set_paused_pool("converter-tests.extra_converters.overlap", False)
            await asyncio.sleep(3 * REFRESH_S)  # give the mediator time it must not use
            assert not intervals.exists() and not run.done()
            async with get_client() as client:
                await client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=1))
            manifest = await run
            return manifest

    from prefect.client.orchestration import get_client as gc
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    async def create():
        async with gc() as client:
            try:
                await client.delete_global_concurrency_limit_by_name(name)
            except Exception:
                pass
            await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))

    asyncio.run(create())
    manifest = asyncio.run(scenario())
    assert manifest["status"] == "completed"
    assert len(intervals.read_text().splitlines()) == 1


def _max_overlap(intervals: Path) -> int:
    events = []
    for line in intervals.read_text().splitlines():
        start, end, _ = line.split()
        events += [(float(start), 1), (float(end), -1)]
    running = peak = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        running += delta
        peak = max(peak, running)
    return peak


@pytest.mark.parametrize("limit, hold, expect", [
    (None, {"hold_s": 60, "peers": 3}, lambda peak: peak == 3),  # each step waits (60 s at most) for the other two
    (1, {"hold_s": 2}, lambda peak: peak == 1),
])
def test_converter_limit_bounds_steps_running_at_once(prefect_server, tmp_path, limit, hold, expect):
    """Three files at once on three children: without a limit their steps run at the same time,
    with 1 they never do. (Without a limit, a fixed 2 s step once missed its peers in CI: the
    three flows had started more than 2 s apart on a busy session server.)"""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    name = "fileflow-converter-overlap"
    intervals = tmp_path / "intervals.txt"

    async def setup():
        async with get_client() as client:
            try:
                await client.delete_global_concurrency_limit_by_name(name)
            except Exception:
                pass
            if limit is not None:
                await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=limit))

    async def scenario():
        storage = StorageConfig(basepath=str(tmp_path / "out"))
        with runtime(Runtime(PipelineSettings(child_processes=3), storage)) as rt:
            files = []
            for i in range(3):
                sample = tmp_path / f"f{i}.txt"
                sample.write_text(f"file number {i} " * 5)
                digest, size = ingest(sample, rt.store)
                files.append(FileRef(file_id=digest, name=sample.name, key=original_key(digest), size=size))
            return await asyncio.gather(*(
                steered_flow(f, "tests.extra_converters.overlap", {"intervals": str(intervals), **hold})
                for f in files
            ))

    asyncio.run(setup())
    manifests = asyncio.run(scenario())
    assert all(m["status"] == "completed" for m in manifests)
    peak = _max_overlap(intervals)
    assert expect(peak), peak
