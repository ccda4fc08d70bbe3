"""Measure what each converter step costs on the bundled samples, for bench/scaling.py.

Runs the real pipeline (`fileflow process`, embedded default: warm child processes, local
storage) over tests/samples ROUNDS times, each time into a fresh output folder so that no step
is served from the cache, and reads every step's ``duration_s`` from the manifests. Also
measures the cold start a ``--run-once`` worker pod pays before its step can begin: a fresh
Python process importing Prefect's engine and the step flow (Prefect's process worker pays
that twice: the worker, then ``python -m prefect.engine``).

    .venv/bin/python bench/converter_costs.py [--rounds 3] [--out bench/converter_costs.json]

Writes JSON with the machine and date; the figures are medians over rounds and samples.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "samples"


def run_pipeline(out: Path, home: Path) -> list[dict]:
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    cmd = [str(ROOT / ".venv" / "bin" / "fileflow"), "process", str(SAMPLES), "--out", str(out)]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    manifests = [json.loads(p.read_text()) for p in sorted((out / "manifests").glob("*.json"))]
    if not manifests:
        raise RuntimeError(f"no manifests from {cmd}: {result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return manifests


def cold_start_s() -> float:
    """Wall time of a fresh interpreter importing what a step's processes import."""
    code = "import prefect.engine, flows.step"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                   env={**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "converter_costs.json")
    args = parser.parse_args(argv)

    step_times: dict[str, list[float]] = defaultdict(list)
    kinds: dict[str, str] = {}
    steps_by_kind: dict[str, list[str]] = {}
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="fileflow-costs-") as tmp:
        home = Path(tmp) / "prefect-home"  # one home: the first round pays Prefect's set-up
        for i in range(args.rounds):
            for manifest in run_pipeline(Path(tmp) / f"out-{i}", home):
                name = manifest.get("name", "?")
                kinds[name] = manifest.get("kind", "?")
                steps_by_kind.setdefault(manifest.get("kind", "?"), [s["name"] for s in manifest["steps"]])
                for step in manifest["steps"]:
                    if step["status"] == "completed" and not step.get("cached"):
                        step_times[step["name"]].append(step["duration_s"])
                    elif step["status"] == "failed":
                        failed.append(f"{name}:{step['name']}")
            print(f"round {i + 1}/{args.rounds} done", file=sys.stderr)
    colds = [cold_start_s() for _ in range(5)]

    report = {
        "what": "seconds per converter step on tests/samples (warm child process, local storage), "
                "from the manifests of `fileflow process`; cold_start_s: a fresh Python importing "
                "prefect.engine and flows.step",
        "measured_on": {
            "date": dt.date.today().isoformat(),
            "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
            "python": platform.python_version(),
        },
        "rounds": args.rounds,
        "samples": kinds,
        "steps_by_kind": steps_by_kind,
        "step_seconds": {
            name: {"median": round(statistics.median(v), 4), "max": round(max(v), 4), "n": len(v)}
            for name, v in sorted(step_times.items())
        },
        "cold_start_s": {"median": round(statistics.median(colds), 3), "max": round(max(colds), 3), "n": len(colds)},
        "failed_steps": sorted(set(failed)),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["step_seconds"], indent=1))
    print("cold start", report["cold_start_s"])


if __name__ == "__main__":
    main()
