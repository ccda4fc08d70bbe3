"""Issue 20, item 3 on the distributed stack: every process of `fileflow up` is supervised, and a
process told to stop drains and exits 0.

One stack for the module (`fileflow up --workers 1` on a fresh PostgreSQL database, storage in a
local folder), every step on its pool, ``text_extract`` replaced through the documented
``FILEFLOW_CONVERTER_MODULES`` setting by ``tests.extra_converters.slow_text`` (the real
converter, 8 s slower on a file carrying a marker, so a step is surely in progress when its
worker is told to stop). Faults are injected as an operator or the kernel would: SIGKILL of a
supervised process, SIGTERM of one worker. What is read back: the port answering again, the
supervisor's record through `fileflow status --json --home`, the step run's state, the file's
manifest, the worker's log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from fileflow.home import supervised_state
from tests.conftest import _free_port, fresh_database, pg_admin, wait_until
from tests.extra_converters.slow_text import SLOW_MARKER

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

FILEFLOW = Path(sys.executable).parent / "fileflow"


def fileflow(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(FILEFLOW), *args], env={**env, "COLUMNS": "250"}, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def stack(postgres_url, tmp_path_factory):
    root = tmp_path_factory.mktemp("faults-supervise")
    database, db_name = fresh_database(postgres_url, "fileflow_faults_supervise")
    port, exporter_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FILEFLOW_"))}
    env.update({
        "FILEFLOW_CONVERTER_MODULES": json.dumps({"text_extract": "tests.extra_converters.slow_text"}),
        "FILEFLOW_PLACEMENT": "{}",  # every step on its pool: the worker told to stop holds one
    })
    home = root / "home"
    up = fileflow("up", "--workers", "1", "--database", database, "--home", str(home), "--out", str(root / "out"),
                  "--port", str(port), "--exporter-port", str(exporter_port), env=env)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        state = json.loads((home / "stack.json").read_text())
        env["PREFECT_API_URL"] = state["api_url"]
        # the supervisors' records as `fileflow up` left them, before any test kills a process
        # (the tests run in any order); a supervisor writes its record once its process started
        at_start = wait_until(lambda: (found := supervised_state(home)).keys() == state["processes"].keys()
                              and all(r.get("pid") for r in found.values()) and found,
                              60, "a supervisor's record for every process of stack.json")
        yield {"root": root, "home": home, "env": env, "api": state["api_url"], "exporter_port": exporter_port,
               "supervised_at_start": at_start}
    finally:
        down = fileflow("down", "--home", str(home), env=env, timeout=120)
        pg_admin(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        assert down.returncode == 0, down.stderr


def status_processes(stack) -> dict[str, dict]:
    result = fileflow("status", "--json", "--home", str(stack["home"]), env=stack["env"], timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return {p["name"]: p for p in json.loads(result.stdout)["processes"]}


def answers(url: str) -> bool:
    # /healthz asks the Prefect API in turn: on a loaded machine that takes seconds
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            return response.status == 200
    except OSError:
        return False


def supervised_pid(stack, name: str, other_than: int | None = None) -> int:
    def pid():
        record = supervised_state(stack["home"]).get(name) or {}
        return record.get("pid") if record.get("pid") not in (None, other_than) else None

    return wait_until(pid, 120, f"{name} running under its supervisor")


def test_every_process_of_the_stack_is_supervised(stack):
    recorded = json.loads((stack["home"] / "stack.json").read_text())["processes"]
    for name, record in stack["supervised_at_start"].items():
        assert record["supervisor_pid"] == recorded[name]  # the recorded group is the supervisor's
        assert (record["restarts"], record["crashes"]) == (0, 0), record
    for name in recorded:  # now, after whichever tests ran before: every process is there again
        pid = supervised_pid(stack, name)
        assert Path(f"/proc/{pid}").exists(), name
    names = set(recorded)
    assert {"server", "unoserver", "worker-mediator", "worker-warm-0", "exporter", "resumer"} <= names


def test_a_killed_exporter_comes_back_and_status_shows_one_restart(stack):
    metrics = f"http://127.0.0.1:{stack['exporter_port']}/healthz"
    wait_until(lambda: answers(metrics), 60, "the exporter's port answering before the kill")
    first = supervised_pid(stack, "exporter")
    os.kill(first, signal.SIGKILL)
    supervised_pid(stack, "exporter", other_than=first)
    wait_until(lambda: answers(metrics), 120, "the exporter's port answering again")
    row = status_processes(stack)["exporter"]
    assert (row["restarts"], row["crashes"], row["last_exit"]) == (1, 1, "signal SIGKILL"), row


@pytest.mark.parametrize("name", ["resumer", "unoserver"])
def test_a_killed_service_comes_back(stack, name):
    first = supervised_pid(stack, name)
    os.kill(first, signal.SIGKILL)
    second = supervised_pid(stack, name, other_than=first)
    row = status_processes(stack)[name]
    assert (row["restarts"], row["crashes"], row["pid"]) == (1, 1, second), row
    if name == "unoserver":  # what the killed one held (LibreOffice, its port) went with it
        log = stack["home"] / "logs" / "unoserver.log"
        wait_until(lambda: log.read_text().count("unoserver ready on") >= 2, 120, "a new LibreOffice ready")


def test_a_worker_told_to_stop_mid_step_finishes_it_and_exits_0(stack, tmp_path):
    """SIGTERM to the warm converter worker alone (a scale-in), while it runs a step: the step
    completes, the worker exits 0 (no traceback), its supervisor counts a restart but no crash
    and starts it again; the file completes."""
    path = tmp_path / "slow.txt"
    path.write_bytes(b"A file whose text extraction is in progress when its worker is told to stop. " * 4
                     + SLOW_MARKER + b"\n")
    submit = subprocess.Popen([str(FILEFLOW), "submit", str(path), "--wait", "--home", str(stack["home"])],
                              env={**stack["env"], "COLUMNS": "250"}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        step = wait_until(lambda: running_step(stack, "text_extract", path.name), 300, "the text_extract step running")
        worker = int(step["infrastructure_pid"].split(":")[1])
        assert worker == supervised_pid(stack, "worker-warm-0")
        log = stack["home"] / "logs" / "worker-warm-0.log"
        logged_before = len(log.read_text())
        os.kill(worker, signal.SIGTERM)
        output, _ = submit.communicate(timeout=600)
    finally:
        if submit.poll() is None:
            submit.kill()
    assert submit.returncode == 0, output
    assert flow_run(stack, step["id"])["state_type"] == "COMPLETED"  # finished by the worker told to stop
    supervised_pid(stack, "worker-warm-0", other_than=worker)
    row = status_processes(stack)["worker-warm-0"]
    assert (row["restarts"], row["crashes"], row["last_exit"]) == (1, 0, "exit code 0"), row
    said = log.read_text()[logged_before:]
    assert "Traceback" not in said and "cancel scope" not in said, said[-3000:]


def flow_runs(api: str, **flow_run_filter) -> list[dict]:
    body = json.dumps({"flow_runs": flow_run_filter, "limit": 200}).encode()
    request = urllib.request.Request(f"{api}/flow_runs/filter", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def flow_run(stack, run_id: str) -> dict:
    with urllib.request.urlopen(f"{stack['api']}/flow_runs/{run_id}", timeout=30) as response:
        return json.loads(response.read())


def running_step(stack, converter: str, file_name: str) -> dict | None:
    """The file's ``converter-step`` run of ``converter`` (named ``<converter>:<file>``), once Running."""
    runs = flow_runs(stack["api"], name={"any_": [f"{converter}:{file_name}"]}, state={"type": {"any_": ["RUNNING"]}})
    return next((r for r in runs if r.get("infrastructure_pid")), None)
