"""Item 5 (embedded part): peak RSS of one mediator process holding a batch of many files.

``fileflow process`` on ``--files`` distinct small text files, all handed to one mediator
process at once (``max_active_files`` of them running, the rest waiting in that process),
sampled from ``/proc`` every 0.2 s: the mediator process itself, and its whole tree (the warm
child processes and Prefect's embedded SQLite server). The stack's processes (server,
distributed mediator, converter workers) are measured during the throughput runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, ProcSampler, make_files


def run(work: Path, *, files: int) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / f"text-{files}"
    shutil.rmtree(corpus, ignore_errors=True)
    make_files(corpus, {"text": files}, offset=50_000)
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PREFECT_HOME": str(work / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    started = time.perf_counter()
    with open(work / "memory.log", "ab") as log:
        proc = subprocess.Popen(["nice", "-n", "5", str(Path(sys.executable).parent / "fileflow"), "process",
                                 str(corpus), "--out", str(out)], env=env, cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT)
        with ProcSampler({"embedded": proc.pid}, interval_s=0.2) as sampler:
            code = proc.wait()
    wall = time.perf_counter() - started
    manifests = list((out / "manifests").glob("*.json"))
    return {"files": files, "exit": code, "manifests": len(manifests), "wall_s": round(wall, 1),
            "max_active_files": json.loads(subprocess.run(
                [sys.executable, "-c", "from fileflow.settings import PipelineSettings as P; print(P().max_active_files)"],
                capture_output=True, text=True, cwd=ROOT).stdout or "null"),
            **sampler.memory_mib()["embedded"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=Path(".bench/memory"))
    parser.add_argument("--files", type=int, default=100)
    args = parser.parse_args()
    print(json.dumps(run(args.work, files=args.files), indent=2))


if __name__ == "__main__":
    main()
