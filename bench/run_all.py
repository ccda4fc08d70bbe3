"""``make bench``: the five measurements of issue 6 in one run; writes ``bench/results.json``
(raw numbers) and ``docs/benchmarks.md`` (figures, machine, load, date, commit).

Order: one stack (PostgreSQL, one warm worker) for dispatch (item 2), efficiency (item 1, on
the light corpus and on the realistic one) and first preview (item 4); the embedded mediator's memory (item 5); then one stack per worker
count for throughput (item 3) and the stack processes' memory (item 5); with ``--soak-faults``
(off by default: it lasts as long as its files), the soak with faults of issue 20
(bench/soak_faults.py) on a stack of its own. Every stack is
stopped and its database dropped before the next starts.

The defaults finished in 17.5 minutes on this 2-core machine (load average 0.5-6.4); every size is a flag (see
``--help`` and docs/benchmarks.md for bigger runs).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, LoadSampler, machine, stack


def say(msg: str) -> None:
    print(msg, flush=True, file=sys.stderr)


def dispatch(home: Path, n: int, work: Path) -> dict:
    out = work / "dispatch.json"
    proc = subprocess.run(["nice", "-n", "5", sys.executable, str(ROOT / "bench" / "dispatch.py"), "--home", str(home),
                           "-n", str(n), "--json", str(out)], cwd=ROOT, capture_output=True, text=True)
    say(proc.stdout)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "run")
    parser.add_argument("--dispatch-n", type=int, default=10, help="item 2: steps of each kind")
    parser.add_argument("--rounds", type=int, default=2, help="item 1: rounds of the mixed corpus")
    parser.add_argument("--scale", type=int, default=1, help="item 1: the mix times this (14 files at 1)")
    parser.add_argument("--realistic-scale", type=int, default=2,
                        help="item 1 on the realistic corpus (bench/realistic.py): the mix times this")
    parser.add_argument("--preview-n", type=int, default=2, help="item 4: uploads of each kind")
    parser.add_argument("--memory-files", type=int, default=40, help="item 5: files in one embedded mediator")
    parser.add_argument("--throughput-files", type=int, default=16, help="item 3: files per worker count")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="item 3: workers per pool")
    parser.add_argument("--placements", nargs="+", default=["pool", "light-local", "light-local-2api"], choices=["pool", "light-local", "pool-certifi", "light-local-2api"],
                        help="item 3: where a text file's steps run; the first at every worker count")
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    parser.add_argument("--py-spy", default=py_spy, help="py-spy for the profile (item 3; a dev dependency)")
    parser.add_argument("--calls-files", type=int, default=20, help="server calls: files per placement")
    parser.add_argument("--calls-before", type=Path,
                        help="server calls: another checkout's .venv/bin/fileflow, measured side by side")
    parser.add_argument("--soak-faults", action="store_true",
                        help="also run the soak with faults (bench/soak_faults.py; long, so off by default)")
    parser.add_argument("--soak-files", type=int, default=300, help="soak with faults: files")
    parser.add_argument("--soak-fault-every", type=float, default=60.0, help="soak with faults: seconds between faults")
    parser.add_argument("--soak-faults-cycle", default="worker,child,mediator,server,s3",
                        help="soak with faults: the faults, cycled")
    parser.add_argument("--soak-fault-count", type=int, default=10, help="soak with faults: faults in all")
    parser.add_argument("--soak-s3", action=argparse.BooleanOptionalAction, default=True,
                        help="soak with faults: storage in S3 on moto (an S3 outage among the faults)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["dispatch", "efficiency", "efficiency-realistic",
                                                                 "preview", "memory", "throughput", "server-calls"])
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()

    import efficiency
    import first_preview
    import memory
    import report
    import server_calls
    import soak_faults
    import throughput

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    results: dict = {"machine": machine(), "command": "python bench/run_all.py " + " ".join(sys.argv[1:]),
                     "parameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    started = time.monotonic()

    def save() -> None:
        """After every item: an interrupted run still leaves what it measured."""
        results["machine"]["load_average_during_run"] = load.summary()
        results["machine"]["duration_min"] = round((time.monotonic() - started) / 60, 1)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        args.doc.write_text(report.markdown(results))

    def item(key: str, fn, *a, **kw) -> None:
        try:
            results[key] = fn(*a, **kw)
        except Exception as exc:  # one broken item must not cost the others' figures
            say(f"   {key} failed: {type(exc).__name__}: {exc}")
            results.setdefault("errors", {})[key] = f"{type(exc).__name__}: {exc}"
        save()

    with LoadSampler() as load:
        if {"dispatch", "efficiency", "efficiency-realistic", "preview"} - set(args.skip):
            say("== stack for dispatch, efficiency, first preview")
            with stack(args.work / "home", workers=1, db_name="bench_main", storage=args.work / "storage") as s:
                if "dispatch" not in args.skip:
                    say("== item 2: dispatch")
                    item("dispatch", dispatch, args.work / "home", args.dispatch_n, args.work)
                if "efficiency" not in args.skip:
                    say("== item 1: efficiency")
                    item("efficiency", efficiency.run, args.work / "efficiency", rounds=args.rounds, scale=args.scale,
                         stack=s, postgres=True)
                if "efficiency-realistic" not in args.skip:
                    say("== item 1: efficiency, realistic corpus")
                    item("efficiency_realistic", efficiency.run, args.work / "efficiency", rounds=args.rounds,
                         scale=args.realistic_scale, stack=s, postgres=True, corpus="realistic")
                if "preview" not in args.skip:
                    say("== item 4: first preview")
                    item("first_preview", first_preview.run, args.work / "preview", s, n=args.preview_n)
        if "server-calls" not in args.skip:
            say("== what one file costs the server (API calls, events, runs)")
            item("server_calls", server_calls.run, args.work / "server_calls", files=args.calls_files,
                 before=args.calls_before)
        if "memory" not in args.skip:
            say("== item 5: one embedded mediator")
            item("memory_embedded", memory.run, args.work / "memory", files=args.memory_files)
        if "throughput" not in args.skip:
            say("== item 3: throughput")
            def partial(figures: dict) -> None:
                results["throughput"] = figures
                save()

            item("throughput", throughput.run, args.work / "throughput", workers=args.workers,
                 files=args.throughput_files, py_spy=args.py_spy, on_result=partial, placements=args.placements)
        if args.soak_faults:
            say("== soak with faults (issue 20)")
            item("soak_faults", soak_faults.run, args.work / "soak_faults", files=args.soak_files,
                 fault_every_s=args.soak_fault_every, faults=args.soak_faults_cycle.split(","), fault_count=args.soak_fault_count or None,
                 use_s3=args.soak_s3)
    save()
    say(f"wrote {args.json} and {args.doc} in {results['machine']['duration_min']} min")


if __name__ == "__main__":
    main()
