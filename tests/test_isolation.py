"""Steps run in child processes: a crash, a hang or a memory hog costs only its own step."""

from __future__ import annotations

import os
from pathlib import Path
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from fileflow.errors import CorruptInput, LimitExceeded, ToolCrashed, ToolTimeout
from fileflow.engine.isolation import ChildPool


@pytest.fixture
def pool():
    with ChildPool(2) as p:
        yield p


def call(pool, name, payload=None, timeout_s=20.0, memory_mb=1024):
    return pool.call(f"tests.crashers:{name}", payload, timeout_s=timeout_s, memory_mb=memory_mb)


def test_children_are_warm_and_reused(pool):
    first = call(pool, "echo", {"n": 1})
    second = call(pool, "echo", {"n": 2})
    assert first["payload"] == {"n": 1} and second["payload"] == {"n": 2}
    assert first["pid"] == second["pid"] != os.getpid()


def test_segfault_is_a_tool_crash_and_the_child_is_replaced(pool):
    before = call(pool, "echo")["pid"]
    with pytest.raises(ToolCrashed, match="SIGSEGV"):
        call(pool, "segfault")
    after = call(pool, "echo")["pid"]
    assert after != before or before not in pool.pids()


def test_hang_is_stopped_at_its_timeout_with_what_it_spawned(pool, tmp_path):
    marker = tmp_path / "grandchild.pid"
    started = time.monotonic()
    with pytest.raises(ToolTimeout, match="1.5 s timeout"):
        call(pool, "hang", {"spawn": str(marker)}, timeout_s=1.5)
    assert time.monotonic() - started < 10
    grandchild = int(marker.read_text())
    for _ in range(50):  # the whole process group was killed, not only the child
        if not os.path.exists(f"/proc/{grandchild}") or "Z" in open(f"/proc/{grandchild}/stat").read().split()[2]:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"process {grandchild} spawned by the hung step is still running")
    assert call(pool, "echo")["payload"] is None  # the pool still works


def test_memory_hog_hits_its_limit(pool):
    with pytest.raises(LimitExceeded, match="512 MiB"):
        call(pool, "hog", memory_mb=512)
    assert call(pool, "echo")["pid"]


def test_typed_errors_cross_the_process_boundary(pool):
    with pytest.raises(CorruptInput, match="not what they claim"):
        call(pool, "corrupt")
    assert len(pool.pids()) >= 1  # a refused input does not cost the child


def test_a_crash_does_not_touch_steps_running_beside_it():
    with ChildPool(3) as pool, ThreadPoolExecutor(6) as ex:
        good = [ex.submit(call, pool, "echo", {"i": i}) for i in range(4)]
        bad = ex.submit(call, pool, "segfault")
        assert [f.result()["payload"]["i"] for f in good] == [0, 1, 2, 3]
        with pytest.raises(ToolCrashed):
            bad.result()


def test_close_leaves_no_child_behind():
    pool = ChildPool(2)
    call(pool, "echo")
    pids = pool.pids()
    pool.close()
    time.sleep(0.2)
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2]


def test_starting_a_child_does_not_count_against_the_step_timeout():
    """A replacement child that is slow to start (under load: a cold import of tens of seconds)
    must not make an innocent step time out; found by the hostile batch (tests/test_hostile.py)."""
    with ChildPool(1, warmup="tests.crashers:slow_start") as pool:
        assert call(pool, "echo", {"n": 1}, timeout_s=1)["payload"] == {"n": 1}  # start: 3 s
        with pytest.raises(LimitExceeded):
            call(pool, "hog", memory_mb=512)  # the child is replaced
        assert call(pool, "echo", {"n": 2}, timeout_s=1)["payload"] == {"n": 2}


def test_a_targets_prepare_runs_first_and_does_not_count_against_the_step_timeout():
    """run_step's prepare (the converter's import, the storage client) is paid by a new child
    before its step's clock starts: a 2 s prepare under a 1 s step timeout."""
    with ChildPool(1) as pool:
        first = call(pool, "prepared_echo", {"n": 1}, timeout_s=1)
        assert first["prepared"] is True
        assert call(pool, "prepared_echo", {"n": 2}, timeout_s=1)["pid"] == first["pid"]  # the child stays warm


def test_a_prepare_that_hangs_is_stopped_at_its_own_timeout_and_the_child_replaced():
    with ChildPool(1, prepare_timeout_s=0.5) as pool:
        before = call(pool, "echo")["pid"]
        with pytest.raises(ToolTimeout, match="not ready to start within 0.5 s"):
            call(pool, "prepared_echo", {"prepare_s": 30}, timeout_s=60)
        assert _gone(before)
        assert call(pool, "echo")["pid"] != before


def test_a_prepare_that_refuses_ends_the_call_with_its_error_and_keeps_the_child():
    with ChildPool(1) as pool:
        before = call(pool, "echo")["pid"]
        with pytest.raises(CorruptInput, match="refused before the step started"):
            call(pool, "never_run")
        assert call(pool, "echo")["pid"] == before


def test_a_new_childs_first_step_does_not_pay_its_converters_import_inside_the_timeout(tmp_path):
    """The real step: run_step's prepare imports the converter (2 s here) and builds the storage
    client before the step's 1 s timeout starts; the step is then the converter's work alone."""
    from blocks.storage import StorageConfig, Store, original_key
    from converters.inspect import sha256_of
    from fileflow.engine.step import StepRequest
    from tests.extra_converters import slow_import

    storage = StorageConfig(basepath=str(tmp_path / "storage"))
    sample = tmp_path / "words.txt"
    sample.write_text("A few words that the text step normalises for the test. " * 3)
    digest = sha256_of(sample)
    Store(storage).put_file(sample, original_key(digest))
    request = StepRequest(converter="tests.extra_converters.slow_import", input_key=original_key(digest),
                          input_ext="txt", output_prefix=f"derived/{digest}/text_extract", storage=storage,
                          scratch_dir=str(tmp_path))
    with ChildPool(1) as pool:
        started = time.monotonic()
        outcome = pool.call("fileflow.engine.execute:run_step", request, timeout_s=slow_import.SPEC.timeout_s,
                            memory_mb=1024)
        assert time.monotonic() - started > slow_import.IMPORT_S  # the import was paid, outside the timeout
    assert outcome.converter == "text_extract" and outcome.renditions
    assert (tmp_path / "storage" / outcome.renditions[0]["path"]).is_file()


def test_a_child_that_dies_while_starting_is_a_tool_crash():
    with ChildPool(1, warmup="tests.crashers:dead_start") as pool:
        with pytest.raises(ToolCrashed, match="code 3"):
            call(pool, "echo")


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] == "Z"  # a zombie waits for its reaper: it runs no more
    except FileNotFoundError:
        return True


def test_a_killed_parent_takes_its_children_and_what_they_spawned_along(tmp_path):
    """The process holding the pool (a worker, a mediator) is SIGKILLed mid-step: its child and
    the child's own child (ffmpeg, here `sleep`) die too instead of running on behind it."""
    import signal
    import subprocess
    import sys

    marker = tmp_path / "grandchild.pid"
    script = (
        "import threading, time\n"
        "from fileflow.engine.isolation import ChildPool\n"
        "pool = ChildPool(1)\n"
        f"threading.Thread(target=pool.call, args=('tests.crashers:hang', {{'spawn': {str(marker)!r}}}),"
        " kwargs={'timeout_s': 600, 'memory_mb': 1024}, daemon=True).start()\n"
        "time.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1])
    try:
        for _ in range(600):
            if marker.exists() and marker.read_text():
                break
            time.sleep(0.1)
        else:
            pytest.fail("the step never started")
        grandchild = int(marker.read_text())
        child = int(open(f"/proc/{grandchild}/stat").read().split()[3])  # its parent: the pool's child
        assert not _gone(child) and not _gone(grandchild)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        for _ in range(150):
            if _gone(child) and _gone(grandchild):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the child {child} or what it spawned ({grandchild}) outlived the killed holder")
    finally:
        holder.kill()


def test_a_dead_childs_scratch_folder_is_swept_before_the_next_first_step(tmp_path):
    """A step killed outright leaves its scratch folder (input, half an output); the next child's
    first step in that folder removes it. A live child's folder, and others', are left alone."""
    import subprocess

    from fileflow.engine.execute import SCRATCH_PREFIX, sweep_stale_scratch

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"{SCRATCH_PREFIX}{dead.pid}-abc"
    (stale / "out").mkdir(parents=True)
    (stale / "input.mp4").write_bytes(b"\0" * 1024)
    alive = tmp_path / f"{SCRATCH_PREFIX}{os.getpid()}-def"
    alive.mkdir()
    other = tmp_path / "fileflow-step-notapid"
    other.mkdir()
    assert sweep_stale_scratch(str(tmp_path)) == [stale.name]
    assert not stale.exists() and alive.exists() and other.exists()


def test_a_pool_closed_under_running_steps_ends_them_crashed_and_closes_cleanly():
    """The warm worker closes its pool while a step outlives the grace period: the step's own
    thread and close() then kill the same child at once. Both must get through without closing
    the child's pipe twice (which raised EBADF in close(), or could close a reused descriptor)."""
    import threading

    for _ in range(8):
        pool = ChildPool(3)
        outcomes: list[BaseException] = []
        barrier = threading.Barrier(4)

        def step():
            barrier.wait()
            try:
                call(pool, "hang", timeout_s=30)
            except BaseException as exc:  # noqa: BLE001 - the test inspects what each step ended with
                outcomes.append(exc)

        threads = [threading.Thread(target=step) for _ in range(3)]
        for t in threads:
            t.start()
        barrier.wait()
        deadline = time.monotonic() + 20
        while len(pool._busy) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # the children are inside the hanging call
        pool.close()
        for t in threads:
            t.join(30)
        assert [type(e) for e in outcomes] == [ToolCrashed] * 3, outcomes
