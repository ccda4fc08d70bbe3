"""The mediator's rules: safe display names, cache keys, what a re-run executes again."""

from __future__ import annotations

import asyncio

import pytest
from prefect import flow

from blocks.storage import StorageConfig, original_key
from fileflow.ops.batch import ingest
from fileflow.engine.mediator import FileRef, Mediation, Runtime, Source, display_name, runtime, step_cache_key
from fileflow.settings import PipelineSettings


@pytest.mark.parametrize(
    "name, expected",
    [
        ("report.pdf", "report.pdf"),
        ("evil\nname\r.txt", "evil?name?.txt"),
        ("bell\x07\x1b[31m.txt", "bell??[31m.txt"),
        ("../../etc/passwd", "../../etc/passwd"),  # shown as given; never used as a path
        ("", "unnamed"),
    ],
)
def test_display_names_have_no_control_characters(name, expected):
    assert display_name(name) == expected


def test_long_names_are_cut_to_255_bytes_keeping_the_extension():
    name = display_name("ä" * 400 + ".docx")
    assert len(name.encode()) <= 255 and name.endswith("….docx")


def test_cache_key_depends_on_content_version_and_options_only():
    source = Source("originals/ab/abc", "jpg", "ab" * 32)
    key = step_cache_key("ocr", source, {"ocr_languages": "eng"})
    assert key == step_cache_key("ocr", Source("elsewhere", "png", "ab" * 32), {"ocr_languages": "eng"})
    assert key != step_cache_key("ocr", source, {"ocr_languages": "deu"})
    assert key != step_cache_key("ocr", Source("originals/cd/cd", "jpg", "cd" * 32), {"ocr_languages": "eng"})
    # derived inputs are told apart by the whole key of the step that made them
    made_by = "text_extract-1.0.0-"
    assert step_cache_key("language", Source("a", "txt", made_by + "0" * 32), {}) != step_cache_key(
        "language", Source("b", "txt", made_by + "1" * 32), {}
    )
    # a replacement module (FILEFLOW_CONVERTER_MODULES) never shares results with the built-in
    text = Source("originals/ab/abc", "txt", "ab" * 32)
    replaced = step_cache_key("text_extract", text, {}, "tests.extra_converters.faulty_text")
    assert replaced != step_cache_key("text_extract", text, {})
    assert step_cache_key("text_extract", text, {}, "text_extract") == step_cache_key("text_extract", text, {})


@flow(name="counting")
async def counting_flow(file: FileRef, module: str, counter: str):
    m = Mediation(file)
    await m.step("inspect")
    await m.step(module, options={"counter": counter})
    return await m.finish()


def test_rerun_skips_finished_steps_and_a_new_version_redoes_only_its_own(prefect_server, tmp_path):
    counter = tmp_path / "count.txt"
    storage = StorageConfig(basepath=str(tmp_path / "out"))
    sample = tmp_path / "a.txt"
    sample.write_text("some words to inspect " * 10)
    settings = PipelineSettings(child_processes=1)

    async def run(module: str) -> dict:
        with runtime(Runtime(settings, storage)) as rt:
            digest, size = ingest(sample, rt.store)
            file = FileRef(file_id=digest, name="a.txt", key=original_key(digest), size=size)
            return await counting_flow(file, module, str(counter))

    first = asyncio.run(run("tests.extra_converters.counter_v1"))
    second = asyncio.run(run("tests.extra_converters.counter_v1"))
    third = asyncio.run(run("tests.extra_converters.counter_v2"))
    assert counter.read_text().split() == ["1", "2"]  # v1 ran once, v2 once
    assert [s["cached"] for s in first["steps"]] == [False, False]
    assert [s["cached"] for s in second["steps"]] == [True, True]
    assert [s["cached"] for s in third["steps"]] == [True, False]
    assert third["metadata"]["tests.extra_converters.counter_v2"] == {"version": 2}


def test_only_failures_of_the_prefect_api_route_a_file_again():
    """flows/router.py routes a file again when the Prefect API broke its run (a server restart),
    never for the file's own failures."""
    import httpx
    from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError

    from fileflow.errors import StorageUnavailable, ToolCrashed
    from flows.router import _api_failure

    try:
        try:
            raise httpx.ConnectError("All connection attempts failed")
        except httpx.ConnectError as exc:
            raise ConcurrencySlotAcquisitionError("Unable to acquire concurrency slots on ['tag:x']") from exc
    except ConcurrencySlotAcquisitionError as exc:
        assert _api_failure(exc)
    assert _api_failure(httpx.ReadTimeout("slow"))
    assert not _api_failure(ToolCrashed("SIGSEGV"))
    assert not _api_failure(StorageUnavailable("S3 down"))
    assert not _api_failure(OSError("manifests is a file"))


def test_a_file_is_routed_again_after_each_wait_while_the_api_breaks_it(caplog):
    """flows/router.py's re-routing: API failures (raised, or a failed state) are routed again
    after each wait and logged; the last try's outcome stands once the waits are spent; the
    file's own failures, and files that have their manifest, are never routed again."""
    import httpx
    from prefect.states import Completed, Failed

    from fileflow.errors import ToolCrashed
    from flows.router import route_again_on_api_failures

    def routed(*outcomes, finished=False):
        calls: list[int] = []

        async def route(attempt: int):
            calls.append(attempt)
            outcome = outcomes[min(attempt, len(outcomes)) - 1]
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome

        result = asyncio.run(route_again_on_api_failures(route, lambda: finished, "f.txt", waits_s=(0.01, 0.02, 0.03)))
        return result, calls

    refused, broken = httpx.ConnectError("refused"), Failed(data=httpx.RemoteProtocolError("dropped"))
    with caplog.at_level("WARNING", logger="flows.router"):
        state, calls = routed(refused, broken, Completed())
    assert state.is_completed() and calls == [1, 2, 3]
    waits = [r.getMessage() for r in caplog.records if "routing it again" in r.getMessage()]
    assert waits == ["the Prefect API failed under 'f.txt' (ConnectError: refused); routing it again in 0.01 s",
                     "the Prefect API failed under 'f.txt' (RemoteProtocolError: dropped); routing it again in 0.02 s"]

    state, calls = routed(broken)
    assert state is broken and calls == [1, 2, 3, 4]  # three waits, four tries, then the failed state
    with pytest.raises(httpx.ConnectError):
        routed(refused)
    with pytest.raises(ToolCrashed):
        routed(ToolCrashed("SIGSEGV"))
    own = Failed(data=ToolCrashed("SIGSEGV"))
    assert routed(own) == (own, [1])
    assert routed(broken, finished=True) == (broken, [1])  # it has its manifest: nothing to route again


def test_each_run_context_sees_its_own_runtime(tmp_path):
    """The warm mediator holds uploads and a reprocessing job in one process: a runtime installed
    by one run (its lane, the converters it redoes) is never seen by another running alongside."""
    from fileflow.engine.mediator import current

    storage = StorageConfig(basepath=str(tmp_path))
    default = current()
    seen: dict[str, tuple[str, frozenset]] = {}

    async def job(name: str, rt: Runtime | None) -> None:
        async def look():
            await asyncio.sleep(0.01)
            seen[name] = (current().lane, current().refresh)

        if rt is None:
            await asyncio.gather(look())  # a task started by the run: it inherits the run's context
            return
        with runtime(rt):
            await asyncio.gather(look())

    async def side_by_side():
        reprocess = Runtime(PipelineSettings(), storage, lane="reprocess", refresh=frozenset({"ocr"}))
        await asyncio.gather(job("reprocess", reprocess), job("upload", None))

    asyncio.run(side_by_side())
    assert seen == {"reprocess": ("reprocess", frozenset({"ocr"})), "upload": ("upload", frozenset())}
    assert current() is default  # the process's own runtime is untouched after the job
