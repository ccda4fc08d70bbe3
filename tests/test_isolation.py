"""Steps run in child processes: a crash, a hang or a memory hog costs only its own step."""

from __future__ import annotations

import os
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


def test_a_child_that_dies_while_starting_is_a_tool_crash():
    with ChildPool(1, warmup="tests.crashers:dead_start") as pool:
        with pytest.raises(ToolCrashed, match="code 3"):
            call(pool, "echo")
