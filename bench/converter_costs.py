"""Measure what each converter step costs on the bundled samples, for bench/scaling.py.

Runs every converter's real ``convert()`` on the samples of tests/samples the way the flows
chain them (docs/architecture.md: the office PDF feeds pdf_preview and pdf_text, OCR'd and
extracted text feeds language ...), in this process, warm: one untimed warm-up call, then
ROUNDS timed calls per (converter, input). Office documents go through a real warm LibreOffice
(fileflow.engine.office.UnoServer). Prefect is not involved: these are the steps' own costs, what a
child process spends inside ``convert``.

Also measures the cold start a ``--run-once`` worker pod pays before its step can begin: a
fresh Python process importing Prefect's engine and the step flow (Prefect's process worker
pays that twice: the worker itself, then ``python -m prefect.engine``), after compiling the
venv's bytecode as the images do; recorded as CPU seconds, since this machine is shared.

    .venv/bin/python bench/converter_costs.py [--rounds 5] [--out bench/converter_costs.json]

Writes JSON with the machine and date; figures are medians.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SAMPLES = ROOT / "tests" / "samples"


def timed(name: str, src: Path, options: dict, rounds: int, scratch: Path) -> tuple[list[float], object]:
    import converters

    module = converters.load(name)
    times, result = [], None
    for i in range(rounds + 1):  # the first call warms imports and engines, untimed
        out = scratch / f"{name}-{src.stem}-{i}"
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        started = time.perf_counter()
        result = module.convert(src, out, dict(options))
        if i:
            times.append(time.perf_counter() - started)
    return times, (out, result)


def text_of(out_result) -> Path | None:
    out, result = out_result
    for rendition in result.renditions:
        if rendition.role == "text":
            return out / rendition.path
    return None


def measure(rounds: int) -> dict:
    from fileflow.engine.office import UnoServer
    from fileflow.settings import PipelineSettings

    base = PipelineSettings().converter_options()
    samples = {p.name: p for p in SAMPLES.iterdir() if p.is_file()}
    times: dict[str, list[float]] = {}
    inputs: dict[str, list[str]] = {}

    def run(name: str, src: Path, options: dict | None = None):
        t, out = timed(name, src, {**base, **(options or {})}, rounds, scratch)
        times.setdefault(name, []).extend(t)
        inputs.setdefault(name, []).append(src.name)
        return out

    with tempfile.TemporaryDirectory(prefix="fileflow-costs-") as tmp:
        scratch = Path(tmp)
        for sample in samples.values():
            run("inspect", sample)
        photo = samples["photo.jpg"]
        run("image_renditions", photo, {"mime": "image/jpeg"})
        ocr_text = text_of(run("ocr", photo, {"mime": "image/jpeg"}))
        for text in ("notes-de.txt", "table.csv"):
            extracted = text_of(run("text_extract", samples[text], {"mime": "text/plain"}))
            if extracted:
                run("language", extracted)
        if ocr_text:
            run("language", ocr_text)
        pdfs = [samples["scan.pdf"]]
        with UnoServer() as office:
            out, result = run("office_pdf", samples["report.docx"],
                              {"unoserver_host": "127.0.0.1", "unoserver_port": office.port,
                               "mime": "application/vnd.openxmlformats-officedocument.wordprocessingml.document"})
            pdfs += [out / r.path for r in result.renditions if r.role == "pdf"]
        for pdf in pdfs:
            run("pdf_preview", pdf, {"mime": "application/pdf"})
            pdf_text = text_of(run("pdf_text", pdf, {"mime": "application/pdf"}))
            if pdf_text:
                run("language", pdf_text)
        run("drawing_render", samples["plan.dxf"], {"mime": "image/vnd.dxf"})
        for name in ("video_probe", "video_transcode", "video_poster"):
            run(name, samples["clip.mp4"], {"mime": "video/mp4"})
        run("archive_expand", samples["bundle.zip"], {"mime": "application/zip", "depth": 0})
    return {"times": times, "inputs": inputs}


def compile_bytecode() -> None:
    """What the images do at build time (UV_COMPILE_BYTECODE=1): without .pyc files (and this
    machine sets PYTHONDONTWRITEBYTECODE=1) every cold import would compile Prefect anew."""
    import sysconfig

    folders = [sysconfig.get_paths()["purelib"], *(str(ROOT / p) for p in ("fileflow", "flows", "converters", "blocks"))]
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", *folders], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cold_start() -> tuple[float, float]:
    """(wall, CPU) seconds of a fresh interpreter importing what a pool step's processes import."""
    import resource

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import prefect.engine, flows.step"], cwd=ROOT, check=True, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def office_cold_start() -> float:
    """Wall seconds until a fresh LibreOffice behind unoserver answers: what an office_pdf step
    pays in its own pod (flows/step.py starts one per step when none is configured)."""
    from fileflow.engine.office import UnoServer

    started = time.perf_counter()
    with UnoServer() as office:
        office.ensure_running()
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "converter_costs.json")
    args = parser.parse_args(argv)

    measured = measure(args.rounds)
    offices = [office_cold_start() for _ in range(3)]
    compile_bytecode()
    colds = [cold_start() for _ in range(5)]
    load = os.getloadavg()
    report = {
        "what": "seconds inside convert() per converter on tests/samples (warm, in-process, after one "
                "untimed warm-up call; office through a warm unoserver); cold_start_s: a fresh Python "
                "importing prefect.engine and flows.step",
        "measured_on": {
            "date": dt.date.today().isoformat(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
            "python": platform.python_version(),
            "load_average_1_5_15": [round(x, 2) for x in load],
            "note": "a machine shared with other test runs: figures are upper-ish bounds",
        },
        "rounds": args.rounds,
        "step_seconds": {
            name: {"median": round(statistics.median(v), 4), "max": round(max(v), 4), "n": len(v),
                   "inputs": measured["inputs"][name]}
            for name, v in sorted(measured["times"].items())
        },
        # the simulation uses the CPU figure: a pod has its own CPU; the wall time here includes
        # waiting for this shared machine's cores
        "cold_start_s": {"median": round(statistics.median(c for _, c in colds), 3),
                         "max": round(max(c for _, c in colds), 3), "n": len(colds), "measure": "CPU seconds",
                         "wall_median": round(statistics.median(w for w, _ in colds), 3)},
        "office_cold_start_s": {"median": round(statistics.median(offices), 3), "max": round(max(offices), 3),
                                "n": len(offices), "measure": "wall seconds (on this shared machine)"},
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for name, figures in report["step_seconds"].items():
        print(f"{name:18} median {figures['median']:8.4f} s  max {figures['max']:8.4f} s  n={figures['n']}")
    o = report["office_cold_start_s"]
    print(f"office cold start  median {o['median']:.3f} s  max {o['max']:.3f} s (wall)")
    c = report["cold_start_s"]
    print(f"cold start         median {c['median']:.3f} CPU-s  max {c['max']:.3f}  (wall median {c['wall_median']:.3f} s)")


if __name__ == "__main__":
    main()
