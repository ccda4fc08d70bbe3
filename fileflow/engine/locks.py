"""The lock that makes a step run once when the same file is processed twice at once.

A step's task caches its result under its cache key (the converter's version and the input's
identity, :func:`fileflow.engine.mediator.step_cache_key`). Without a lock, two runs of the same
file that start together both find no cached result and both run the step. With Prefect's
``SERIALIZABLE`` cache isolation, the step's transaction takes a lock on the cache key first:
the second run waits for the first to commit, then reads its result (``Cached``).

The lock manager (Prefect's public lock managers):

| where | lock manager | shared by |
|---|---|---|
| ``FILEFLOW_LOCK_REDIS_URL`` set (``fileflow up --redis`` sets it) | ``prefect_redis.RedisLockManager`` | every process that reaches that Redis |
| otherwise (the embedded default, a one-machine stack) | Prefect's ``FileSystemLockManager`` on ``FILEFLOW_LOCK_DIR`` (default ``<PREFECT_HOME>/locks``) | the processes of one machine |

Prefect takes these locks without a hold timeout: a mediator killed while it held one would
leave it held for good (and its resumed run, a new holder, waiting on it forever). So
(:class:`Bounded`):

- every lock is held under ``<host>:<pid>@<start>:<holder>`` (``<start>`` the process's start time,
  so that a new process given a dead one's pid is not taken for it), and a lock whose holder is a
  process of this host that is gone is broken at once (:func:`break_dead_lock`);
- a Redis lock, shared by machines that cannot see each other's processes, is a lease: taken for
  ``REDIS_LEASE_S`` and renewed by a thread of the holding process while it holds it
  (:class:`_Leases`), so the lock of a pod that died expires within a lease;
- no lock is held longer than ``hold_s``, longer than the step may run with all its retries; a
  holder that outlives it only costs a duplicate step, never a deadlock.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator
from urllib.parse import urlsplit


#: how long a lock file being written by another process may read as empty (Prefect's
#: ``FileSystemLockManager`` creates the file, then writes its JSON: a reader in between gets
#: ``ValueError: EOF while parsing``) before it counts as an error
HALF_WRITTEN_RETRY_S = 2.0


def lock_name(key: str) -> str:
    """The name a lock is taken under: the key without dots. Prefect's ``FileSystemLockManager``
    names the file ``Path(key).with_suffix(".lock")``, which cuts a key at its last dot: every
    ``inspect-1.1.0-<digest>`` would share the one file ``inspect-1.1.lock``, so every step of a
    converter on the machine would wait for every other."""
    return key.replace(".", "_")


def _tolerant(call, *args):
    """``call(*args)``, read again while the lock file it reads is half-written by its creator.
    The window starts at the first half-written read: ``call`` may be an acquire that waited
    minutes for the lock before it met one."""
    deadline = None
    while True:
        try:
            return call(*args)
        except ValueError as exc:
            if "EOF while parsing" not in str(exc):
                raise
            now = time.monotonic()
            deadline = deadline or now + HALF_WRITTEN_RETRY_S
            if now > deadline:
                raise
            time.sleep(0.02)


def _start_of(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, field 22 of ``/proc/<pid>/stat``), or None
    where there is no such process or no ``/proc``. A pid is reused once its process is gone (a
    mediator container restarted in its pod starts again under the same host name and, often, the
    same pid); the pair of pid and start time is not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # the fields after the command's name start at field 3


def _holder_is_dead(holder: str) -> bool:
    """Whether ``holder`` (``host:pid@start:...``, or Prefect's bare ``host:pid:thread...``) is a
    process of this host that is gone."""
    host, _, rest = holder.partition(":")
    pid, _, start = rest.split(":", 1)[0].partition("@")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's: its lock expires (hold_s)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    # alive: the holder itself, or a later process given its pid
    return bool(start) and _start_of(int(pid)) not in (None, start)


@functools.lru_cache(maxsize=4)
def _as_holder(pid: int) -> str:
    """Process ``pid`` as a lock holder, ``<pid>@<start>`` (asked with ``os.getpid()``, so that a
    forked child names itself)."""
    return f"{pid}@{_start_of(pid) or ''}"


#: deletes a Redis lock only while it still names the holder that was judged dead
_DELETE_IF_HELD_BY = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def own_holder(holder: str) -> str:
    """The holder a lock is taken under: ``<host>:<pid>@<start>:<holder>``. Prefect's transactions
    name their holder with a bare UUID, which says nothing of who holds the lock; with the process
    in it, :func:`break_dead_lock` can tell a holder that is gone."""
    return f"{socket.gethostname()}:{_as_holder(os.getpid())}:{holder}"


def break_dead_lock(inner: Any, name: str) -> bool:
    """Remove the lock ``name`` when the process that holds it is a process of this host that is
    gone (a mediator killed mid-step): its resumed run would otherwise wait for the lock to
    expire, for as long as the step may run. Whether it was removed. A holder on another host
    (a Kubernetes pod that died) is not judged: its lock expires after its hold time."""
    import json

    client = _redis_client(inner)
    if client is not None:
        key = f"lock:{name}"
        holder = client.get(key)
        if holder is None or not _holder_is_dead(holder.decode(errors="replace")):
            return False
        return bool(client.eval(_DELETE_IF_HELD_BY, 1, key, holder))
    folder = getattr(inner, "lock_files_directory", None)
    if folder is None:
        return False
    path = Path(folder) / f"{name}.lock"
    try:
        holder = json.loads(path.read_bytes() or b"{}").get("holder") or ""
    except (FileNotFoundError, ValueError):
        return False
    if not _holder_is_dead(holder):
        return False
    path.unlink(missing_ok=True)
    return True


#: a Redis lock is taken for this long and renewed while its holder lives
REDIS_LEASE_S = 60.0
_RENEW_IF_HELD_BY = ("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) "
                     "end return 0")


def _redis_client(inner: Any) -> Any:
    """The Redis client of a ``prefect_redis.RedisLockManager``, else None."""
    return getattr(inner, "client", None) if hasattr(inner, "_locks") else None


class _Leases:
    """The Redis locks this process holds, renewed every third of their lease by one daemon
    thread until released, lost to another holder, or held for their ``hold_s``. A process that
    dies stops renewing: its locks expire within a lease."""

    TICK_S = 0.25

    def __init__(self) -> None:
        self._held: dict[tuple[str, str], dict[str, Any]] = {}
        self._guard = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, client: Any, key: str, holder: str, lease_s: float, hold_s: float) -> None:
        now = time.monotonic()
        with self._guard:
            self._held[(key, holder)] = {"client": client, "lease_s": lease_s, "renew_at": now + lease_s / 3,
                                         "until": now + hold_s}
            if self._thread is None or not self._thread.is_alive():  # also in a forked child
                self._thread = threading.Thread(target=self._run, name="fileflow-lock-leases", daemon=True)
                self._thread.start()

    def remove(self, key: str, holder: str) -> None:
        with self._guard:
            self._held.pop((key, holder), None)

    def _run(self) -> None:
        while True:
            time.sleep(self.TICK_S)
            now = time.monotonic()
            with self._guard:
                due = [(k, dict(v)) for k, v in self._held.items() if v["renew_at"] <= now]
            for (key, holder), lease in due:
                ms = int(min(lease["lease_s"], max(lease["until"] - now, 0.001)) * 1000)
                try:
                    kept = lease["client"].eval(_RENEW_IF_HELD_BY, 1, key, holder, ms)
                except Exception:  # Redis away for a moment: the next tick tries again
                    continue
                with self._guard:
                    if not kept or lease["until"] <= now:  # lost, or held as long as it may be
                        self._held.pop((key, holder), None)
                    elif (key, holder) in self._held:
                        self._held[(key, holder)]["renew_at"] = now + lease["lease_s"] / 3


_leases = _Leases()


class Bounded:
    """A lock manager whose every lock expires after ``hold_s`` seconds unless told otherwise,
    under a name without dots (:func:`lock_name`) and a holder naming its process
    (:func:`own_holder`), reading past a lock file being written; on Redis a lease of
    ``lease_s`` renewed while held (see the module's docstring)."""

    def __init__(self, inner: Any, hold_s: float, lease_s: float = REDIS_LEASE_S) -> None:
        self.inner, self.hold_s, self.lease_s = inner, hold_s, lease_s
        self._redis = _redis_client(inner)

    def acquire_lock(self, key: str, holder: str, acquire_timeout: float | None = None,
                     hold_timeout: float | None = None) -> bool:
        name, own = lock_name(key), own_holder(holder)
        break_dead_lock(self.inner, name)
        hold_s = hold_timeout or self.hold_s
        if self._redis is None:
            return _tolerant(self.inner.acquire_lock, name, own, acquire_timeout, hold_s)
        lease_s = min(self.lease_s, hold_s)
        taken = self.inner.acquire_lock(name, own, acquire_timeout, lease_s)
        if taken:
            _leases.add(self._redis, f"lock:{name}", own, lease_s, hold_s)
        return taken

    async def aacquire_lock(self, key: str, holder: str, acquire_timeout: float | None = None,
                            hold_timeout: float | None = None) -> bool:
        # the synchronous lock, taken in a thread: Prefect releases a transaction's lock with the
        # synchronous release_lock, and prefect-redis's release of a lock taken asynchronously
        # only makes a coroutine that nobody awaits (the lock stayed held, and the same file's
        # second run waited for its expiry). One thread per waiting step, from anyio's own pool
        import anyio.to_thread

        return await anyio.to_thread.run_sync(self.acquire_lock, key, holder, acquire_timeout, hold_timeout,
                                              abandon_on_cancel=True)

    def release_lock(self, key: str, holder: str) -> None:
        if self._redis is not None:
            _leases.remove(f"lock:{lock_name(key)}", own_holder(holder))
        _tolerant(self.inner.release_lock, lock_name(key), own_holder(holder))

    def wait_for_lock(self, key: str, timeout: float | None = None) -> bool:
        break_dead_lock(self.inner, lock_name(key))
        return _tolerant(self.inner.wait_for_lock, lock_name(key), timeout)

    async def await_for_lock(self, key: str, timeout: float | None = None) -> bool:
        import anyio.to_thread

        return await anyio.to_thread.run_sync(self.wait_for_lock, key, timeout, abandon_on_cancel=True)

    def is_locked(self, key: str) -> bool:
        return _tolerant(self.inner.is_locked, lock_name(key))

    def is_lock_holder(self, key: str, holder: str) -> bool:
        return _tolerant(self.inner.is_lock_holder, lock_name(key), own_holder(holder))


def lock_manager(redis_url: str | None, lock_dir: Path | None) -> Any:
    """The process's lock manager: one instance, since a lock is released through the instance
    that took it."""
    if redis_url:
        from prefect_redis.locking import RedisLockManager

        parts = urlsplit(redis_url)
        db = int(parts.path.strip("/") or 0)
        return RedisLockManager(host=parts.hostname or "localhost", port=parts.port or 6379, db=db,
                                username=parts.username, password=parts.password, ssl=parts.scheme == "rediss")
    from prefect.locking.filesystem import FileSystemLockManager

    if lock_dir is None:
        from prefect.settings import get_current_settings

        lock_dir = Path(get_current_settings().home) / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    return FileSystemLockManager(lock_files_directory=lock_dir)


@asynccontextmanager
async def held(locks: Any, key: str, *, hold_s: float, wait_s: float) -> AsyncIterator[bool]:
    """Hold ``key`` of ``locks`` for the block of code (at most ``hold_s`` seconds); True if it
    was taken, False when ``wait_s`` passed first (the code then runs anyway: a holder that died
    holds it until it expires, and what it guards must stay correct without it)."""
    import anyio.to_thread

    holder = own_holder(uuid.uuid4().hex)
    name = lock_name(key)
    taken = await anyio.to_thread.run_sync(_tolerant, locks.acquire_lock, name, holder, wait_s, hold_s,
                                           abandon_on_cancel=True)
    try:
        yield taken
    finally:
        if taken:
            try:
                locks.release_lock(name, holder)
            except ValueError:  # it expired and another process holds it now
                pass
