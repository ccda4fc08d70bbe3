"""The hostile-input table of docs/reliability.md, from a real run.

Every case of ``fileflow/testing/samplegen/hostile.py`` plus the committed good samples go through the
embedded pipeline as ONE batch (``fileflow.ops.batch.run_batch``, as ``fileflow process`` runs it,
against a fresh Prefect server on SQLite started on a free port by Prefect's test harness, as
the tests do: the ephemeral server's fixed port collides with other runs on a shared machine);
the script then prints one row per case
(expected and observed outcome) and the batch's totals, and with ``--write`` replaces the table
between the markers in docs/reliability.md.

Usage: ``.venv/bin/python bench/hostile_table.py [--write]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
START, END = "<!-- hostile-table:start -->", "<!-- hostile-table:end -->"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", action="store_true", help=f"replace the table in {DOC.relative_to(ROOT)}")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="fileflow-hostile-") as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "ERROR")
        from prefect.testing.utilities import prefect_test_harness

        from blocks.storage import StorageConfig
        from fileflow.ops.batch import run_batch
        from fileflow.settings import PipelineSettings
        from fileflow.testing.samplegen import hostile

        files, names = hostile.write_batch(tmp / "in", tmp / "scratch")
        hostile_count = len(files)
        for sample in sorted(hostile.SAMPLES.iterdir()):
            shutil.copy(sample, tmp / "in" / sample.name)
            files.append(tmp / "in" / sample.name)
        with prefect_test_harness(server_startup_timeout=300):
            started = time.monotonic()
            manifests = asyncio.run(
                run_batch(files, PipelineSettings(retry_delay_s=0.2), StorageConfig(basepath=str(tmp / "out")),
                          names=names)
            )
            elapsed = time.monotonic() - started
        top = [m for m in manifests if m["parent"] is None]
        statuses = Counter(m["status"] for m in manifests)
        reasons = Counter(hostile.observed(m)[1] for m in manifests if m["status"] != "completed")
        mismatches = [c for c in hostile.CASES
                      if hostile.observed_text(hostile.find_manifest(c, manifests)) != hostile.expected_text(c)]
        markers = [m for m in hostile.MACRO_MARKERS if (tmp / "scratch" / m).exists()]
        summary = (
            f"One batch of {len(files)} uploads ({hostile_count} hostile, "
            f"{len(files) - hostile_count} good samples) and their archive members: {len(manifests)} manifests, "
            f"{statuses['completed']} completed, {statuses['failed']} failed "
            f"({', '.join(f'{k} {v}' for k, v in sorted(reasons.items()))}); "
            f"uploads without a manifest (lost): {len(files) - len(top)}; "
            f"cases whose outcome differs from the expected one: {len(mismatches)}; "
            f"macro marker files written: {len(markers)}; {elapsed:.0f} s on this machine "
            f"({time.strftime('%Y-%m-%d')})."
        )
        table = hostile.markdown_table(manifests)
    print(table)
    print()
    print(summary)
    if args.write:
        text = DOC.read_text()
        block = f"{START}\n{table}\n\n{summary}\n{END}"
        DOC.write_text(re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S))
        print(f"written to {DOC}")


if __name__ == "__main__":
    main()
