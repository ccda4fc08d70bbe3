"""Faults that are not process deaths, on the real distributed stack (issue 4, faults 2, 4, 5, 6).

One `fileflow up` for the whole module: a Prefect server on PostgreSQL, the mediator worker, a
warm converter worker, storage in an S3 bucket on moto's server reached through a TCP proxy the
test can cut (fileflow/testing/tcp_proxy.py; moto would lose its data if stopped). The stack runs
``text_extract`` from ``tests.extra_converters.faulty_text`` through the documented
``FILEFLOW_CONVERTER_MODULES`` setting: the real converter, except that it segfaults or hangs
on a file carrying a marker. Every test submits a few files with ``fileflow submit --wait``,
injects its fault, checks each file's manifest and ends with ``fileflow audit`` (exit 0).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from blocks.storage import StorageConfig, Store, manifest_key
from converters.inspect import sha256_of
from tests.conftest import _free_port, wait_until
from tests.extra_converters.faulty_text import HANG_MARKER, SEGFAULT_MARKER, SPEC as FAULTY
from fileflow.testing.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

FILEFLOW = Path(sys.executable).parent / "fileflow"
BUCKET = "fileflow-faults"
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def fileflow(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(FILEFLOW), *args], env={**env, "COLUMNS": "250"}, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def s3_proxy(s3_endpoint):
    upstream = urlsplit(s3_endpoint)
    proxy = TcpProxy(upstream.hostname, upstream.port)
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def stack(postgres_url, s3_endpoint, s3_proxy, tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    port, exporter_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FILEFLOW_"))}
    env.update({
        "FILEFLOW_STORAGE_KIND": "s3", "FILEFLOW_STORAGE_BUCKET": BUCKET, "FILEFLOW_STORAGE_PREFIX": "faults",
        "FILEFLOW_STORAGE_ENDPOINT_URL": s3_proxy.url, "FILEFLOW_STORAGE_REGION": "us-east-1",
        "FILEFLOW_STORAGE_ACCESS_KEY_ID": "testing", "FILEFLOW_STORAGE_SECRET_ACCESS_KEY": "testing",
        "FILEFLOW_CONVERTER_MODULES": json.dumps({"text_extract": "tests.extra_converters.faulty_text"}),
        # every step on its pool: these tests follow each step as a run on its pool and kill its
        # worker (the design's placement, light steps in the mediator, is test_distributed's)
        "FILEFLOW_PLACEMENT": "{}",
        # this test's own clients (submit --wait, audit) ride out the server restart like the stack's
        "PREFECT_CLIENT_MAX_RETRIES": "8",
    })
    prepared = fileflow("storage", "prepare-bucket", env=env, timeout=60)
    assert prepared.returncode == 0, prepared.stderr
    home = root / "home"
    up = fileflow("up", "--workers", "1", "--database", postgres_url, "--home", str(home), "--out", str(root / "out"),
                  "--port", str(port), "--exporter-port", str(exporter_port), env=env, timeout=600)
    assert up.returncode == 0, up.stdout + up.stderr
    state = json.loads((home / "stack.json").read_text())
    env["PREFECT_API_URL"] = state["api_url"]
    # the test reads storage straight from moto, whatever the proxy is doing
    store = Store(StorageConfig(kind="s3", bucket=BUCKET, prefix="faults", endpoint_url=s3_endpoint,
                                region="us-east-1", access_key_id="testing", secret_access_key="testing"))
    yield {"root": root, "home": home, "env": env, "api": state["api_url"], "store": store}
    state = json.loads((home / "stack.json").read_text())  # the server's pid changes on a restart
    down = fileflow("down", "--home", str(home), env=env, timeout=120)
    assert down.returncode == 0, down.stderr
    time.sleep(1)
    left = [name for name, pid in state["processes"].items() if Path(f"/proc/{pid}").exists()
            and "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]]
    assert not left, f"still running after fileflow down: {left}"


# -- helpers --------------------------------------------------------------------------------


def text_files(folder: Path, names: list[str], body: str, marker: dict[str, bytes] | None = None) -> list[Path]:
    """Small distinct text files (storage is content-addressed: every test needs bytes of its own)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / name
        extra = (marker or {}).get(name, b"")
        path.write_bytes(f"{body} This is the file called {name}. ".encode() * 4 + extra + b"\n")
        paths.append(path)
    return paths


def start_submit(stack, paths: list[Path]) -> subprocess.Popen:
    return subprocess.Popen(
        [str(FILEFLOW), "submit", *map(str, paths), "--wait", "--home", str(stack["home"])],
        env={**stack["env"], "COLUMNS": "250"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def flow_runs(api: str, **flow_run_filter) -> list[dict]:
    body = json.dumps({"flow_runs": flow_run_filter, "limit": 200}).encode()
    request = urllib.request.Request(f"{api}/flow_runs/filter", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())



def routers(stack, paths: list[Path]) -> list[dict]:
    return flow_runs(stack["api"], name={"any_": [f"file:{p.name}" for p in paths]})


def manifests(stack, paths: list[Path]) -> dict[str, dict | None]:
    """Each file's manifest by name, None where it has none (lost)."""
    store = stack["store"]
    found = {}
    for path in paths:
        key = manifest_key(sha256_of(path))
        found[path.name] = json.loads(store.get_bytes(key)) if store.exists(key) else None
    return found


def step_error(manifest: dict, step: str) -> dict | None:
    return next((s["error"] for s in manifest["steps"] if s["name"] == step), None)


def audit_clean(stack) -> None:
    """`fileflow audit` over the whole stack: nothing lost, nothing in flight, nothing silent."""
    result = fileflow("audit", "--home", str(stack["home"]), "--stuck-after", "0", "--json", env=stack["env"],
                      timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["lost"] == 0 and not report["findings"], report


def report(name: str, files: dict[str, dict | None], seconds: float) -> None:
    """The figures of docs/reliability.md's table, printed (pytest -s shows them)."""
    statuses = [m["status"] if m else "lost" for m in files.values()]
    failed = {n: f"{e['type']} in {s['name']}" for n, m in files.items() if m for s in m["steps"]
              if (e := s.get("error"))}
    print(f"\n[{name}] files in: {len(files)}, completed: {statuses.count('completed')}, "
          f"failed: {statuses.count('failed')} {failed}, lost: {statuses.count('lost')}, {seconds:.0f} s")


# -- faults 2 and 6: a converter that segfaults / hangs on one file of a batch ----------------


@pytest.fixture(scope="module")
def faulty_batch(stack, tmp_path_factory):
    folder = tmp_path_factory.mktemp("faulty")
    paths = text_files(folder, ["crash.txt", "hang.txt", "good-1.txt", "good-2.txt"],
                       "One bad file must not hurt the others in its batch.",
                       {"crash.txt": SEGFAULT_MARKER, "hang.txt": HANG_MARKER})
    started = time.monotonic()
    result = fileflow("submit", *map(str, paths), "--wait", "--home", str(stack["home"]), env=stack["env"])
    files = manifests(stack, paths)
    report("segfault + hang", files, time.monotonic() - started)
    assert result.returncode == 1, result.stdout[-3000:]  # two files failed, as they must
    steps = flow_runs(stack["api"], name={"any_": [f"text_extract:{p.name}" for p in paths]})
    return {"files": files, "steps": steps}


def _attempts(batch, name: str) -> list[str]:
    return sorted(r["state"]["type"] for r in batch["steps"] if r["name"] == f"text_extract:{name}")


def test_segfault_on_one_file_fails_that_file_only_after_its_retries(stack, faulty_batch):
    files = faulty_batch["files"]
    crash = files["crash.txt"]
    assert crash["status"] == "failed"
    error = step_error(crash, "text_extract")
    assert error["type"] == "ToolCrashed" and "SIGSEGV" in error["message"], error
    assert step_error(crash, "language") is None  # skipped: it needs the text
    # the first attempt and every retry ran on the pool, each crashed its child
    assert _attempts(faulty_batch, "crash.txt") == ["FAILED"] * (1 + FAULTY.retries)
    for name in ("good-1.txt", "good-2.txt"):
        assert files[name]["status"] == "completed", files[name]
        assert files[name]["text"] and files[name]["language"] == "en"
        assert _attempts(faulty_batch, name) == ["COMPLETED"]
    audit_clean(stack)


def test_hanging_step_is_stopped_at_its_timeout_retried_then_failed(stack, faulty_batch):
    hang = faulty_batch["files"]["hang.txt"]
    assert hang["status"] == "failed"
    error = step_error(hang, "text_extract")
    assert error["type"] == "ToolTimeout" and f"{FAULTY.timeout_s:g}" in error["message"], error
    assert _attempts(faulty_batch, "hang.txt") == ["FAILED"] * (1 + FAULTY.retries)
    audit_clean(stack)


# -- fault 5: S3 unreachable for 30 seconds -----------------------------------------------------

OUTAGE_S = 30


def test_s3_unreachable_for_30_seconds_loses_nothing(stack, s3_proxy, tmp_path):
    paths = text_files(tmp_path, [f"outage-{i}.txt" for i in range(4)], "Storage went away for half a minute.")
    started = time.monotonic()
    submit = start_submit(stack, paths)
    try:
        # the originals are stored before the runs are created; cut once every run exists and
        # steps are under way (a mediator's run takes tens of seconds to start on a busy machine)
        wait_until(lambda: len(routers(stack, paths)) == len(paths), 300, "the router runs were created")
        wait_until(lambda: flow_runs(stack["api"], name={"any_": [f"inspect:{p.name}" for p in paths]}), 300,
                   "a step was started")
        refused = s3_proxy.refused
        s3_proxy.cut()
        try:
            in_flight = [r["name"] for r in routers(stack, paths) if r["state"]["type"] not in FINAL]
            time.sleep(OUTAGE_S)  # the fault itself: the endpoint stays unreachable this long
        finally:
            s3_proxy.restore()
        refused = s3_proxy.refused - refused
        output, _ = submit.communicate(timeout=600)
    finally:
        submit.kill()
    files = manifests(stack, paths)
    report("S3 outage", files, time.monotonic() - started)
    print(f"[S3 outage] {len(in_flight)} files in flight at the cut; {refused} connections refused during it")
    assert in_flight and refused, "nothing tried to reach S3 during the outage: it tested nothing"
    assert submit.returncode == 0, output[-3000:]
    assert all(m and m["status"] == "completed" for m in files.values()), files
    audit_clean(stack)


# -- fault 4: the Prefect server restarted during a burst ---------------------------------------


def test_server_restart_during_a_burst_every_file_reaches_a_terminal_state(stack, tmp_path):
    paths = text_files(tmp_path, [f"burst-{i:02d}.txt" for i in range(10)], "The server restarted meanwhile.")
    started = time.monotonic()
    submit = start_submit(stack, paths)
    try:
        wait_until(lambda: len(routers(stack, paths)) == len(paths), 300, "the router runs were created")
        wait_until(lambda: any(r["state"]["type"] == "RUNNING" for r in routers(stack, paths)), 300,
                   "a file's run was running")
        in_flight = [r["name"] for r in routers(stack, paths) if r["state"]["type"] not in FINAL]
        restarted = fileflow("restart-server", "--home", str(stack["home"]), env=stack["env"], timeout=300)
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        print(f"\n[server restart] {len(in_flight)} of {len(paths)} files in flight; "
              f"restarted after {time.monotonic() - started:.0f} s")
        output, _ = submit.communicate(timeout=900)
    finally:
        submit.kill()
    files = manifests(stack, paths)
    report("server restart", files, time.monotonic() - started)
    assert in_flight
    runs = routers(stack, paths)
    assert len(runs) == len(paths) and all(r["state"]["type"] in FINAL for r in runs), \
        {r["name"]: r["state"]["type"] for r in runs}
    assert all(m and m["status"] in ("completed", "failed") for m in files.values()), files
    assert submit.returncode == 0, output[-3000:]  # and in fact every one completed
    audit_clean(stack)
