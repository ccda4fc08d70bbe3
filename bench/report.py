"""docs/benchmarks.md from the raw numbers of one ``make bench`` run (bench/results.json).

Everything in the page comes from that run; verdicts against the issue's goals are computed
from the figures (missed by how much), and the bottleneck is the process tree that used the
most CPU per file during the throughput runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

GOALS = {"ratio": 1.10, "local_ms": 50, "pool_ms": 1000, "files_per_hour": 20_000, "jpeg_preview_s": 2.0}


def _verdict(value: float | None, goal: float, *, higher_is_better: bool = False) -> str:
    if value is None:
        return "not measured"
    met = value >= goal if higher_is_better else value <= goal
    if met:
        return "**met**"
    factor = goal / value if higher_is_better else value / goal
    return f"**missed**, {factor:.1f}x off"


def _f(x, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _server_cpu(cpu: dict) -> float | None:
    """The Prefect server's CPU seconds: its API process(es) and, when apart, its loop services."""
    if cpu.get("server") is None:
        return None
    return round(cpu["server"] + cpu.get("server-services", 0.0), 3)


def _side_by_side(title: str, a: dict, b: dict) -> list[str]:
    """One paragraph comparing two throughput runs of the same report: ``a`` against ``b``."""
    ca, cb = ({**x["cpu_s_per_file"], "server": _server_cpu(x["cpu_s_per_file"])} for x in (a, b))
    cpu = ", ".join(f"{label} {ca.get(key)} against {cb.get(key)} s" for key, label in (
        ("server", "server"), ("worker-mediator", "mediator"), ("converter-workers", "converter workers")))
    return ["", f"**{title}**, same run, {a['workers_per_pool']} worker(s) per pool: whole-batch throughput "
            f"{a['overall_files_per_hour'] / b['overall_files_per_hour']:.2f}x ({_f(a['overall_files_per_hour'], 0)} "
            f"against {_f(b['overall_files_per_hour'], 0)} files/h); CPU per file: {cpu}."]


CORPUS_TEXT = {
    "light": "the `light` corpus (`fileflow/testing/samplegen/corpus.py`: test-sized files: 640x420 pictures, one-page PDFs, "
             "one-second 160x120 clips), where the converters cost least and any price per file weighs most",
    "realistic": "the `realistic` corpus (`bench/realistic.py`: the sizes users upload: 12-megapixel photos, "
                 "12-page PDFs, five-page DOCX, 10-second 720p videos, archives of a photo, a PDF and a text)",
}


def _efficiency(eff: dict) -> list[str]:
    corpus = eff.get("corpus", "light")
    size = eff.get("corpus_bytes_per_round")
    out = [
        f"## 1{'b' if corpus == 'realistic' else 'a'}. Efficiency: the price of the mediator, {corpus} corpus",
        "",
        f"{eff['files_per_round']} files per round ({', '.join(f'{v} {k}' for k, v in eff['mix'].items())}"
        + (f"; {size / 2**20:.1f} MiB" if size else "") + f") of {CORPUS_TEXT[corpus]}; a fresh "
        f"corpus each round, {eff['rounds']} rounds; the ways in a rotating order. `direct` = the same "
        "converter functions in a process pool of the same size, no orchestration (`bench/direct.py`); "
        "`embedded-postgres` = `fileflow process` with its Prefect on a PostgreSQL database instead of SQLite. "
        "CPU: the way's whole process tree, sampled from /proc (the stack's processes for `distributed`).",
        "",
        "| way | wall s, median | min-max | CPU s, median | ratio to direct, median | ratio min-max | goal < 1.10 |",
        "|---|---|---|---|---|---|---|",
    ]
    for way in ("direct", "embedded", "embedded-postgres", "distributed"):
        if f"{way}_wall_s" not in eff:
            continue
        w, c = eff[f"{way}_wall_s"], eff[f"{way}_cpu_s"]
        ratio = eff.get(f"{way}_ratio")
        out.append(f"| {way} | {_f(w['median'])} | {_f(w['min'])}-{_f(w['max'])} | {_f(c['median'])} | "
                   + (f"{ratio['median']:.2f} | {ratio['min']:.2f}-{ratio['max']:.2f} | "
                      f"{_verdict(ratio['median'], GOALS['ratio'])} |" if ratio else "1 | - | - |"))
    bad = [(e["round"], way, e[way]) for e in eff["raw"] for way in ("embedded", "embedded-postgres", "distributed")
           if way in e and e[way].get("failed")]
    return out + ["", "Every file ended with a manifest in every way." if not bad else f"Files that failed: {bad}.", ""]


def server_calls_section(calls: dict | None) -> list[str]:
    """What one file costs the Prefect server (bench/server_calls.py), this checkout and, where
    measured side by side, the one before."""
    if not calls:
        return []
    out = [f"## 6. What one file costs the Prefect server ({calls['files']} light text files per placement, "
           "`bench/server_calls.py`)", "",
           "API calls counted from the server's access log between the first submit and the last manifest; "
           "an idle stack's calls in as long a time (polls, heartbeats) beside them. Events from Prefect's "
           "`events` table; trigger evaluations: events an automation's trigger expects or waits after.", "",
           "| checkout | placement | wall s | API calls/file | of which idle stack | events/file | "
           "trigger evaluations/file | flow runs/file | task runs/file |",
           "|---|---|---|---|---|---|---|---|---|"]
    rows = [("this", x) for x in calls["this"]] + [("before", x) for x in calls.get("before") or ()]
    for who, x in rows:
        evaluations = sum(x["trigger_evaluations_per_file"].values())
        name = who if who == "this" else f"before ({calls.get('before_checkout')})"
        out.append(f"| {name} | {x['placement']} | {x['wall_s']} | {x['api_calls_per_file']} | "
                   f"{x['idle_api_calls_per_file']} | {x['events_per_file']} | {round(evaluations, 2)} | "
                   f"{x['flow_runs_per_file']} | {x['task_runs_per_file']} |")
    top = calls["this"][0]
    out += ["", f"Busiest routes per file, this checkout, {top['placement']}: " + ", ".join(
        f"`{route}` {n}" for route, n in list(top["api_calls_by_route_per_file"].items())[:8]) + ".", ""]
    return out


def markdown(r: dict) -> str:
    m = r["machine"]
    load = m.get("load_average_during_run", {})
    out = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`bench/run_all.py`); raw numbers in `bench/results.json`. The machine is",
        "shared and noisy: compare the ratios measured side by side in the same run, not absolute times.",
        "",
        f"- date (UTC): {m['date_utc']}; commit `{m['commit']}`; run took {m.get('duration_min')} min",
        f"- machine: {m['cores']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM, Python {m['python']}",
        f"- load average (1 min) during the run: min {load.get('min')}, median {load.get('median')}, "
        f"max {load.get('max')} (the benchmark's own stacks included; a shared machine)",
        f"- command: `{r['command']}`",
        "",
    ]
    for key in ("efficiency", "efficiency_realistic"):
        if r.get(key):
            out += _efficiency(r[key])
    d = r.get("dispatch")
    if d and "figures" in d:
        f = d["figures"]
        out += [
            "## 2. Dispatch overhead per step",
            "",
            "`bench/dispatch.py`: the same near-no-op step (`inspect` on an 8-byte file) run in a warm local child,",
            "on a pool served by fileflow's warm worker, and on a pool served by Prefect's process worker, interleaved.",
            "",
            "| placement | median ms | p95 ms | min ms | max ms | n | goal |",
            "|---|---|---|---|---|---|---|",
        ]
        for key, label, goal in (("local", "local (warm child)", GOALS["local_ms"]),
                                 ("warm", "pool, warm worker", GOALS["pool_ms"]),
                                 ("process", "pool, Prefect process worker", GOALS["pool_ms"])):
            x = f[key]
            out.append(f"| {label} | {_f(x['median_ms'])} | {_f(x['p95_ms'])} | {_f(x['min_ms'])} | {_f(x['max_ms'])} | "
                       f"{x['n']} | < {goal} ms: {_verdict(x['p95_ms'], goal)} (p95) |")
        out += ["", f"Ratios of the medians: warm pool / local {f['warm']['median_ms'] / f['local']['median_ms']:.1f}x, "
                f"process pool / warm pool {f['process']['median_ms'] / f['warm']['median_ms']:.1f}x.", ""]
        phases = d.get("phases_median_ms")
        if phases:
            out += ["Where a pool step's time goes (medians in ms, by the server's state timestamps): `create` the "
                    "mediator creating the run, `claim` until a worker set it Pending, `start` until Running, "
                    "`run` the step, `notice` until the mediator had read its end.", "",
                    "| served by | create | claim | start | run | notice |", "|---|---|---|---|---|---|"]
            for key, label in (("warm", "warm worker"), ("process", "Prefect process worker")):
                if key in phases:
                    out.append(f"| {label} | " + " | ".join(_f(phases[key][p]) for p in
                                                            ("create", "claim", "start", "run", "notice")) + " |")
            out.append("")
    t = r.get("throughput")
    if t and t.get("runs"):
        out += [
            "## 3. Orchestration throughput (distributed stack on PostgreSQL)",
            "",
            f"{t['files_per_run']} distinct small text files submitted at once per worker count (`bench/throughput.py`); "
            "each is routed like any upload: one `process-file` flow run with its three steps `inspect`, `text_extract` "
            "and `language`, whose converter work is milliseconds (column 'converter ms/step'). "
            "Steady state = completions between 20 % and 80 % of the batch.",
            "",
            "Placement `pool` runs all three on their pools (`FILEFLOW_PLACEMENT='{}'`); `light-local` runs them in the "
            "mediator's warm child processes (the design's placement of light steps and `fileflow up`'s default), "
            "leaving the file's `process-file` run as its only flow run. `light-local-2api` is `light-local` "
            "on `fileflow up --redis ... --server-workers 2` (two API processes and one of loop services, sharing "
            "Redis); its server CPU is theirs together, and Redis's own CPU is in the raw figures.",
            "",
            "| mediator, placement | workers per pool | files in / manifests out | steady files/h | whole batch files/h | converter ms/step, median "
            "| CPU s per file: server / mediator / converter workers / submitter | goal 20,000/h |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for x in t["runs"]:
            c = x["cpu_s_per_file"]
            out.append(f"| {x.get('mediator', 'process')}, {x.get('placement', 'pool')} | {x['workers_per_pool']} | {x['files_in']} / {x['manifests_out']} ({x['completed']} completed) | "
                       f"{_f(x['steady_files_per_hour'], 0)} | {_f(x['overall_files_per_hour'], 0)} | "
                       f"{_f(x['converter_ms_per_step_median'])} | {_server_cpu(c)} / {c.get('worker-mediator')} / "
                       f"{c.get('converter-workers')} / {c.get('submitter')} | "
                       f"{_verdict(x['steady_files_per_hour'], GOALS['files_per_hour'], higher_is_better=True)} |")
        out += ["", "The idle stack's own cost (15 s with no work before each batch: polls, heartbeats, event "
                "streams), CPU seconds per second: " + "; ".join(
                    f"{x.get('mediator', 'process')} mediator, {x.get('placement', 'pool')}, {x['workers_per_pool']} worker(s): " + ", ".join(f"{k} {v}" for k, v in x.get(
                        "idle_cpu_s_per_s", {}).items() if v) for x in t["runs"]) + "."]
        same = {x.get("mediator", "process"): x for x in t["runs"]
                if x["workers_per_pool"] == t["runs"][0]["workers_per_pool"] and x.get("placement", "pool") == "pool"}
        placed = {x.get("placement", "pool"): x for x in t["runs"] if x.get("mediator", "process") == "warm"
                  and x["workers_per_pool"] == t["runs"][0]["workers_per_pool"]}
        for a, b, title in (("light-local", "pool", "Light steps local against every step on a pool, warm mediator"),
                            ("pool", "pool-certifi", "The stack's one-certificate CA bundle against Prefect's certifi "
                                                     "bundle, every step on its pool"),
                            ("light-local-2api", "light-local", "Two API processes sharing Redis against one server "
                                                                "process, light steps local")):
            if a in placed and b in placed and placed[a]["overall_files_per_hour"] and placed[b]["overall_files_per_hour"]:
                out += _side_by_side(title, placed[a], placed[b])
        if "warm" in same and "process" in same and same["warm"]["steady_files_per_hour"] and same["process"]["steady_files_per_hour"]:
            w, p = same["warm"], same["process"]
            out += ["", f"**Warm mediator against Prefect's process worker**, same run, {w['workers_per_pool']} worker(s) "
                    f"per pool: steady throughput {w['steady_files_per_hour'] / p['steady_files_per_hour']:.2f}x; mediator CPU "
                    f"per file {w['cpu_s_per_file'].get('worker-mediator')} against {p['cpu_s_per_file'].get('worker-mediator')} s; "
                    f"server CPU per file {w['cpu_s_per_file'].get('server')} against {p['cpu_s_per_file'].get('server')} s."]
        first = t["runs"][0]
        cpu = {k: v for k, v in first["cpu_s_per_file"].items()}
        total = sum(cpu.values())
        top = max(cpu, key=cpu.get)
        out += [
            "",
            f"**Bottleneck** (CPU per file, {first.get('mediator', 'process')} mediator, {first['workers_per_pool']} worker run): `{top}` uses "
            f"{cpu[top]:.2f} of {total:.2f} CPU-s per file ({100 * cpu[top] / total:.0f} %). With every core busy, "
            f"2 cores give at most {2 * 3600 / total:,.0f} files/h at this cost per file.",
            "",
        ]
        for role, prof in (first.get("profile") or {}).items():
            if prof:
                out.append(f"py-spy on the {role} ({prof['samples']} samples, 50 Hz, with subprocesses): share of "
                           "samples in a frame (inclusive; Prefect's server, runner and engines, fileflow) and "
                           "where the CPU was (leaf frames):")
                out.append("")
                out.append("| inclusive % | frame | leaf % | frame |")
                out.append("|---|---|---|---|")
                for (name, share), (lname, lshare) in zip(prof["top_inclusive"], prof["top_leaf"]):
                    out.append(f"| {share} | `{name}` | {lshare} | `{lname}` |")
                out.append("")
    pv = r.get("first_preview")
    if pv:
        out += [
            "## 4. Upload to first preview (distributed stack, one upload at a time)",
            "",
            "From before `fileflow submit`'s call to the first `preview-*.jpg` in storage (`bench/first_preview.py`); "
            + (f"steps in the mediator's warm children: {', '.join(f'`{c}`' for c in pv['local_steps'])}, the others "
               "on their pools." if pv.get("local_steps") else
               "every step on its pool (`fileflow up`'s default when this ran)."),
            "",
            "| file | first preview median s | p95 s | min-max s | manifest median s | n | goal |",
            "|---|---|---|---|---|---|---|",
        ]
        for kind, label in (("jpeg", "JPEG"), ("docx", "DOCX"), ("video", "10 s video")):
            x = pv[kind]
            goal = _verdict(x.get("median"), GOALS["jpeg_preview_s"]) if kind == "jpeg" else "-"
            out.append(f"| {label} | {_f(x.get('median'), 2)} | {_f(x.get('p95'), 2)} | {_f(x.get('min'), 2)}-"
                       f"{_f(x.get('max'), 2)} | {_f(x['manifest'].get('median'), 2)} | {x['n']} (missing {x['missing']}) "
                       f"| {'< 2 s: ' + goal if kind == 'jpeg' else goal} |")
        out.append("")
    mem = r.get("memory_embedded")
    if mem or t:
        out += ["## 5. Memory (peak RSS, sampled from /proc)", "", "| process | peak RSS MiB | note |", "|---|---|---|"]
        if mem:
            out.append(f"| embedded mediator (`fileflow process`, one process) | {mem['peak_root_rss_mib']} | "
                       f"{mem['files']} files handed to it at once, {mem['max_active_files']} running at a time; "
                       f"{mem['manifests']} manifests |")
            out.append(f"| embedded, whole tree (mediator + warm children + Prefect's SQLite server) | "
                       f"{mem['peak_tree_rss_mib']} | largest single process {mem['peak_process_rss_mib']} |")
        for x in (t or {}).get("runs", ()):
            mm = x["memory"]
            w = x["workers_per_pool"]
            kind = x.get("mediator", "process")
            where = f"{kind} mediator, {x.get('placement', 'pool')}, {w} worker(s) per pool"
            out.append(f"| server, {where} | {mm['server']['peak_tree_rss_mib']} | PostgreSQL itself not counted |")
            med = mm["worker-mediator"]
            limit = x.get("in_flight_limit") or 32
            how = (f"one warm process (and its keeper) for every file in flight (limit {limit}"
                   + (f", peak {x['routers_running_peak']} router runs Running at once" if x.get("in_flight_limit") else "")
                   + ")" if kind == "warm" else "a supervisor and an engine process per file in flight (limit 8)")
            out.append(f"| distributed mediator: worker + its flow-run processes, {where} | "
                       f"{med['peak_tree_rss_mib']} | {how}, largest "
                       f"{med['peak_process_rss_mib']}; {med['processes_seen']} processes seen |")
            cw = mm["converter-workers"]
            out.append(f"| converter workers, {where} (each with its warm children) | {cw['peak_tree_rss_mib']} | "
                       f"largest single process {cw['peak_process_rss_mib']} |")
        out.append("")
    out += server_calls_section(r.get("server_calls"))
    if r.get("reruns"):
        out += ["## Items run again after the run", ""] + [
            f"- {k}, at {v['at']}: {v['why']}. The figures above are the new run's; the failed one is in "
            "`bench/results.json`." for k, v in r["reruns"].items()] + [""]
    if r.get("errors"):
        out += ["## Items that failed in this run", ""] + [f"- {k}: {v}" for k, v in r["errors"].items()] + [""]
    notes = Path(__file__).with_name("analysis.md")
    if notes.exists():  # written by hand after reading a run's figures and profiles; it says which run
        out += [notes.read_text().rstrip(), ""]
    ocr_notes = Path(__file__).with_name("ocr_accuracy.md")
    if ocr_notes.exists():  # bench/ocr_accuracy.py's table, run on its own; it says which run
        out += [ocr_notes.read_text().rstrip(), ""]
    out += [
        "## Bigger runs",
        "",
        "`bench/run_all.py --help` lists every size: e.g. `--rounds 5 --scale 3 --realistic-scale 4` (item 1), `--dispatch-n 50`,",
        "`--throughput-files 2000 --workers 1 2 4` (item 3), `--preview-n 20`, `--memory-files 1000`, and",
        "`--skip ...` to leave items out (`--skip efficiency-realistic` saves about 12 minutes). Each item also runs on its own (`bench/efficiency.py [--corpus realistic]`, `bench/throughput.py`,",
        "`bench/memory.py`; `bench/dispatch.py` needs a stack from `fileflow up`).",
        "",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown(json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results.json").read_text())))
