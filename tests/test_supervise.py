"""The supervisor of every process of ``fileflow up`` (``python -m fileflow.server.supervise``),
on real processes: a killed process comes back and is counted, a clean exit is a restart but no
crash, SIGTERM drains and exits 0, and a killed supervisor takes its process with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fileflow.home import supervised_state
from tests.conftest import _free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]

#: a service that writes its pid, exits 0 on SIGTERM after a short drain, and exits 0 by itself
#: when the file ``quit`` appears next to it
SERVICE = """
import os, signal, sys, time
from pathlib import Path
here = Path(sys.argv[1])
stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
(here / f"pid-{os.getpid()}").write_text("started")
while not stopping:
    if (here / "quit").exists():
        (here / "quit").unlink()
        sys.exit(0)
    time.sleep(0.05)
time.sleep(0.5)  # the drain
(here / f"pid-{os.getpid()}").write_text("drained")
"""


def _start(tmp_path: Path) -> subprocess.Popen:
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    return subprocess.Popen([sys.executable, "-m", "fileflow.server.supervise", "--name", "svc", "--home",
                             str(tmp_path / "home"), "--max-backoff", "2", "--", sys.executable, str(script),
                             str(tmp_path)], cwd=ROOT, stdout=open(tmp_path / "log", "ab"), stderr=subprocess.STDOUT)


def _record(tmp_path: Path) -> dict:
    return supervised_state(tmp_path / "home").get("svc") or {}


def _running(tmp_path: Path, other_than: int | None = None) -> int:
    def pid():
        record = _record(tmp_path)
        alive = record.get("pid") and record["pid"] != other_than and (tmp_path / f"pid-{record['pid']}").exists()
        return record["pid"] if alive else None

    return wait_until(pid, 30, "the supervised process running")


def test_a_killed_process_comes_back_counted_and_sigterm_drains_and_exits_0(tmp_path):
    supervisor = _start(tmp_path)
    try:
        first = _running(tmp_path)
        os.kill(first, signal.SIGKILL)
        second = _running(tmp_path, other_than=first)
        record = _record(tmp_path)
        assert (record["restarts"], record["crashes"], record["last_exit"]) == (1, 1, "signal SIGKILL")
        assert record["supervisor_pid"] == supervisor.pid

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=30) == 0, (tmp_path / "log").read_text()
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
    assert (tmp_path / f"pid-{second}").read_text() == "drained"  # told once, drained, then ended
    assert not Path(f"/proc/{second}").exists()
    assert _record(tmp_path)["pid"] is None


def test_a_clean_exit_is_restarted_at_once_and_not_counted_as_a_crash(tmp_path):
    supervisor = _start(tmp_path)
    try:
        first = _running(tmp_path)
        (tmp_path / "quit").touch()
        _running(tmp_path, other_than=first)
        record = _record(tmp_path)
        assert (record["restarts"], record["crashes"], record["last_exit"]) == (1, 0, "exit code 0")
    finally:
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=30) == 0


def test_a_killed_supervisor_takes_its_process_with_it(tmp_path):
    supervisor = _start(tmp_path)
    child = _running(tmp_path)
    supervisor.kill()
    supervisor.wait(timeout=10)
    wait_until(lambda: _gone(child), 10, f"process {child} ending with its supervisor")


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("module, ready", [
    ("fileflow.server.resumer", "sweep failed"),  # it has started sweeping (the API is not there)
    ("fileflow.server.exporter", "fileflow exporter on"),
])
def test_the_exporter_and_the_resumer_exit_0_on_sigterm(module, ready, tmp_path):
    """A stop (SIGTERM from `fileflow down` or the supervisor) is a clean end, not a crash."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FILEFLOW_"))}
    env.update({"PREFECT_API_URL": f"http://127.0.0.1:{_free_port()}/api", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_CLIENT_MAX_RETRIES": "0"})
    args = ["--every", "1"] if module.endswith("resumer") else ["--port", str(_free_port())]
    log = tmp_path / "log"
    proc = subprocess.Popen([sys.executable, "-m", module, *args], env=env, cwd=ROOT, stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: ready in log.read_text(), 120, f"{module} running")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
