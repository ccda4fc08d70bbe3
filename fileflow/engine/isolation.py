"""Steps run in warm child processes, each call with a timeout and a memory limit.

Converters are third-party libraries that segfault, exhaust memory and hang. Every step
therefore runs in a child process; the mediator only waits on a pipe. Children are kept warm
and reused (library imports and engine start-up are paid once), but a child that crashed, ran
out of memory or timed out is discarded and replaced, so a failure costs only the step that
caused it.

How a failure is reported:

- the child dies (segfault, abort, killed)            -> :class:`~fileflow.errors.ToolCrashed`
- the call runs past ``timeout_s``                     -> the child's process group is killed,
                                                          :class:`~fileflow.errors.ToolTimeout`
- the call needs more than ``memory_mb``               -> :class:`~fileflow.errors.LimitExceeded`
  (``RLIMIT_DATA`` is lowered in the child for the duration of the call: it counts heap and
  anonymous mappings, not shared libraries, so a warm child that loaded many libraries is not
  penalised for them)

Children are started from a fork server (never forked from the threaded mediator) and put in a
process group of their own, so a timeout also stops what the converter spawned (ffmpeg). A child
also dies with its process group when the process holding the pool dies (a mediator or worker,
whatever killed it): no converter runs on, writing, behind a killed worker.

A step's clock starts when its child is ready, not when the child is started: a replacement child
(after a crash, a timeout or a memory limit) first says it is ready, so the cost of starting it,
which under load can reach tens of seconds, never counts against the next file's step. Likewise
a target may declare a ``prepare`` function (``target.prepare = f``, called with the same
payload): what every call needs but a warm child has already done (importing the converter's
module, building the storage client). It runs first, on a clock of its own
(``prepare_timeout_s``), and the step's timeout counts from its end; a new child's first step
spent seconds there under load (6.6 s for a text step in a loaded test run).
(Preloading Prefect's storage blocks in the fork server as well would make new children cheaper,
but it kept the warm worker's fork server from stopping within its grace period; see
tests/test_worker.py.)
"""

from __future__ import annotations

import asyncio
import atexit
import importlib
import multiprocessing
import os
import resource
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from fileflow.errors import FileflowError, LimitExceeded, ToolCrashed, ToolTimeout, rebuild

_PRELOAD = ["converters", "converters.base", "fileflow.errors", "fileflow.engine.execute"]
#: how long a new child may take to say it is ready (outside any step's timeout)
START_TIMEOUT_S = 300.0
#: how long a target's ``prepare`` may take (outside the step's timeout)
PREPARE_TIMEOUT_S = 120.0


def _resolve(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _set_memory_limit(memory_mb: int | None) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    soft = hard if memory_mb is None else memory_mb * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def _die_with(holder: int) -> None:
    """Take this child's whole process group (what the converter spawned too) down when the
    process holding the pool dies. Not through the parent-death signal: the child's parent is
    the fork server, which lives on while any child does. A thread waits on the holder's pidfd
    (opened while the holder still runs, so a reused pid cannot fool it)."""
    import select

    try:
        fd = os.pidfd_open(holder)
    except ProcessLookupError:  # it died before this child started
        os.killpg(0, signal.SIGKILL)
    except (AttributeError, OSError):  # no pidfd here (before Linux 5.3): the child then runs its step out
        return

    def watch() -> None:
        select.select([fd], [], [])
        os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watch, name="fileflow-holder-watch", daemon=True).start()


def _serve(conn, nice: int = 0, warmup: str | None = None, holder: int | None = None) -> None:
    """The child's loop: receive a call, run it under the memory limit, send the outcome."""
    os.setpgrp()
    if holder:
        _die_with(holder)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())  # a parent may block signals for itself (fileflow.server.worker)
    if nice:
        os.nice(nice)  # a lower-priority pool (reprocessing) leaves the CPU to the others
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the mediator's to handle
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # tesseract: one thread per step
    if warmup:
        _resolve(warmup)()
    conn.send(("ready",))
    while True:
        try:
            target, payload, memory_mb = conn.recv()
        except (EOFError, OSError):
            return
        _set_memory_limit(memory_mb)
        try:
            fn = _resolve(target)
            prepare = getattr(fn, "prepare", None)
            if prepare is not None:
                prepare(payload)
            conn.send(("started",))  # the step's clock starts here
            outcome = ("ok", fn(payload))
        except MemoryError:
            outcome = ("err", "LimitExceeded", f"the step needed more than its {memory_mb} MiB memory limit")
        except FileflowError as exc:
            outcome = ("err", type(exc).__name__, str(exc))
        except Exception as exc:  # a converter bug or an unclassified library error
            outcome = ("err", "ToolError", f"{type(exc).__name__}: {exc}")
        finally:
            _set_memory_limit(None)
        try:
            conn.send(outcome)
        except Exception as exc:  # an unpicklable result is a converter bug
            conn.send(("err", "ToolError", f"the step's result could not be sent back: {exc}"))
        if outcome[0] == "err" and outcome[1] == "LimitExceeded":
            return  # memory may be fragmented or half-freed: start afresh


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "the converter process stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = {
            "SIGSEGV": " (segmentation fault in a library)",
            "SIGABRT": " (the library aborted)",
            "SIGKILL": " (killed, possibly by the kernel's out-of-memory killer)",
            "SIGBUS": " (bus error in a library)",
        }.get(name, "")
        return f"the converter process died with {name}{hint}"
    return f"the converter process exited unexpectedly with code {code}"


class _Child:
    def __init__(self, ctx, nice: int = 0, warmup: str | None = None) -> None:
        self.conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child_conn, nice, warmup, os.getpid()), daemon=True)
        self.proc.start()
        child_conn.close()
        self.calls = 0
        # kill() runs from the step's thread and from ChildPool.close() at once when a pool
        # closes under a running step; closing the pipe twice could close a reused descriptor
        self._kill_lock = threading.Lock()
        self._killed = False
        # wait until the child runs its loop, so that starting it is not charged to a step
        try:
            ready = self.conn.poll(START_TIMEOUT_S) and self.conn.recv() == ("ready",)
        except (EOFError, OSError):
            ready = False
        if not ready:
            self.proc.join(0.1)
            code = self.proc.exitcode
            self.kill()
            raise ToolCrashed(
                f"the converter process did not start within {START_TIMEOUT_S:g} s"
                if code is None else _describe_exit(code)
            )

    def call(self, target: str, payload: Any, timeout_s: float, memory_mb: int,
             prepare_timeout_s: float = PREPARE_TIMEOUT_S) -> Any:
        self.calls += 1
        self.conn.send((target, payload, memory_mb))
        outcome = self._receive(prepare_timeout_s, f"the step was not ready to start within {prepare_timeout_s:g} s "
                                                   "(its converter's import or storage client) and was stopped")
        if outcome == ("started",):
            outcome = self._receive(timeout_s, f"the step ran past its {timeout_s:g} s timeout and was stopped")
        if outcome[0] == "ok":
            return outcome[1]
        raise rebuild(outcome[1], outcome[2])

    def _receive(self, timeout_s: float, late: str) -> tuple:
        """The child's next message; the child is killed if it sends none within ``timeout_s``."""
        if not self.conn.poll(timeout_s):
            self.kill()
            raise ToolTimeout(late)
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            self.proc.join(5)
            raise ToolCrashed(_describe_exit(self.proc.exitcode)) from None

    def alive(self) -> bool:
        return self.proc.is_alive()

    def kill(self) -> None:
        with self._kill_lock:
            if self._killed:
                return
            self._killed = True
            self._kill()

    def _kill(self) -> None:
        if self.proc.pid is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                # still starting: not yet the leader of its own process group
                try:
                    os.kill(self.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        self.proc.join(5)
        self.conn.close()


class ChildPool:
    """A bounded pool of warm child processes that run one step each at a time."""

    def __init__(self, size: int, *, max_calls_per_child: int = 500, nice: int = 0, warmup: str | None = None,
                 prepare_timeout_s: float = PREPARE_TIMEOUT_S) -> None:
        """``warmup``: ``module:function`` each new child runs before it counts as ready;
        ``prepare_timeout_s``: how long a target's ``prepare`` may take before its step starts."""
        if size < 1:
            raise ValueError("a child pool needs at least one process")
        self.size = size
        self.nice = nice
        self.warmup = warmup
        self.prepare_timeout_s = prepare_timeout_s
        self.max_calls_per_child = max_calls_per_child
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(_PRELOAD)
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()
        self._lock = threading.Lock()
        # one waiting thread per call in flight; calls beyond `size` wait on the semaphore
        self._executor = ThreadPoolExecutor(max_workers=max(64, size * 4), thread_name_prefix="fileflow-step")
        self._closed = False
        atexit.register(self.close)

    def _take(self) -> _Child:
        with self._lock:
            if self._closed:
                raise RuntimeError("the child pool is closed")
            while self._idle:
                child = self._idle.pop()
                if child.alive():
                    self._busy.add(child)
                    return child
                child.kill()
        child = _Child(self._ctx, self.nice, self.warmup)
        with self._lock:
            self._busy.add(child)
        return child

    def _give_back(self, child: _Child, healthy: bool) -> None:
        with self._lock:
            self._busy.discard(child)
            keep = healthy and not self._closed and child.calls < self.max_calls_per_child and child.alive()
            if keep:
                self._idle.append(child)
        if not keep:
            child.kill()

    def call(
        self, target: str, payload: Any, *, timeout_s: float, memory_mb: int, gate: threading.Semaphore | None = None
    ) -> Any:
        """Run ``module:function(payload)`` in a child; raise the typed error it ended with.

        ``gate`` bounds how many calls of one kind run at once (a converter whose engine is a
        single shared service); calls wait for it before they take a child.
        """
        if gate is not None:
            with gate:
                return self.call(target, payload, timeout_s=timeout_s, memory_mb=memory_mb)
        with self._slots:
            child = self._take()
            healthy = False
            try:
                result = child.call(target, payload, timeout_s, memory_mb, self.prepare_timeout_s)
                healthy = True
                return result
            except (ToolCrashed, ToolTimeout, LimitExceeded):
                raise
            except FileflowError:
                healthy = True  # the converter refused the input; the child is fine
                raise
            finally:
                self._give_back(child, healthy)

    async def acall(
        self, target: str, payload: Any, *, timeout_s: float, memory_mb: int, gate: threading.Semaphore | None = None
    ) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor,
            partial(self.call, target, payload, timeout_s=timeout_s, memory_mb=memory_mb, gate=gate),
        )

    def pids(self) -> list[int]:
        with self._lock:
            return [c.proc.pid for c in (*self._idle, *self._busy) if c.proc.pid]

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            children = [*self._idle, *self._busy]
            self._idle.clear()
        for child in children:
            child.kill()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> "ChildPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
