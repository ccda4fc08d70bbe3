"""Hostile and broken input through the whole embedded pipeline, as ONE batch (issue 4).

Every case of :mod:`fileflow.testing.samplegen.hostile` goes through ``run_batch`` (what ``fileflow
process`` runs) in the same batch as good files. Each must end in its manifest with the
expected status and typed error; nothing may be written outside the storage layout (nor
outside the storage folder); no converter process may die or hang on any of them; macros never
run; and the good files in the batch must come out exactly as they do in a batch of their own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import tempfile
from pathlib import Path

import jsonschema
import pytest

from blocks.storage import StorageConfig
from fileflow.ops.batch import run_batch
from fileflow.settings import PipelineSettings
from fileflow.testing.samplegen import hostile

SAMPLES = Path(__file__).parent / "samples"
SCHEMA = json.loads((Path(__file__).parents[1] / "docs" / "manifest.schema.json").read_text())
SETTINGS = PipelineSettings(child_processes=2, max_active_files=4, retry_delay_s=0.1)
#: good files checked against a batch of their own (no LibreOffice or video: those are slow)
REFERENCE = ("photo.jpg", "notes-de.txt", "scan.pdf", "plan.dxf", "bundle.zip")
SHA = r"[0-9a-f]{64}"
LAYOUT = re.compile(
    rf"originals/(?P<p>[0-9a-f]{{2}})/(?P<o>{SHA})|derived/(?P<d>{SHA})/[a-z_]+/[^/]+"
    rf"|manifests/(?P<m>{SHA})\.json|results/[^/]+|tmp/.+"
    # each upload's record and claim, and the index of the uploads of one content (fileflow/engine/uploads.py)
    rf"|uploads/[A-Za-z0-9][A-Za-z0-9._:-]*\.(?:json|run)|uploads-by-file/(?P<u>{SHA})/[^/]+"
)


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def batch(prefect_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    files, names = hostile.write_batch(root / "in", root / "scratch")
    for sample in sorted(SAMPLES.iterdir()):
        files.append(Path(shutil.copy(sample, root / "in" / sample.name)))
    out = root / "out"
    tmp_before = set(Path(tempfile.gettempdir()).iterdir())
    inputs_before = _listing(root / "in")
    manifests = asyncio.run(run_batch(files, SETTINGS, StorageConfig(basepath=str(out)), names=names))
    return {
        "root": root, "files": files, "names": names, "out": out, "manifests": manifests,
        "inputs_before": inputs_before, "tmp_new": set(Path(tempfile.gettempdir()).iterdir()) - tmp_before,
    }


@pytest.mark.parametrize("case", hostile.CASES, ids=lambda c: repr(c.name + (c.member or ""))[1:40])
def test_case_ends_as_expected(batch, case):
    manifest = hostile.find_manifest(case, batch["manifests"])
    assert manifest is not None, f"no manifest for {case.name!r}"
    status, error, step, message = hostile.observed(manifest)
    assert (status, error, step) == (case.status, case.error, case.step), message
    if error:
        assert len(message) > 20  # a reason a person can read, not only a type


def test_every_upload_and_member_has_a_valid_manifest_in_storage(batch):
    manifests, out = batch["manifests"], batch["out"]
    uploads = [m for m in manifests if m["parent"] is None]
    assert len(uploads) == len(batch["files"])  # count in == count out: nothing lost
    by_id = {m["file_id"]: m for m in manifests}
    for manifest in manifests:
        jsonschema.validate(manifest, SCHEMA)
        assert manifest["status"] in ("completed", "failed")
        stored = json.loads((out / "manifests" / f"{manifest['file_id']}.json").read_text())
        assert stored["status"] == by_id[manifest["file_id"]]["status"]
        for child in manifest["children"]:
            assert child in by_id  # every archive member reached its own terminal manifest


def test_nothing_is_written_outside_each_files_own_prefix(batch):
    out, manifests = batch["out"], batch["manifests"]
    known = {m["file_id"] for m in manifests}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = str(path.relative_to(out))
        match = LAYOUT.fullmatch(rel)
        assert match, f"unexpected object in storage: {rel!r}"
        if match["o"]:
            assert match["o"].startswith(match["p"]) and match["o"] in known, rel
        for group in ("d", "m", "u"):
            assert match[group] is None or match[group] in known, rel
    assert not list(out.rglob("*.part"))  # no half-written object left
    # nothing beside the storage: the inputs are untouched, the scratch folder only holds what
    # the generators wrote there, and nothing named after a hostile entry appeared in /tmp
    assert _listing(batch["root"] / "in") == batch["inputs_before"]
    assert {p.name for p in batch["root"].iterdir()} == {"in", "scratch", "out"}
    assert not {p.name for p in batch["tmp_new"]} & {"escaped", "fileflow-absolute.txt", "passwd"}
    assert not Path(tempfile.gettempdir(), "escaped").exists()


def test_no_converter_process_died_or_hung_on_any_input(batch):
    """Every failure is a typed refusal of the input: no crash, no timeout, no unclassified error."""
    errors = {hostile.observed(m)[1] for m in batch["manifests"]} - {None}
    assert errors <= {"CorruptInput", "UnsupportedInput", "LimitExceeded"}, errors


def test_macros_never_run(batch):
    for name in hostile.MACRO_MARKERS:
        assert not (batch["root"] / "scratch" / name).exists(), f"a document macro ran and wrote {name}"
    converted = [m for m in batch["manifests"] if m["name"] in ("macro.odt", "macro.docm")]
    assert len(converted) == 2 and all(m["status"] == "completed" for m in converted)
    assert all(any(r["role"] == "pdf" for r in m["renditions"]) for m in converted)


def test_hostile_names_are_recorded_safely(batch):
    for manifest in batch["manifests"]:
        name = manifest["name"]
        assert name.isprintable() and len(name.encode()) <= 255, repr(name)
    names = {m["name"] for m in batch["manifests"] if m["parent"] is None}
    assert "../../../etc/passwd" in names  # shown as given: it is never a path
    assert "two?lines.txt" in names and "bell?esc?[31mred.txt" in names
    (long,) = [n for n in names if n.startswith("nnnn")]
    assert long.endswith("….txt") and len(long.encode()) <= 255


def _digest_of_renditions(out: Path, manifest: dict) -> dict:
    return {r["path"]: hashlib.sha256((out / r["path"]).read_bytes()).hexdigest() for r in manifest["renditions"]}


def test_good_files_are_unaffected_by_the_hostile_ones(batch, tmp_path):
    """The good files give the same manifests and the same bytes as in a batch of their own."""
    mixed = {m["name"]: m for m in batch["manifests"]}
    alone_out = tmp_path / "alone"
    alone = asyncio.run(run_batch([SAMPLES / n for n in REFERENCE], SETTINGS, StorageConfig(basepath=str(alone_out))))
    for manifest in alone:
        other = mixed[manifest["name"]]
        assert manifest["status"] == other["status"] == "completed", manifest["name"]
        for field in ("file_id", "kind", "mime", "language", "children", "parent"):
            assert manifest[field] == other[field], (manifest["name"], field)
        assert [(s["name"], s["status"]) for s in manifest["steps"]] == [
            (s["name"], s["status"]) for s in other["steps"]
        ]
        assert _digest_of_renditions(alone_out, manifest) == _digest_of_renditions(batch["out"], other)
    for name in ("report.docx", "clip.mp4", "table.csv"):
        assert mixed[name]["status"] == "completed", mixed[name]


def test_a_run_that_breaks_without_a_manifest_is_run_again(prefect_server, tmp_path):
    """A router run can break without writing a manifest (the Prefect API failing it under load
    did, in this batch). Here the manifest cannot be written (``manifests`` is a file, not a
    folder): the file is run ``attempts`` times, then the failure is raised, not swallowed."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from blocks.storage import original_key
    from fileflow.ops.batch import ingest
    from fileflow.engine.mediator import FileRef, Runtime, runtime
    from flows.router import process_to_terminal

    out = tmp_path / "out"
    out.mkdir()
    (out / "manifests").write_text("in the way")
    sample = hostile.good_text(tmp_path / "blocked.txt")

    async def scenario():
        with runtime(Runtime(SETTINGS, StorageConfig(basepath=str(out)))) as rt:
            digest, size = ingest(sample, rt.store)
            file = FileRef(file_id=digest, name="blocked.txt", key=original_key(digest), size=size)
            with pytest.raises(OSError):
                await process_to_terminal(file, "blocked.txt", attempts=2, delay_s=0)
        async with get_client() as client:
            return await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["file:blocked.txt"]))
            )

    runs = asyncio.run(scenario())
    assert len(runs) == 2 and all(r.state.is_failed() for r in runs)
