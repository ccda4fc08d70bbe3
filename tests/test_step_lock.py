"""Step caching with a lock (fileflow/engine/locks.py): the same file processed twice at the
same time, by two processes, runs each step once; the second run takes the first one's result.

On the embedded default's lock files, and on Redis (127.0.0.1:6379, the tests' database) where
it runs: skipped with the reason without it, failed in CI. The converter counts its executions
in a file (tests/extra_converters/slow_counter.py) and takes 1.5 s, so both runs are in the step
at once unless the lock makes one wait.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect import flow

from blocks.storage import StorageConfig, original_key
from fileflow.engine.mediator import FileRef, Mediation, Runtime, runtime
from fileflow.ops.batch import ingest
from fileflow.settings import PipelineSettings

ROOT = Path(__file__).resolve().parents[1]
COUNTER = "tests.extra_converters.slow_counter"


@flow(name="step-lock")
async def twice_flow(file: FileRef, counter: str):
    m = Mediation(file)
    await m.step(COUNTER, options={"counter": counter})
    return await m.finish()


def main(sample: str, storage: str, counter: str, out: str) -> None:
    """One process's run of the file (what each of the two processes does)."""
    settings = PipelineSettings(child_processes=1)

    async def run() -> dict:
        with runtime(Runtime(settings, StorageConfig(basepath=storage))) as rt:
            digest, size = ingest(Path(sample), rt.store)
            file = FileRef(file_id=digest, name="same.txt", key=original_key(digest), size=size)
            return await twice_flow(file, counter)

    Path(out).write_text(json.dumps(asyncio.run(run()), default=str))


def _twice_at_once(api_url: str, tmp_path: Path, env_extra: dict[str, str]) -> tuple[list[str], list[dict]]:
    sample = tmp_path / "same.txt"
    sample.write_text("the same bytes, uploaded twice at once " * 10)
    counter = tmp_path / "count.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FILEFLOW_"))}
    env.update({"PREFECT_API_URL": api_url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_HOME": str(tmp_path / "prefect-home"), **env_extra})
    procs = []
    for i in range(2):
        code = (f"from tests.test_step_lock import main; main({str(sample)!r}, {str(tmp_path / 'out')!r}, "
                f"{str(counter)!r}, {str(tmp_path / f'result-{i}.json')!r})")
        procs.append(subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for p, output in zip(procs, outputs):
        assert p.returncode == 0, output[-3000:]
    results = [json.loads((tmp_path / f"result-{i}.json").read_text()) for i in range(2)]
    return counter.read_text().split(), results


def _check(counts: list[str], results: list[dict]) -> None:
    assert counts == ["1"], f"the step ran {len(counts)} times"
    assert all(r["status"] == "completed" for r in results), results
    cached = sorted(step["cached"] for r in results for step in r["steps"])
    assert cached == [False, True]  # one ran it, the other took its result


def test_the_same_file_twice_at_once_runs_the_step_once_on_lock_files(prefect_server, tmp_path):
    counts, results = _twice_at_once(prefect_server, tmp_path, {"FILEFLOW_LOCK_DIR": str(tmp_path / "locks")})
    _check(counts, results)


def test_the_same_file_twice_at_once_runs_the_step_once_on_redis(prefect_server, redis_url, tmp_path):
    counts, results = _twice_at_once(prefect_server, tmp_path, {"FILEFLOW_LOCK_REDIS_URL": redis_url})
    _check(counts, results)


def test_steps_of_one_converter_on_different_files_do_not_share_a_lock_file(tmp_path):
    """Prefect's lock files are named ``Path(key).with_suffix(".lock")``: a cache key with the
    converter's version in it (``inspect-1.1.0-<digest>``) would be cut at its last dot, and every
    inspect step on the machine would wait for every other one."""
    from prefect.locking.filesystem import FileSystemLockManager

    from fileflow.engine.locks import Bounded

    locks = Bounded(FileSystemLockManager(lock_files_directory=tmp_path), hold_s=60)
    assert locks.acquire_lock("inspect-1.1.0-aaaa", "first", acquire_timeout=1)
    assert locks.acquire_lock("inspect-1.1.0-bbbb", "second", acquire_timeout=0.5)  # not held by "first"
    assert locks.is_lock_holder("inspect-1.1.0-aaaa", "first") and not locks.is_lock_holder("inspect-1.1.0-bbbb", "first")
    assert not locks.acquire_lock("inspect-1.1.0-aaaa", "third", acquire_timeout=0.3)  # the same key waits
    assert len(list(tmp_path.glob("*.lock"))) == 2
    locks.release_lock("inspect-1.1.0-aaaa", "first")
    assert locks.acquire_lock("inspect-1.1.0-aaaa", "third", acquire_timeout=1)


def test_a_lock_file_read_while_its_creator_writes_it_is_read_again(tmp_path):
    """Prefect creates a lock file empty, then writes its JSON: a reader in between must wait for
    the JSON rather than fail the step with ``EOF while parsing``."""
    import threading
    import time

    from prefect.locking.filesystem import FileSystemLockManager

    from fileflow.engine.locks import Bounded, lock_name

    inner = FileSystemLockManager(lock_files_directory=tmp_path)
    locks = Bounded(inner, hold_s=60)
    key = "ocr-2.0.0-cccc"
    path = tmp_path / f"{lock_name(key)}.lock"
    path.touch()  # created, not written yet
    with pytest.raises(ValueError, match="EOF while parsing"):
        inner.is_locked(lock_name(key))  # what Prefect alone does

    def write_late():
        time.sleep(0.2)
        path.write_text(json.dumps({"holder": "creator", "expiration": None}))

    writer = threading.Thread(target=write_late)
    writer.start()
    assert locks.is_locked(key)
    writer.join()


def test_a_half_written_lock_file_met_after_a_long_wait_is_read_again(tmp_path):
    """The window for a half-written lock file starts when one is met, not when the acquire began:
    an acquire that waited longer than that window for a held lock, then met the file of the next
    holder being written, failed the run (seen with 120 processes saving the results block)."""
    import threading
    import time

    from prefect.locking.filesystem import FileSystemLockManager

    from fileflow.engine.locks import HALF_WRITTEN_RETRY_S, Bounded, lock_name

    locks = Bounded(FileSystemLockManager(lock_files_directory=tmp_path), hold_s=60)
    key = "results-save"
    path = tmp_path / f"{lock_name(key)}.lock"
    path.write_text(json.dumps({"holder": "another process", "expiration": None}))

    def next_holder():
        time.sleep(HALF_WRITTEN_RETRY_S + 0.5)
        path.write_text("")  # released, and created again by the next holder, not written yet
        time.sleep(0.3)
        path.unlink()  # that holder done

    other = threading.Thread(target=next_holder)
    other.start()
    try:
        assert locks.acquire_lock(key, "me", acquire_timeout=HALF_WRITTEN_RETRY_S + 5)
    finally:
        other.join()
    assert locks.is_lock_holder(key, "me")


_TAKE_AND_DIE = """
import os, signal, sys, uuid
from fileflow.engine.locks import Bounded, lock_manager
from pathlib import Path
redis_url, lock_dir, key = sys.argv[1] or None, Path(sys.argv[2]), sys.argv[3]
locks = Bounded(lock_manager(redis_url, lock_dir), hold_s=3600)
# a bare UUID, the holder Prefect's transactions pass
assert locks.acquire_lock(key, str(uuid.uuid4()), acquire_timeout=5)
os.kill(os.getpid(), signal.SIGKILL)  # a mediator killed mid-step
"""


@pytest.mark.parametrize("where", ["files", "redis"])
def test_a_lock_left_by_a_killed_process_is_taken_at_once(where, tmp_path, request):
    """A mediator SIGKILLed mid-step leaves its step's lock held (a lock file, or a Redis key with
    an hour's expiry): its resumed run, in the process started in its place, takes the lock at
    once, not after the lock's hold time (as long as the step may run with its retries)."""
    import uuid

    from fileflow.engine.locks import Bounded, lock_manager

    redis_url = request.getfixturevalue("redis_url") if where == "redis" else ""
    key = f"video_transcode-1.1.0-{uuid.uuid4().hex}"
    dead = subprocess.run([sys.executable, "-c", _TAKE_AND_DIE, redis_url, str(tmp_path), key], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert dead.returncode == -9, dead.stderr
    locks = Bounded(lock_manager(redis_url or None, tmp_path), hold_s=3600)
    assert locks.is_locked(key)  # what it left
    resumed = str(uuid.uuid4())
    assert locks.acquire_lock(key, resumed, acquire_timeout=2)
    assert locks.is_lock_holder(key, resumed)
    # a live holder keeps it
    other = Bounded(lock_manager(redis_url or None, tmp_path), hold_s=3600)
    assert not other.acquire_lock(key, str(uuid.uuid4()), acquire_timeout=0.3)
    locks.release_lock(key, resumed)
    assert not locks.is_locked(key)


@pytest.mark.parametrize("where", ["files", "redis"])
def test_a_lock_whose_pid_now_names_another_process_is_taken_at_once(where, tmp_path, request):
    """A mediator container restarted in its pod keeps the pod's host name and often its pid: the
    lock its predecessor left names a live pid, but a process that started later. The pid's start
    time tells them apart, so the lock is broken; a lock of the live process itself is kept."""
    import json
    import socket
    import uuid

    from fileflow.engine.locks import Bounded, lock_manager, lock_name, own_holder

    redis_url = request.getfixturevalue("redis_url") if where == "redis" else ""
    key = f"video_transcode-1.1.0-{uuid.uuid4().hex}"
    this = own_holder("x").split(":")[1]  # <pid>@<start> of this process
    pid, start = this.split("@")
    assert start, "no start time read from /proc"
    predecessor = f"{socket.gethostname()}:{pid}@{int(start) - 1}:{uuid.uuid4()}"  # same pid, earlier start
    locks = Bounded(lock_manager(redis_url or None, tmp_path), hold_s=3600)
    if where == "redis":
        client = locks.inner.client
        client.set(f"lock:{lock_name(key)}", predecessor, ex=3600)
    else:
        (tmp_path / f"{lock_name(key)}.lock").write_text(json.dumps({"holder": predecessor, "expiration": None}))
    assert locks.is_locked(key)  # what it left
    resumed = str(uuid.uuid4())
    assert locks.acquire_lock(key, resumed, acquire_timeout=2)
    # the lock now names this process, pid and start time: nobody breaks it while it lives
    other = Bounded(lock_manager(redis_url or None, tmp_path), hold_s=3600)
    assert not other.acquire_lock(key, str(uuid.uuid4()), acquire_timeout=0.3)
    locks.release_lock(key, resumed)
    assert not locks.is_locked(key)

_HOLD_ON_A_LEASE = """
import socket, sys, time, uuid
socket.gethostname = lambda: "mediator-pod-on-another-node"  # its pid cannot be judged from here
from fileflow.engine.locks import Bounded, lock_manager
locks = Bounded(lock_manager(sys.argv[1], None), hold_s=3600, lease_s=float(sys.argv[3]))
assert locks.acquire_lock(sys.argv[2], str(uuid.uuid4()), acquire_timeout=5)
print("held", flush=True)
time.sleep(600)  # a step that runs long, until the test kills this process
"""


def test_a_redis_lock_is_a_lease_renewed_while_its_holder_lives(redis_url, tmp_path):
    """A mediator pod that dies is on another machine: nobody can see its process is gone. Its
    Redis lock is a lease (2 s here, 60 s by default) that the holding process renews while it
    lives: held past many leases while it runs, free within a lease once it is killed."""
    import time
    import uuid

    from fileflow.engine.locks import Bounded, lock_manager

    key = f"video_transcode-1.1.0-{uuid.uuid4().hex}"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_ON_A_LEASE, redis_url, key, "2"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held", holder.stderr.read()
        other = Bounded(lock_manager(redis_url, None), hold_s=3600, lease_s=2)
        time.sleep(5)  # two and a half leases
        assert not other.acquire_lock(key, str(uuid.uuid4()), acquire_timeout=0.5)  # renewed
        holder.kill()  # a pod of another node: only its lease running out frees its lock
        holder.wait()
        killed_at = time.monotonic()
        mine = str(uuid.uuid4())
        assert other.acquire_lock(key, mine, acquire_timeout=10)
        assert time.monotonic() - killed_at > 0.5  # not broken as a dead process of this host
        print(f"\nFIGURES lease: a killed holder's Redis lock free {time.monotonic() - killed_at:.1f} s later (lease 2 s)")
        other.release_lock(key, mine)
    finally:
        holder.kill()
        holder.wait()
