"""Uploads keep their own identity while work is shared by content (fileflow/engine/uploads.py);
per-upload options reach only the steps that read them.

On the embedded default: a real Prefect server (the test harness), real converters, local storage.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from blocks.storage import StorageConfig, Store, manifest_key, original_key
from fileflow.engine import uploads
from fileflow.ops.batch import ingest, run_batch
from fileflow.settings import PipelineSettings

SAMPLES = Path(__file__).parent / "samples"
TEXT = "Der Bericht über das dritte Quartal wurde vom Vorstand geprüft und ohne Änderungen angenommen. " * 4


def settings(**more) -> PipelineSettings:
    return PipelineSettings(**{"child_processes": 2, "max_active_files": 1, "retry_delay_s": 0.1, **more})


def records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "uploads").glob("*.json"))]


def test_the_same_bytes_top_level_and_inside_an_archive_are_two_uploads_with_one_run_of_each_step(
        prefect_server, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "rapport.txt").write_text(TEXT)
    with zipfile.ZipFile(folder / "dataroom.zip", "w") as archive:
        archive.writestr("finance/rapport.txt", TEXT)
    out = tmp_path / "out"
    # one file at a time: the top-level upload first, then the archive and its member
    manifests = asyncio.run(run_batch([folder / "rapport.txt", folder / "dataroom.zip"], settings(),
                                      StorageConfig(basepath=str(out)), batch_id="b-uploads"))
    assert sorted(m["status"] for m in manifests) == ["completed"] * 3

    by_name = {r["name"]: r for r in records(out)}
    assert set(by_name) == {"rapport.txt", "dataroom.zip", "dataroom.zip/finance/rapport.txt"}
    top, archive, member = by_name["rapport.txt"], by_name["dataroom.zip"], by_name["dataroom.zip/finance/rapport.txt"]
    assert top["file_id"] == member["file_id"] and top["upload_id"] != member["upload_id"]
    assert top["parent"] is None and member["parent"] == archive["upload_id"]
    assert member["parent_file_id"] == archive["file_id"]
    assert {r["batch"] for r in by_name.values()} == {"b-uploads"}
    assert all(r["status"] == "completed" and r["finished_at"] for r in by_name.values())
    assert top["manifest"] == member["manifest"] == f"manifests/{top['file_id']}.json"
    # the work was done once: every step of the member came from the top-level upload's results
    assert top["steps_run"] == 3 and top["steps_cached"] == 0 and not top["shared"]  # inspect, text_extract, language
    assert member["steps_run"] == 0 and member["steps_cached"] == 3 and member["shared"]
    store = Store(StorageConfig(basepath=str(out)))
    assert uploads.uploads_of(store, top["file_id"]) == sorted([top["upload_id"], member["upload_id"]])

    # `fileflow show` by name: that upload, at the top level, and the other upload of the same bytes
    from datetime import timedelta

    from fileflow.ops.audit import audit
    from fileflow.ops.show import find

    shown = asyncio.run(find("rapport.txt", store))
    assert shown.upload["upload_id"] == top["upload_id"] and shown.upload["parent"] is None
    assert {(u["name"], u["parent"], u["shared"]) for u in shown.uploads} == {
        ("rapport.txt", None, False), ("dataroom.zip/finance/rapport.txt", archive["upload_id"], True)}
    by_id = asyncio.run(find(member["upload_id"], store))
    assert by_id.upload["name"] == "dataroom.zip/finance/rapport.txt" and by_id.flow_run_id == member["flow_run_id"]
    # `fileflow audit`: two contents, three uploads, one of which shared the work
    report = asyncio.run(audit(store, stuck_after=timedelta(minutes=15), heartbeat_after=timedelta(minutes=5)))
    assert (report.submitted, report.uploads, report.uploads_completed, report.uploads_shared) == (2, 3, 3, 1)
    assert report.ok, report.findings


def test_the_same_upload_routed_twice_is_processed_by_one_run(prefect_server, tmp_path):
    """What an event trigger notified twice does: a second router run of an upload id that
    another run owns does nothing; a run that failed is taken over."""
    from fileflow.engine.mediator import Runtime, runtime
    from flows.router import process_file

    sample = tmp_path / "twice.txt"
    sample.write_text(TEXT)
    storage = StorageConfig(basepath=str(tmp_path / "out"))
    store = Store(storage)
    digest, size = ingest(sample, store)

    async def route(upload_id: str):
        with runtime(Runtime(settings(), storage)):
            return await process_file(key=original_key(digest), file_id=digest, name="twice.txt", size=size,
                                      upload_id=upload_id, return_state=True)

    first = asyncio.run(route("dup-1"))
    second = asyncio.run(route("dup-1"))
    assert first.is_completed() and second.is_completed()
    owner = (tmp_path / "out" / "uploads" / "dup-1.run").read_text()
    assert f"processed by run {owner}" in second.message
    record = uploads.read(store, "dup-1")
    assert record.status == "completed" and record.flow_run_id == owner and record.steps_run == 3
    # a notification without an id: the same bytes under the same name are one upload
    third, fourth = asyncio.run(route("")), asyncio.run(route(""))
    assert "processed by run" in fourth.message and "processed by run" not in third.message
    assert uploads.read(store, uploads.upload_id_for(digest, "twice.txt")).status == "completed"
    # the owner is gone (its run was deleted): the next notification takes the upload over
    (tmp_path / "out" / "uploads" / "dup-1.run").write_text("00000000-0000-0000-0000-000000000000")
    fifth = asyncio.run(route("dup-1"))
    assert "processed by run" not in fifth.message
    assert uploads.read(store, "dup-1").flow_run_id != owner
    # bad options from a REST call or an event: the upload fails and says why
    async def bad_options():
        with runtime(Runtime(settings(), storage)):
            return await process_file(key=original_key(digest), file_id=digest, name="twice.txt", size=size,
                                      upload_id="bad-opts", options={"colour": "red"},
                                      callback_url="http://127.0.0.1:9/answers", return_state=True)

    assert asyncio.run(bad_options()).is_failed()
    record = uploads.read(store, "bad-opts")
    assert record.status == "failed" and record.error["step"] == "options" and "colour" in record.error["message"]
    # ... and its sender hears so: the answer waits in the callback outbox for its URL
    [pending] = [record for p in (tmp_path / "out" / "callbacks" / "pending").glob("*.json")
                 if (record := json.loads(p.read_text()))["delivery_id"].startswith("callback:bad-opts:")]
    assert pending["url"] == "http://127.0.0.1:9/answers"
    answer = json.loads(pending["body"])["file"]
    assert (answer["status"], answer["upload"]["upload_id"], answer["error"]["step"]) == ("failed", "bad-opts", "options")
    assert json.loads((tmp_path / "out" / "manifests" / f"{digest}.json").read_text())["status"] == "completed"

    # a callback URL that could never be delivered to (an S3 object's metadata, a REST call): the
    # upload fails saying so, and nothing waits in the outbox for that URL
    async def bad_callback():
        with runtime(Runtime(settings(), storage)):
            return await process_file(key=original_key(digest), file_id=digest, name="twice.txt", size=size,
                                      upload_id="bad-url", callback_url="ftp://uploads.example/x", return_state=True)

    assert asyncio.run(bad_callback()).is_failed()
    record = uploads.read(store, "bad-url")
    assert record.status == "failed" and record.error["step"] == "options" and "ftp://" in record.error["message"]
    assert record.callback_url is None
    assert not [p for p in (tmp_path / "out" / "callbacks" / "pending").glob("*.json")
                if json.loads(p.read_text())["url"].startswith("ftp")]


def test_a_run_that_breaks_outside_its_steps_still_ends_its_file_with_a_failed_manifest(prefect_server, tmp_path):
    """Not a step's error but the run's own machinery failing (here its lock folder is a file, so
    no lock can be taken): the file still ends with a manifest and its upload with a status,
    both failed and saying why, and the run ends Failed."""
    from fileflow.engine.mediator import Runtime, runtime
    from flows.router import process_file

    sample = tmp_path / "broken.txt"
    sample.write_text(TEXT)
    storage = StorageConfig(basepath=str(tmp_path / "out"))
    store = Store(storage)
    digest, size = ingest(sample, store)
    not_a_folder = tmp_path / "locks"
    not_a_folder.write_text("a file where the lock folder should be")

    async def route():
        with runtime(Runtime(settings(lock_dir=not_a_folder), storage)):
            return await process_file(key=original_key(digest), file_id=digest, name="broken.txt", size=size,
                                      upload_id="broken-1", return_state=True)

    assert asyncio.run(route()).is_failed()
    manifest = json.loads((tmp_path / "out" / "manifests" / f"{digest}.json").read_text())
    [step] = [s for s in manifest["steps"] if s["status"] == "failed"]
    assert manifest["status"] == "failed" and step["name"] == "router"
    assert "the file's run broke" in step["error"]["message"], step
    record = uploads.read(store, "broken-1")
    assert record.status == "failed" and record.error["step"] == "router"


def test_an_archive_run_again_does_not_run_its_finished_members_again(prefect_server, tmp_path):
    """What a resumed archive run meets (its mediator crashed while its members ran): members
    whose uploads already reached their terminal status are not run again (no new flow run, no
    new manifest); a member without one is."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from fileflow.engine.mediator import Runtime, runtime
    from flows.router import process_file

    folder = tmp_path / "in"
    folder.mkdir()
    with zipfile.ZipFile(folder / "resumed.zip", "w") as archive:
        archive.writestr("a.txt", TEXT)
        archive.writestr("b.txt", TEXT.upper())
    storage = StorageConfig(basepath=str(tmp_path / "out"))
    store = Store(storage)
    digest, size = ingest(folder / "resumed.zip", store)

    async def route():
        with runtime(Runtime(settings(), storage)):
            return await process_file(key=original_key(digest), file_id=digest, name="resumed.zip", size=size,
                                      upload_id="resumed-1", return_state=True)

    async def member_runs(name: str) -> int:
        async with get_client() as client:
            return len(await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"file:resumed.zip/{name}"]))))

    assert asyncio.run(route()).is_completed()
    a_id, b_id = (uploads.member_upload_id("resumed-1", f"resumed.zip/{n}") for n in ("a.txt", "b.txt"))
    a_before = uploads.read(store, a_id)
    assert a_before.status == uploads.read(store, b_id).status == "completed"
    # the archive's run again, as a resume does: the same upload, a member left unfinished
    (tmp_path / "out" / "uploads" / "resumed-1.run").unlink()
    b_record = uploads.read(store, b_id)
    uploads.write(store, b_record.model_copy(update={"status": "processing", "finished_at": None}))
    (tmp_path / "out" / "uploads" / f"{b_id}.run").unlink()
    assert asyncio.run(route()).is_completed()
    assert asyncio.run(member_runs("a.txt")) == 1 and asyncio.run(member_runs("b.txt")) == 2
    a_after = uploads.read(store, a_id)
    assert a_after == a_before  # untouched: same run, same finish
    assert uploads.read(store, b_id).status == "completed"
    assert uploads.read(store, "resumed-1").status == "completed"


def steps_of(manifest: dict) -> dict[str, bool]:
    return {s["name"]: s["cached"] for s in manifest["steps"]}


def test_changing_ocr_languages_redoes_only_ocr_and_its_consumers(prefect_server, tmp_path):
    image = tmp_path / "photo.jpg"
    shutil.copy(SAMPLES / "photo.jpg", image)
    storage = StorageConfig(basepath=str(tmp_path / "out"))

    def run(**options) -> dict:
        [manifest] = asyncio.run(run_batch([image], settings(), storage, options=options))
        assert manifest["status"] == "completed", manifest
        return steps_of(manifest)

    assert not any(run(ocr_languages="eng").values())
    again = run(ocr_languages="deu")
    assert again == {"inspect": True, "image_renditions": True, "ocr": False, "language": False}
    resized = run(ocr_languages="deu", preview_sizes=[200])
    assert resized == {"inspect": True, "image_renditions": False, "ocr": True, "language": True}
    assert run(ocr_languages="deu", preview_sizes=[200]) == dict.fromkeys(resized, True)


def test_only_containers_see_the_depth_and_only_readers_see_the_options():
    from fileflow.engine.mediator import FileRef, Mediation, Runtime, runtime

    file = FileRef(file_id="ab" * 32, name="x.jpg", key="originals/ab/x", size=1, mime="image/jpeg", depth=2,
                   options={"ocr_languages": "deu"})
    with runtime(Runtime(settings(child_processes=1), StorageConfig(basepath="/nonexistent"))):
        m = Mediation(file)
        assert m.options_for("language") == {"mime": "image/jpeg"}
        assert m.options_for("ocr")["ocr_languages"] == "deu" and "depth" not in m.options_for("ocr")
        assert m.options_for("archive_expand")["depth"] == 2
        assert set(m.options_for("image_renditions")) == {"mime", "preview_sizes"}


@pytest.mark.parametrize("bad, says", [
    ({"ocr_languages": "de u"}, "not a Tesseract language code"),
    ({"ocr_languages": 3}, "must be a string"),
    ({"preview_sizes": [0]}, "between 1 and 8192"),
    ({"preview_sizes": "big"}, "list of integers"),
    ({"max_pixels": 5}, "unknown option"),
])
def test_bad_upload_options_are_refused_by_name(bad, says):
    with pytest.raises(ValueError, match=says):
        uploads.check_options(bad)


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "-x", "a..b", "x" * 129, "ü"])
def test_bad_upload_ids_are_refused(bad):
    with pytest.raises(ValueError, match="invalid upload id"):
        uploads.check_upload_id(bad)


def s3_store(endpoint: str, bucket: str) -> Store:
    return Store(StorageConfig(kind="s3", bucket=bucket, prefix="p", endpoint_url=endpoint, region="us-east-1",
                               access_key_id="testing", secret_access_key="testing"))


def test_only_one_writer_claims_an_upload_on_s3(s3_endpoint, s3_bucket):
    """S3's conditional write (If-None-Match: *): the first claim wins, across processes and machines."""
    store = s3_store(s3_endpoint, s3_bucket)
    assert uploads.claim(store, "u-1", "run-a") is None
    assert uploads.claim(store, "u-1", "run-a") is None
    assert uploads.claim(store, "u-1", "run-b") == "run-a"
    uploads.take_over(store, "u-1", "run-b")
    assert uploads.claim(store, "u-1", "run-a") == "run-b"


def test_only_one_writer_claims_an_upload(tmp_path):
    store = Store(StorageConfig(basepath=str(tmp_path)))
    assert uploads.claim(store, "u-1", "run-a") is None
    assert uploads.claim(store, "u-1", "run-a") is None  # the owner again (a resumed run)
    assert uploads.claim(store, "u-1", "run-b") == "run-a"
    assert not list(tmp_path.rglob("*.part"))


@pytest.mark.parametrize("name", __import__("converters").BUILTINS)
def test_every_converter_declares_the_shared_options_it_reads(name):
    """A shared option a converter reads but does not declare would never reach it (and a change
    of it would not redo its step); one it declares but never reads would redo it for nothing."""
    import inspect
    import re

    import converters
    from converters.base import SHARED_OPTIONS

    module = converters.implementation(name)
    source = inspect.getsource(module)
    read = {o for o in SHARED_OPTIONS if re.search(rf"[\"']{o}[\"']|\b{o}\(options", source)}
    assert read == set(module.SPEC.reads), f"{name} reads {sorted(read)}, declares {sorted(module.SPEC.reads)}"


async def _held_upload_scenario(tmp_path, owner_ends: str) -> dict:
    """A file whose upload another run claimed and still works on (``Running``); that run then
    ends as ``owner_ends`` says: ``completed`` (it finished the upload) or ``crashed`` (it died
    without finishing it). process_to_terminal is run on the file meanwhile."""
    import time

    from prefect import get_client
    from prefect.states import Completed, Crashed, Running

    from fileflow.engine.mediator import FileRef, Runtime, runtime
    from flows.router import process_to_terminal

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "held.txt").write_text(TEXT)
    storage = StorageConfig(basepath=str(tmp_path / "out"))
    store = Store(storage)
    digest, size = ingest(folder / "held.txt", store)
    upload_id = f"held-{owner_ends}"
    async with get_client() as client:
        router = await client.create_deployment(flow_id=await client.create_flow_from_name("process-file"),
                                                name="process-file", entrypoint="flows/router.py:process_file")
        owner = await client.create_flow_run_from_deployment(router, parameters={}, name=f"file:held-{owner_ends}")
        await client.set_flow_run_state(owner.id, Running(), force=True)
        assert uploads.claim(store, upload_id, str(owner.id)) is None
        uploads.write(store, uploads.received(upload_id, name="held.txt", file_id=digest, size=size).model_copy(
            update={"status": "processing", "flow_run_id": str(owner.id)}))

        async def owner_ends_later():
            await asyncio.sleep(8)  # past the three quick attempts (about 3 s)
            if owner_ends == "completed":
                record = uploads.read(store, upload_id)
                uploads.write(store, record.model_copy(update={"status": "completed", "finished_at": uploads.now()}))
                await client.set_flow_run_state(owner.id, Completed(), force=True)
            else:
                await client.set_flow_run_state(owner.id, Crashed(message="its mediator died"), force=True)

        file = FileRef(file_id=digest, name="held.txt", key=original_key(digest), size=size, upload_id=upload_id)
        with runtime(Runtime(settings(), storage)):
            ending = asyncio.create_task(owner_ends_later())
            started = time.monotonic()
            await process_to_terminal(file, "held.txt", owner_poll_s=0.5)
            waited = time.monotonic() - started
            await ending
    manifest = store.get_bytes(manifest_key(digest)) if store.exists(manifest_key(digest)) else None
    return {"waited": waited, "manifest": json.loads(manifest) if manifest else None,
            "record": uploads.read(store, upload_id), "owner": str(owner.id)}


def test_a_file_whose_upload_another_run_is_working_on_waits_for_it_instead_of_failing_it(prefect_server, tmp_path):
    """Before, three quick attempts that each found the upload another run's ended in a failed
    manifest and upload status under the live run (the sender told "failed", then "completed")."""
    seen = asyncio.run(_held_upload_scenario(tmp_path, "completed"))
    assert seen["waited"] >= 7, seen
    assert seen["manifest"] is None  # nothing written over the owner's work
    assert (seen["record"].status, seen["record"].flow_run_id) == ("completed", seen["owner"])


def test_a_file_whose_upload_owner_dies_is_taken_over_and_completed(prefect_server, tmp_path):
    seen = asyncio.run(_held_upload_scenario(tmp_path, "crashed"))
    assert seen["manifest"]["status"] == "completed", seen["manifest"]
    assert seen["record"].status == "completed" and seen["record"].flow_run_id != seen["owner"]
