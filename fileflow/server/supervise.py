"""``python -m fileflow.server.supervise``: run one long-running process and start it again when it dies.

What a Kubernetes Deployment does for a pod, for every process of ``fileflow up`` (the Prefect
server, the warm LibreOffice, the workers, the exporter, the resumer):

| the process | the supervisor |
|---|---|
| dies (SIGKILL, OOM, a crash, exit code not 0) | starts it again after a backoff (1, 2, 4 ... 30 s while it keeps dying within a minute of its start); one more restart and one more crash in its record |
| exits 0 by itself (told to stop by someone else, e.g. SIGTERM to the worker alone) | starts it again at once; one more restart, no crash |
| the supervisor gets SIGTERM/SIGINT (``fileflow down``) | passes it on to the process's group, waits for it to drain, exits 0 if it ended cleanly |
| the supervisor is killed | the process gets SIGKILL (parent-death signal): nothing is left unsupervised |

The process runs in a process group of its own, so a signal to the supervisor's group reaches
it once, from the supervisor, and what it started itself (uvicorn, soffice) with it.

The record, ``<home>/supervised/<name>.json`` (:func:`fileflow.home.supervised_state`), holds the
process's pid, its restarts and crashes and how it last ended; ``fileflow status`` shows it.
With ``--predecessor-env NAME`` a process started after one died gets ``NAME=<host>:<pid>|<how>``
(the warm worker crashes the runs its predecessor held at once).
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from fileflow.home import write_supervised
from fileflow.server.logs import setup_logging

logger = logging.getLogger("fileflow.server.supervise")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: set for a warm worker started after one died: ``<host>:<pid>|<how it died>``
PREDECESSOR_ENV = "FILEFLOW_WORKER_PREDECESSOR"
#: a process that lived this long before it died starts the backoff again from its first step
STEADY_S = 60.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the supervisor dies, and a process group of its own."""
    os.setpgid(0, 0)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def how_it_ended(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"


def clean(code: int) -> bool:
    """Ended by itself without an error, or by a stop signal it was sent."""
    return code in (0, -signal.SIGTERM, -signal.SIGINT)


def supervise(cmd: list[str], *, name: str, home: Path | None = None, predecessor_env: str | None = None,
              first_backoff_s: float = 1.0, max_backoff_s: float = 30.0, env: dict[str, str] | None = None) -> int:
    """Run ``cmd`` until a stop signal, starting it again whenever it ends; the exit code."""
    stopping = threading.Event()
    child: subprocess.Popen | None = None

    def stop(signum, _frame) -> None:
        stopping.set()
        if child is not None and child.poll() is None:
            try:
                os.killpg(child.pid, signum)
            except ProcessLookupError:
                pass

    for sig in STOP_SIGNALS:
        signal.signal(sig, stop)
    env = dict(os.environ if env is None else env)
    record = {"name": name, "supervisor_pid": os.getpid(), "pid": None, "started_at": None, "restarts": 0,
              "crashes": 0, "last_exit": None, "last_exit_at": None}
    backoff = first_backoff_s
    while not stopping.is_set():
        started = time.monotonic()
        child = subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent)
        if stopping.is_set():  # the stop signal came while it was being started
            os.killpg(child.pid, signal.SIGTERM)
        record.update(pid=child.pid, started_at=datetime.now(timezone.utc).isoformat())
        if home is not None:
            write_supervised(home, name, record)
        code = child.wait()
        how = how_it_ended(code)
        record.update(last_exit=how, last_exit_at=datetime.now(timezone.utc).isoformat())
        if stopping.is_set():
            if home is not None:
                write_supervised(home, name, {**record, "pid": None})
            return 0 if clean(code) else (code if code > 0 else 128 - code)
        record["restarts"] += 1
        if code == 0:
            wait = 0.0  # stopped cleanly by someone else: the service is still wanted
            logger.warning("%s (pid %d) exited 0; starting it again", name, child.pid)
        else:
            record["crashes"] += 1
            backoff = first_backoff_s if time.monotonic() - started > STEADY_S else backoff
            wait, backoff = backoff, min(backoff * 2, max_backoff_s)
            logger.warning("%s (pid %d) died (%s); starting it again in %g s", name, child.pid, how, wait)
            if predecessor_env:
                env[predecessor_env] = f"{socket.gethostname()}:{child.pid}|{how}"
        if home is not None:
            write_supervised(home, name, {**record, "pid": None})
        if stopping.wait(wait):
            break
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fileflow.server.supervise",
                                     description=__doc__.splitlines()[0],
                                     usage="%(prog)s --name NAME [--home HOME] [--predecessor-env VAR] -- COMMAND ...")
    parser.add_argument("--name", required=True, help="the process's name in the stack's record")
    parser.add_argument("--home", type=Path, default=None, help="the stack's home: the record goes to <home>/supervised/")
    parser.add_argument("--predecessor-env", default=None,
                        help="environment variable that tells a restarted process who died before it")
    parser.add_argument("--max-backoff", type=float, default=30.0, help="longest wait before a restart, in seconds")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to supervise")
    setup_logging()
    raise SystemExit(supervise(command, name=args.name, home=args.home, predecessor_env=args.predecessor_env,
                               max_backoff_s=args.max_backoff))


if __name__ == "__main__":
    main()
