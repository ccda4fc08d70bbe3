"""Proof in a real browser: a file's run as an operator sees it in the Prefect UI.

A real ``prefect server start`` (the test harness's server serves no UI), ``fileflow process``
on a real photo against it, ``fileflow show`` for the run's link, then Debian's Chromium
(headless, driven by Playwright, no browser download) opens that link and must show the run's
name, its tags, its state, its steps and its manifest artifact with the renditions listed.

Screenshots go to the test's temporary folder; with ``FILEFLOW_SCREENSHOTS=docs/img`` they
replace the ones in the docs (``docs/img/flow-run.png``, ``docs/img/manifest-artifact.png``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import _free_port, _service_missing

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CHROMIUM = "/usr/bin/chromium"
SAMPLES = Path(__file__).parent / "samples"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory):
    """A Prefect server with its UI, on SQLite in a temporary PREFECT_HOME; its base URL."""
    home = tmp_path_factory.mktemp("prefect-ui")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_UI_API_URL": f"{base}/api"})  # else the UI calls port 4200
    log = open(home / "server.log", "wb")
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Prefect server did not start: {(home / 'server.log').read_text()[-3000:]}")
            time.sleep(1)
        yield base, env
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


@pytest.fixture(scope="module")
def processed(ui_server, tmp_path_factory):
    """photo.jpg processed against that server; ``fileflow show``'s answer for it."""
    base, env = ui_server
    out = tmp_path_factory.mktemp("browser-out")
    env = {**env, "PREFECT_API_URL": f"{base}/api", "COLUMNS": "200"}
    run = subprocess.run([str(BIN / "fileflow"), "process", str(SAMPLES / "photo.jpg"), "--out", str(out)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    shown = subprocess.run([str(BIN / "fileflow"), "show", "photo.jpg", "--out", str(out), "--json"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        _service_missing("Chromium", f"{CHROMIUM} is missing (scripts/bootstrap.sh installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _save(page, name: str, tmp_path: Path) -> None:
    page.screenshot(path=str(tmp_path / name))
    target = os.environ.get("FILEFLOW_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / name, Path(target) / name)


def test_run_page_shows_name_state_steps_and_manifest_artifact(processed, browser, ui_server, tmp_path):
    base, _ = ui_server
    manifest = processed["manifest"]
    assert processed["run_url"] == f"{base}/runs/flow-run/{processed['flow_run_id']}"
    artifact_key = f"manifest-{manifest['file_id'][:32]}"

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(processed["run_url"], timeout=120_000)
    header = page.get_by_text("file:photo.jpg").first
    header.wait_for(timeout=120_000)
    for text in ("kind:image", "Completed", "image_renditions", "ocr", "language"):
        page.get_by_text(text, exact=True).first.wait_for(timeout=60_000)  # tag, state, steps
    assert page.get_by_text("batch:", exact=False).count() >= 1
    page.get_by_text("Artifacts", exact=True).first.click()
    page.get_by_text(artifact_key, exact=True).first.wait_for(timeout=60_000)
    page.get_by_text("fileflow manifest of photo.jpg", exact=True).first.wait_for(timeout=60_000)
    _save(page, "flow-run.png", tmp_path)

    page.get_by_text(artifact_key, exact=True).last.click()  # the artifact itself: the manifest summary
    for rendition in manifest["renditions"]:
        page.get_by_text(rendition["path"], exact=True).first.wait_for(timeout=60_000)
    page.get_by_text("photo.jpg: completed", exact=True).first.wait_for(timeout=60_000)  # the state message
    _save(page, "manifest-artifact.png", tmp_path)
    page.close()
