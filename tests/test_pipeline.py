"""The whole pipeline on the embedded default: real Prefect server, real converters, real files.

One mixed batch (the committed samples plus hostile files made here) goes through
``run_batch`` exactly as ``fileflow process`` runs it; the tests then read the manifests and the
stored renditions and check their content.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import jsonschema
import pytest
from PIL import Image
from prefect import flow

from blocks.storage import StorageConfig, original_key
from fileflow.ops.batch import ingest, run_batch
from fileflow.engine.mediator import FileRef, Mediation, Runtime, runtime
from fileflow.settings import PipelineSettings

SAMPLES = Path(__file__).parent / "samples"
SCHEMA = json.loads((Path(__file__).parents[1] / "docs" / "manifest.schema.json").read_text())
SETTINGS = PipelineSettings(child_processes=2, max_active_files=4, retry_delay_s=0.1)


def make_batch(folder: Path) -> list[Path]:
    folder.mkdir()
    for sample in SAMPLES.iterdir():
        shutil.copy(sample, folder / sample.name)
    shutil.copy(SAMPLES / "scan.pdf", folder / "lies-about-its-type.jpg")
    (folder / "blob.bin").write_bytes(bytes(range(256)) * 16)
    (folder / "empty.txt").write_bytes(b"")
    (folder / "drawing.dwg").write_bytes(b"AC1015" + bytes(200))
    # the branches of the flows that only some files of a kind take (flows/image.py, office.py,
    # drawing.py): an animation, a spreadsheet's cells, a drawing's words
    from fileflow.testing.samplegen import documents, images, media

    images.gif_animated(folder / "animation.gif")
    documents.xlsx(folder / "kunden.xlsx", rows=(("Kunde", "Bemerkung"),) + SHEET_ROWS)
    media.titled_plan_dxf(folder / "grundriss.dxf")
    return sorted(folder.iterdir())


#: cells wider than their columns: the printed page cuts them, the cells' own text does not
SHEET_ROWS = (
    ("Jürgen Müller", "Die Lieferung ist vollständig angekommen und wurde vom Lager geprüft"),
    ("Straßenbau Köhler GmbH", "Die Rechnung wird nach der Abnahme der Arbeiten im Januar bezahlt"),
)


@pytest.fixture(scope="module")
def batch(prefect_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    files = make_batch(root / "in")
    out = root / "out"
    manifests = asyncio.run(run_batch(files, SETTINGS, StorageConfig(basepath=str(out))))
    return files, out, manifests


def by_name(manifests):
    return {m["name"]: m for m in manifests}


def renditions(manifest, role):
    return [r for r in manifest["renditions"] if r["role"] == role]


def stored_text(out: Path, manifest) -> str:
    return (out / manifest["text"]).read_text()


def test_every_file_and_member_has_a_valid_manifest_in_storage(batch):
    files, out, manifests = batch
    top = [m for m in manifests if m["parent"] is None]
    assert sorted(m["name"] for m in top) == sorted(f.name for f in files)
    for manifest in manifests:
        jsonschema.validate(manifest, SCHEMA)
        on_disk = json.loads((out / "manifests" / f"{manifest['file_id']}.json").read_text())
        assert on_disk["status"] == manifest["status"]
    # nothing written outside the store's own layout
    assert {p.name for p in out.iterdir()} <= {"originals", "derived", "manifests", "results", "uploads", "uploads-by-file"}


def test_expected_files_complete_and_bad_ones_fail_with_their_reason(batch):
    _, _, manifests = batch
    m = by_name(manifests)
    failed = {name: man["steps"] for name, man in m.items() if man["status"] != "completed"}
    assert set(failed) == {"blob.bin", "empty.txt", "drawing.dwg"}, failed
    errors = {name: next(s["error"] for s in steps if s["error"]) for name, steps in failed.items()}
    assert errors["blob.bin"]["type"] == "UnsupportedInput"
    assert errors["empty.txt"]["type"] == "CorruptInput"
    assert errors["drawing.dwg"]["type"] == "UnsupportedInput" and "DWG" in errors["drawing.dwg"]["message"]


def test_image_gets_oriented_web_rendition_previews_and_ocr(batch):
    _, out, manifests = batch
    photo = by_name(manifests)["photo.jpg"]
    assert photo["kind"] == "image" and photo["mime"] == "image/jpeg"
    (web,) = renditions(photo, "web")
    assert max(web["width"], web["height"]) <= 2048
    with Image.open(out / web["path"]) as img:
        assert img.size == (web["width"], web["height"])
    meta = photo["metadata"]["image_renditions"]
    long_side = max(meta["width"], meta["height"])
    sizes = sorted(max(r["width"], r["height"]) for r in renditions(photo, "preview"))
    assert sizes == [min(s, long_side) for s in (160, 480, 1280)]  # never upscaled
    assert meta["orientation"] != 1 and (web["width"] < web["height"]) == (meta["width"] < meta["height"])
    text = stored_text(out, photo).upper()
    assert "INVOICE" in text and "FILEFLOW" in text


def test_extension_is_ignored_type_comes_from_content(batch):
    _, out, manifests = batch
    liar = by_name(manifests)["lies-about-its-type.jpg"]
    assert liar["kind"] == "pdf" and liar["mime"] == "application/pdf"
    assert liar["status"] == "completed"


def test_office_document_becomes_pdf_and_keeps_its_text(batch):
    _, out, manifests = batch
    doc = by_name(manifests)["report.docx"]
    (pdf,) = renditions(doc, "pdf")
    assert (out / pdf["path"]).read_bytes().startswith(b"%PDF")
    assert len(renditions(doc, "preview")) == 3
    assert len(stored_text(out, doc).split()) >= 5
    assert doc["language"] == "en"


def test_scanned_pdf_is_ocred(batch):
    _, out, manifests = batch
    scan = by_name(manifests)["scan.pdf"]
    assert scan["metadata"]["pdf_text"]["pages_ocred"] >= 1
    assert len(stored_text(out, scan).strip()) > 10


def test_text_language_is_detected(batch):
    _, _, manifests = batch
    assert by_name(manifests)["notes-de.txt"]["language"] == "de"


def test_drawing_gets_svg_and_layers(batch):
    _, out, manifests = batch
    plan = by_name(manifests)["plan.dxf"]
    (svg,) = renditions(plan, "svg")
    assert b"<svg" in (out / svg["path"]).read_bytes()[:2000]
    assert plan["metadata"]["drawing_render"]["layers"]


def test_animated_gif_also_becomes_a_looping_video(batch):
    import av

    _, out, manifests = batch
    gif = by_name(manifests)["animation.gif"]
    assert gif["status"] == "completed" and gif["kind"] == "image"
    assert [s["name"] for s in gif["steps"] if s["name"] == "video_transcode"] == ["video_transcode"]
    (web,) = [r for r in renditions(gif, "web") if r["mime"] == "video/mp4"]
    with av.open(str(out / web["path"])) as container:
        assert container.streams.video[0].codec_context.name == "h264"
    assert gif["metadata"]["video_transcode"]["loop"] is True
    assert renditions(gif, "preview")  # the still previews stay


def test_spreadsheet_text_comes_whole_from_its_cells_with_its_language(batch):
    _, out, manifests = batch
    sheet = by_name(manifests)["kunden.xlsx"]
    assert sheet["status"] == "completed"
    steps = [s["name"] for s in sheet["steps"]]
    assert "pdf_text" not in steps and "language" in steps and "pdf_preview" in steps
    text = stored_text(out, sheet)
    for name, remark in SHEET_ROWS:
        assert name in text and remark in text
    assert sheet["language"] == "de"


def test_drawing_words_give_its_text_and_language(batch):
    _, out, manifests = batch
    plan = by_name(manifests)["grundriss.dxf"]
    assert plan["status"] == "completed"
    text = stored_text(out, plan)
    assert "Grundriss EG" in text and "Gezeichnet: Jürgen Weiß" in text
    assert plan["language"] == "de"


def test_video_is_transcoded_to_h264_with_a_poster(batch):
    import av

    _, out, manifests = batch
    clip = next(m for m in manifests if m["kind"] == "video")
    (web,) = renditions(clip, "web")
    with av.open(str(out / web["path"])) as container:
        assert container.streams.video[0].codec_context.name == "h264"
    assert renditions(clip, "poster")
    assert clip["metadata"]["video_probe"]["duration_s"] > 0


def test_archive_members_are_files_of_their_own_linked_to_the_parent(batch):
    _, _, manifests = batch
    archive = next(m for m in manifests if m["kind"] == "archive" and m["parent"] is None)
    members = [m for m in manifests if m["parent"] == archive["file_id"]]
    assert len(members) == len(archive["children"]) >= 3
    assert {m["file_id"] for m in members} == set(archive["children"])
    assert all(m["name"].startswith(archive["name"] + "/") for m in members)
    assert {m["kind"] for m in members} >= {"image", "text"}
    languages = {m["name"].rsplit("/", 1)[-1]: m["language"] for m in members if m["kind"] == "text"}
    assert languages == {"README.txt": "en", "chantier-fr.md": "fr"}  # each text judged on its own


def test_processing_again_reuses_every_finished_step(batch, tmp_path):
    files, out, first = batch
    again = asyncio.run(run_batch(files, SETTINGS, StorageConfig(basepath=str(out))))
    for manifest in again:
        if manifest["status"] != "completed":
            continue
        steps = [s for s in manifest["steps"] if s["status"] == "completed"]
        assert all(s["cached"] for s in steps), (manifest["name"], steps)
    assert sorted(json.dumps(m["renditions"]) for m in again) == sorted(json.dumps(m["renditions"]) for m in first)


# -- isolation through the flows: a real segfault and a real hang ---------------------------


@flow(name="crash-test")
async def crash_flow(file: FileRef):
    m = Mediation(file)
    crashed, fine = await asyncio.gather(
        m.step("tests.extra_converters.segfault"),
        m.step("inspect"),
    )
    await m.step("tests.extra_converters.hang")
    return await m.finish()


def test_segfault_and_hang_fail_their_step_only(prefect_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    storage = StorageConfig(basepath=str(tmp_path / "out"))
    sample = tmp_path / "a.txt"
    sample.write_text("hello " * 50)

    async def scenario():
        with runtime(Runtime(SETTINGS, storage)) as rt:
            digest, size = ingest(sample, rt.store)
            file = FileRef(file_id=digest, name="a.txt", key=original_key(digest), size=size)
            manifest = await crash_flow(file)
        async with get_client() as client:
            runs = await client.read_task_runs(
                task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=["tests.extra_converters.segfault"]))
            )
        return manifest, runs

    manifest, runs = asyncio.run(scenario())
    steps = {s["name"]: s for s in manifest["steps"]}
    assert steps["tests.extra_converters.segfault"]["error"]["type"] == "ToolCrashed"
    assert "SIGSEGV" in steps["tests.extra_converters.segfault"]["error"]["message"]
    assert steps["inspect"]["status"] == "completed"
    assert steps["tests.extra_converters.hang"]["error"]["type"] == "ToolTimeout"
    assert manifest["status"] == "failed"
    # retried up to its limit (2 retries -> 3 runs), then failed
    assert max(r.run_count for r in runs) == 3


def test_s3_storage_end_to_end(prefect_server, s3_endpoint, s3_bucket, tmp_path):
    import boto3

    storage = StorageConfig(
        kind="s3", bucket=s3_bucket, prefix="fileflow", endpoint_url=s3_endpoint, region="us-east-1",
        access_key_id="testing", secret_access_key="testing",
    )
    files = [SAMPLES / "photo.jpg", SAMPLES / "notes-de.txt"]
    out = tmp_path / "out"
    manifests = asyncio.run(run_batch(files, SETTINGS, storage, out=out))
    assert [m["status"] for m in manifests] == ["completed", "completed"]
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    for manifest in manifests:
        assert f"fileflow/manifests/{manifest['file_id']}.json" in keys
        assert (out / "manifests" / f"{manifest['file_id']}.json").is_file()  # --out copy
        for rendition in manifest["renditions"]:
            head = s3.head_object(Bucket=s3_bucket, Key=f"fileflow/{rendition['path']}")
            assert head["ContentLength"] == rendition["bytes"]
    assert any(k.startswith("fileflow/results/") for k in keys)
    assert all(k.startswith("fileflow/") for k in keys)


def test_runs_are_named_tagged_and_carry_the_manifest_artifact(batch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterName,
    )

    _, _, manifests = batch
    photo = by_name(manifests)["photo.jpg"]

    async def read():
        async with get_client() as client:
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["file:photo.jpg"]))
            )
            # by key and by run: a file of the same content under another name (the hostile batch's
            # photo-named.pdf) has the same id, so the same artifact key, on the session's server
            artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[f"manifest-{photo['file_id'][:32]}"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[r.id for r in runs])))
        return runs, artifacts

    runs, artifacts = asyncio.run(read())
    names = {r.name: r for r in runs}
    assert set(names) == {"file:photo.jpg"}  # one run per file: the steps of its kind run inside it
    assert "kind:image" in names["file:photo.jpg"].tags
    assert artifacts and "image_renditions" in artifacts[0].data and "photo.jpg" in artifacts[0].data


def test_every_input_a_step_records_is_in_reprocessing_graph(batch):
    """Each step records the step whose output it read (``input``); reprocessing redoes a
    producer's consumers by that graph, so every edge the kinds' step lists make is in it (for
    the manifests written before steps recorded their input)."""
    from fileflow.ops.reprocess import CONSUMERS

    _, _, manifests = batch
    edges = {(s["input"], s["name"]) for m in manifests for s in m["steps"] if s.get("input")}
    assert ("text_extract", "language") in edges and ("office_pdf", "pdf_text") in edges  # seen, not vacuous
    assert {e for e in edges if e[1] not in CONSUMERS.get(e[0], ())} == set()
