"""A warm LibreOffice, run by unoserver, owned by fileflow.

The ``office_pdf`` converter is only a client: it sends a path to an XML-RPC server and
LibreOffice writes the PDF. This module starts, watches and stops that server.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
import xmlrpc.client
from pathlib import Path
from typing import Any

#: Debian packages that give /usr/bin/python3 the ``uno`` module and LibreOffice itself.
DEBIAN_PACKAGES = (
    "python3-uno",
    "libreoffice-writer-nogui",
    "libreoffice-calc-nogui",
    "libreoffice-impress-nogui",
)

# Written into the fresh profile before LibreOffice starts. Stock unoserver 3.7 loads documents
# without a MacroExecutionMode and without an interaction handler, which LibreOffice resolves to
# "use the configured security level, refuse whatever would need a confirmation" (default level
# 2, High): an unsigned OnLoad macro did not run that way either (checked by hand against plain
# unoserver). These settings close the door further: DisableMacrosExecution switches macros off
# for every document whatever a caller asks for (tested), level 3 (Very High) trusts no
# location, and BlockUntrustedRefererLinks is LibreOffice's switch against documents fetching
# linked images from URLs of their choosing (set, not exercised by the tests).
_PROFILE_SETTINGS = """<?xml version="1.0" encoding="UTF-8"?>
<oor:items xmlns:oor="http://openoffice.org/2001/registry" xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<item oor:path="/org.openoffice.Office.Common/Security/Scripting"><prop oor:name="DisableMacrosExecution" oor:op="fuse"><value>true</value></prop></item>
<item oor:path="/org.openoffice.Office.Common/Security/Scripting"><prop oor:name="MacroSecurityLevel" oor:op="fuse"><value>3</value></prop></item>
<item oor:path="/org.openoffice.Office.Common/Security/Scripting"><prop oor:name="BlockUntrustedRefererLinks" oor:op="fuse"><value>true</value></prop></item>
</oor:items>
"""


# The module the server runs as (written next to the unoserver symlinks). It runs unoserver's own
# main() after adding two properties to every document unoserver loads:
# - Hidden=True: unoserver 3.7 loads without it; with Debian's LibreOffice 7.4 (-nogui packages)
#   a spreadsheet then gets a visible frame in headless mode, loadComponentFromURL returns None
#   ("Could not load document") and soffice.bin aborts a moment later (even for a plain
#   openpyxl XLSX). Writer and Impress documents are not affected.
# - MacroExecutionMode=NEVER_EXECUTE (0): say at the API level what the profile settings say.
_LAUNCHER = '''"""unoserver's server, run by fileflow.engine.office with two load properties added; it and
LibreOffice end at once when the process holding them dies (SIGKILL included)."""
import os
import select
import signal
import sys
import threading

from unoserver import converter, server  # converter imports uno first
from com.sun.star.beans import PropertyValue

_FORCED = {"Hidden": True, "MacroExecutionMode": 0}


class _Desktop:
    def __init__(self, desktop):
        self._desktop = desktop

    def loadComponentFromURL(self, url, target, flags, props):
        props = tuple(p for p in props if p.Name not in _FORCED)
        props += tuple(PropertyValue(Name=k, Value=v) for k, v in _FORCED.items())
        return self._desktop.loadComponentFromURL(url, target, flags, props)

    def __getattr__(self, name):
        return getattr(self._desktop, name)


_init = converter.UnoConverter.__init__


def _patched_init(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self.desktop = _Desktop(self.desktop)


converter.UnoConverter.__init__ = _patched_init


def _die_with_holder():
    """Kill this process group (unoserver and LibreOffice) when the holder's pid ends."""
    holder = os.environ.get("FILEFLOW_UNOSERVER_HOLDER")
    if not holder:
        return
    try:
        fd = os.pidfd_open(int(holder))
    except ProcessLookupError:  # gone already
        os.killpg(0, signal.SIGKILL)
    except (AttributeError, OSError, ValueError):  # no pidfd here: stop() remains the only way
        return

    def watch():
        select.select([fd], [], [])
        os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watch, name="fileflow-holder-watch", daemon=True).start()


if __name__ == "__main__":
    _die_with_holder()
    sys.exit(server.main())
'''
LAUNCHER_MODULE = "fileflow_unoserver"


class UnoServerError(RuntimeError):
    """The office conversion server could not be started (a setup problem, not a file problem)."""


class _TimeoutTransport(xmlrpc.client.Transport):
    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host):  # type: ignore[override]
        conn = super().make_connection(host)
        conn.timeout = self._timeout
        return conn


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, read from /proc."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        # fields[0] = state, fields[1] = ppid, fields[2] = pgrp
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_group_empty(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if not _group_members(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _last_resort(pgid: int, workdir: str) -> None:
    """At interpreter exit, for a server nobody stopped: kill its group, drop its profile."""
    if _group_members(pgid):
        _kill_group(pgid, signal.SIGKILL)
    shutil.rmtree(workdir, ignore_errors=True)


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class UnoServer:
    """One unoserver (XML-RPC) in front of one headless LibreOffice, started and stopped by us.

    Why Debian's ``/usr/bin/python3``: unoserver's server half drives LibreOffice through
    ``import uno`` (PyUNO). PyUNO is not on PyPI; it is a C extension built by Debian against
    that exact LibreOffice and that exact system Python (package ``python3-uno``), so only
    ``/usr/bin/python3`` can import it, never the project's venv interpreter. unoserver itself
    is pure Python and installed (pinned) in the venv. The server therefore runs as
    ``/usr/bin/python3 -s -m fileflow_unoserver`` with ``PYTHONPATH`` set to a private temporary
    directory holding only: a symlink to the venv's ``unoserver`` package, a symlink to its
    ``unoserver-<version>.dist-info`` (unoserver reads its own version through
    ``importlib.metadata`` at import time, so the package alone fails), and a 30-line launcher
    (``_LAUNCHER``) that runs unoserver's own ``main()`` after adding ``Hidden=True`` and
    ``MacroExecutionMode=NEVER_EXECUTE`` to every document load (without ``Hidden``, Debian's
    LibreOffice 7.4 fails every spreadsheet and then aborts). Nothing else from the venv leaks
    into the system interpreter. The client half (``office_pdf``) runs in the venv and only
    speaks XML-RPC.

    Every instance gets its own ports (``port=0``/``uno_port=0`` pick free ones) and its own
    LibreOffice user profile in a temporary directory, so several servers run side by side
    without fighting over ``~/.config/libreoffice``.

    Macros: three independent locks, each verified with an ODT whose ``OnLoad`` Basic macro
    writes a file (and does write it when a stock LibreOffice is asked to allow macros): the
    hidden load does not fire ``OnLoad``; the load says ``NEVER_EXECUTE``; and the profile is
    pre-seeded with ``DisableMacrosExecution`` (plus security level Very High and blocked
    untrusted links, see ``_PROFILE_SETTINGS``), which refuses macros even to a caller that
    asks for them. ``disable_macros=False`` keeps LibreOffice's stock profile (tests only).

    unoserver serves one request at a time (a single-threaded XML-RPC server in front of one
    LibreOffice): run one ``UnoServer`` per concurrent conversion you want. With
    ``conversion_timeout`` (default 120 s) unoserver kills a LibreOffice stuck on one document
    and exits; :meth:`ensure_running` then starts a fresh one.

    The process tree (``python3`` -> ``oosplash`` -> ``soffice.bin``) runs in a session and
    process group of its own. :meth:`stop` asks unoserver to shut down (SIGTERM to its leader
    only: a SIGTERM delivered to oosplash and soffice.bin at once was seen to leave oosplash
    hanging), then SIGKILLs whatever is left in the group and removes the profile. A server
    nobody stopped is killed when the interpreter exits.

    Use as a context manager, or call :meth:`start` / :meth:`stop`; :meth:`ensure_running`
    restarts a server whose LibreOffice died. :attr:`options` are the converter options that
    point ``office_pdf`` at this server.
    """

    def __init__(
        self,
        port: int = 0,
        uno_port: int = 0,
        *,
        host: str = "127.0.0.1",
        python: str = "/usr/bin/python3",
        soffice: str | None = None,
        startup_timeout: float = 60.0,
        conversion_timeout: int | None = 120,
        disable_macros: bool = True,
        stop_grace: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.uno_port = uno_port
        self.python = python
        self.soffice = soffice
        self.startup_timeout = startup_timeout
        self.conversion_timeout = conversion_timeout
        self.disable_macros = disable_macros
        self.stop_grace = stop_grace
        self.process: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None
        self._lock = threading.RLock()
        self._finalizer: weakref.finalize | None = None

    # ----------------------------------------------------------------------------- queries
    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def profile_dir(self) -> Path | None:
        return self.workdir / "profile" if self.workdir is not None else None

    @property
    def log_path(self) -> Path | None:
        return self.workdir / "unoserver.log" if self.workdir is not None else None

    @property
    def options(self) -> dict[str, Any]:
        """Converter options that send ``office_pdf`` to this server."""
        return {"unoserver_host": self.host, "unoserver_port": self.port}

    def alive(self, timeout: float = 2.0) -> bool:
        """The server process runs and its XML-RPC port accepts connections.

        This is a liveness check, not an idle check: unoserver answers one request at a time,
        so a call such as ``info()`` waits behind a long conversion; a TCP connect does not.
        """
        proc = self.process
        if proc is None or proc.poll() is not None:
            return False
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout):
                return True
        except OSError:
            return False

    def info(self, timeout: float = 5.0) -> dict[str, Any]:
        """unoserver's ``info()``: its version, API and LibreOffice's version."""
        proxy = xmlrpc.client.ServerProxy(
            f"http://{self.host}:{self.port}", allow_none=True, transport=_TimeoutTransport(timeout)
        )
        with proxy:
            info = proxy.info()
        return {k: v for k, v in info.items() if k in ("unoserver", "api", "libreoffice_version")}

    # ---------------------------------------------------------------------------- lifecycle
    def _check_environment(self) -> str:
        if not Path(self.python).exists():
            raise UnoServerError(
                f"{self.python} does not exist: the office converter needs Debian's python3 with "
                f"PyUNO; install: apt-get install {' '.join(DEBIAN_PACKAGES)}"
            )
        try:
            probe = subprocess.run(
                [self.python, "-s", "-c", "import uno"],
                capture_output=True,
                text=True,
                timeout=60,
                env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")},
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise UnoServerError(f"{self.python} cannot be run ({exc})") from None
        if probe.returncode != 0:
            raise UnoServerError(
                f"{self.python} cannot `import uno` ({probe.stderr.strip().splitlines()[-1:]}): "
                "unoserver drives LibreOffice through PyUNO, which only Debian's python3 has; "
                f"install: apt-get install {' '.join(DEBIAN_PACKAGES)}"
            )
        soffice = self.soffice or shutil.which("soffice") or shutil.which("libreoffice")
        if not soffice:
            raise UnoServerError(
                "LibreOffice (soffice) is not installed; install: "
                f"apt-get install {' '.join(DEBIAN_PACKAGES)}"
            )
        return soffice

    @staticmethod
    def _unoserver_paths() -> tuple[Path, Path]:
        spec = importlib.util.find_spec("unoserver")
        if spec is None or not spec.submodule_search_locations:
            raise UnoServerError("the unoserver package is not installed in this environment (uv sync)")
        package = Path(next(iter(spec.submodule_search_locations)))
        dist_infos = sorted(package.parent.glob("unoserver-*.dist-info"))
        if not dist_infos:
            raise UnoServerError(f"no unoserver-*.dist-info next to {package}")
        return package, dist_infos[-1]

    def start(self) -> "UnoServer":
        with self._lock:
            if self.process is not None and self.process.poll() is None:
                return self
            soffice = self._check_environment()
            package, dist_info = self._unoserver_paths()

            self.workdir = Path(tempfile.mkdtemp(prefix="fileflow-unoserver-"))
            pypath = self.workdir / "pythonpath"
            pypath.mkdir()
            (pypath / package.name).symlink_to(package, target_is_directory=True)
            (pypath / dist_info.name).symlink_to(dist_info, target_is_directory=True)
            (pypath / f"{LAUNCHER_MODULE}.py").write_text(_LAUNCHER)
            profile = self.workdir / "profile"
            if self.disable_macros:
                (profile / "user").mkdir(parents=True)
                (profile / "user" / "registrymodifications.xcu").write_text(_PROFILE_SETTINGS)
            else:
                profile.mkdir()

            if not self.port:
                self.port = free_port(self.host)
            if not self.uno_port:
                self.uno_port = free_port("127.0.0.1")
                while self.uno_port == self.port:
                    self.uno_port = free_port("127.0.0.1")

            cmd = [
                self.python, "-s", "-m", LAUNCHER_MODULE,
                "--interface", self.host,
                "--port", str(self.port),
                "--uno-interface", "127.0.0.1",
                "--uno-port", str(self.uno_port),
                "--user-installation", str(profile),
                "--executable", soffice,
            ]  # fmt: skip
            if self.conversion_timeout:
                cmd += ["--conversion-timeout", str(int(self.conversion_timeout))]
            env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "VIRTUAL_ENV")}
            env["PYTHONPATH"] = str(pypath)
            env["PYTHONUNBUFFERED"] = "1"
            env["FILEFLOW_UNOSERVER_HOLDER"] = str(os.getpid())  # its own group: it must not outlive us
            with open(self.workdir / "unoserver.log", "wb") as log:
                self.process = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=self.workdir,
                    start_new_session=True,  # own session + process group: pgid == pid
                )
            # Safety net: an interpreter that exits without stop() still kills LibreOffice.
            self._finalizer = weakref.finalize(self, _last_resort, self.process.pid, str(self.workdir))
            try:
                self._wait_ready()
            except BaseException:
                self.stop(grace=1.0)  # a half-started unoserver ignores SIGTERM until it is up
                raise
            return self

    def _wait_ready(self) -> None:
        assert self.process is not None and self.log_path is not None
        deadline = time.monotonic() + self.startup_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise UnoServerError(
                    f"unoserver exited with code {self.process.returncode} while starting; "
                    f"log tail:\n{_log_tail(self.log_path)}"
                )
            try:
                self.info(timeout=2.0)
                return
            except (OSError, xmlrpc.client.Error) as exc:
                last_error = exc
                time.sleep(0.25)
        raise UnoServerError(
            f"unoserver did not answer on {self.host}:{self.port} within {self.startup_timeout:.0f} s "
            f"(last error: {last_error}); log tail:\n{_log_tail(self.log_path)}"
        )

    def stop(self, grace: float | None = None) -> None:
        """Stop the server and LibreOffice; ``grace`` (default ``stop_grace``) before SIGKILL."""
        grace = self.stop_grace if grace is None else grace
        with self._lock:
            proc, self.process = self.process, None
            if proc is not None:
                pgid = proc.pid  # start_new_session made the leader's pid the group id
                if proc.poll() is None:
                    try:
                        proc.send_signal(signal.SIGTERM)  # unoserver forwards it to LibreOffice
                    except ProcessLookupError:
                        pass
                    try:
                        proc.wait(grace)
                    except subprocess.TimeoutExpired:
                        pass
                # Whatever is left of the group (a hung oosplash, an orphaned soffice.bin) is
                # killed; only while members remain, so a recycled group id is never signalled.
                if not _wait_group_empty(pgid, timeout=1.0 if proc.poll() is not None else 0):
                    _kill_group(pgid, signal.SIGKILL)
                    _wait_group_empty(pgid, timeout=10.0)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
                    pass
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)
                self.workdir = None

    def ensure_running(self) -> bool:
        """Start the server again (same ports) if it is not alive; True if it was restarted."""
        with self._lock:
            if self.alive():
                return False
            self.stop()
            self.start()
            return True

    def __enter__(self) -> "UnoServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.process is not None and self.process.poll() is None else "stopped"
        return f"UnoServer({self.host}:{self.port}, uno_port={self.uno_port}, pid={self.pid}, {state})"


def main(argv: list[str] | None = None) -> None:
    """``python -m fileflow.engine.office --port P``: one warm LibreOffice for the workers of a machine.

    Runs in the foreground, restarts LibreOffice if it dies, and stops it (no soffice left) on
    SIGTERM or Ctrl-C. ``fileflow up`` starts it and gives its port to the office workers.
    """
    import argparse
    import signal as _signal

    parser = argparse.ArgumentParser(prog="python -m fileflow.engine.office", description=main.__doc__)
    parser.add_argument("--port", type=int, default=2003, help="XML-RPC port of unoserver")
    args = parser.parse_args(argv)
    stopping = threading.Event()
    _signal.signal(_signal.SIGTERM, lambda *_: stopping.set())
    server = UnoServer(port=args.port).start()
    print(f"unoserver ready on {server.host}:{server.port}", flush=True)
    try:
        while not stopping.wait(2.0):
            if server.ensure_running():
                print("LibreOffice had died and was restarted", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
