"""What a data room also receives, end to end on the embedded default (real Prefect server on
SQLite, real converters, LibreOffice, ffmpeg, librsvg): e-mails, 7z/RAR/tar/gz archives, audio,
HTML/XML/JSON/EPUB/SVG, each made by the tests' own generators, and their hostile variants.

One batch goes through ``run_batch`` exactly as ``fileflow process`` runs it; the tests read the
manifests and the stored renditions.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import av
import jsonschema
import pytest

from blocks.storage import StorageConfig
from fileflow.ops.batch import run_batch
from fileflow.settings import PipelineSettings

from fileflow.testing.samplegen import audio, emails, libarchives, markup

SCHEMA = json.loads((Path(__file__).parents[1] / "docs" / "manifest.schema.json").read_text())
SETTINGS = PipelineSettings(child_processes=2, max_active_files=4, retry_delay_s=0.1)
MEETING = b"Minutes of the board meeting. The budget for the north site was approved after a long discussion.\n"


def make_batch(folder: Path, scratch: Path) -> list[Path]:
    folder.mkdir()
    scratch.mkdir()
    emails.html_with_pdf(folder / "contract.eml", scratch)
    emails.outlook(folder / "contract.msg", scratch)
    emails.nested(folder / "forwarded.eml", 4)  # levels 4..0: the one at depth 3 is past the limit
    emails.attachment_bomb(folder / "figures.eml", scratch, 64)
    libarchives.seven_zip(folder / "bundle.7z")
    libarchives.seven_zip_bomb(folder / "bomb.7z", 64)
    libarchives.rar(folder / "minutes.rar", [("minutes.txt", MEETING)])
    libarchives.rar(folder / "traversal.rar", [("ok.txt", b"fine\n"), ("../../evil.txt", b"owned\n")])
    libarchives.tar(folder / "reports.tar.gz", compression="gz")
    libarchives.gz(folder / "notes.txt.gz", MEETING, "notes.txt")
    audio.rising_tone(folder / "call.mp3")
    audio.rising_tone(folder / "memo.m4a")
    audio.rising_tone(folder / "dictation.wav")
    markup.html_page(folder / "page.html")
    markup.xml_doc(folder / "report.xml")
    markup.json_doc(folder / "contract.json")
    markup.epub(folder / "handbook.epub")
    markup.svg(folder / "plan.svg")
    markup.billion_laughs(folder / "lol.xml")
    markup.external_entity(folder / "xxe.xml")
    markup.svg_local_file(folder / "passwd.svg")
    return sorted(folder.iterdir())


@pytest.fixture(scope="module")
def batch(prefect_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("dataroom")
    files = make_batch(root / "in", root / "scratch")
    out = root / "out"
    manifests = asyncio.run(run_batch(files, SETTINGS, StorageConfig(basepath=str(out))))
    return root, files, out, manifests


def by_name(manifests):
    return {m["name"]: m for m in manifests}


def roles(manifest) -> set[str]:
    return {r["role"] for r in manifest["renditions"]}


def rendition(manifest, role):
    return next(r for r in manifest["renditions"] if r["role"] == role)


def error_of(manifest):
    return next(s["error"] for s in manifest["steps"] if s.get("error"))


def test_every_file_and_member_has_a_valid_manifest_and_nothing_escapes(batch):
    root, files, out, manifests = batch
    assert sorted(m["name"] for m in manifests if m["parent"] is None) == sorted(f.name for f in files)
    for manifest in manifests:
        jsonschema.validate(manifest, SCHEMA)
    assert {p.name for p in out.iterdir()} <= {"originals", "derived", "manifests", "results", "uploads", "uploads-by-file"}
    assert {p.name for p in root.iterdir()} == {"in", "scratch", "out"}
    assert not list(root.rglob("evil.txt"))


def test_hostile_variants_fail_typed(batch):
    _, _, _, manifests = batch
    m = by_name(manifests)
    expected = {
        "bomb.7z": ("LimitExceeded", "archive bomb"),
        "traversal.rar": ("CorruptInput", "path traversal"),
        "lol.xml": ("CorruptInput", "declares entities"),
        "xxe.xml": ("CorruptInput", "declares entities"),
        "passwd.svg": ("CorruptInput", "hostile SVG"),
        "figures.eml/figures.zip": ("LimitExceeded", "zip bomb"),
        "forwarded.eml/level 3.eml/level 2.eml/level 1.eml": ("LimitExceeded", "nested deeper than 3"),
    }
    failed = {name for name, man in m.items() if man["status"] == "failed"}
    assert failed == set(expected), failed
    for name, (etype, words) in expected.items():
        error = error_of(m[name])
        assert error["type"] == etype and words in error["message"], (name, error)
    assert m["traversal.rar"]["children"] == [] and m["bomb.7z"]["children"] == []


def test_email_gets_headers_text_language_printable_pdf_previews_and_its_attachment(batch):
    _, _, out, manifests = batch
    m = by_name(manifests)
    mail = m["contract.eml"]
    assert mail["kind"] == "email" and mail["status"] == "completed"
    meta = mail["metadata"]["email_parse"]
    assert meta["subject"] == "Signed supply contract" and meta["message_id"] == "<contract-42@example.com>"
    assert meta["from"] == ["Anna Weber <anna.weber@example.com>"] and meta["cc"] == ["legal@example.com"]
    assert roles(mail) == {"text", "web", "pdf", "preview"}
    assert mail["language"] == "en"
    assert "north site" in (out / mail["text"]).read_text()
    pdf = (out / rendition(mail, "pdf")["path"]).read_bytes()
    assert pdf.startswith(b"%PDF")
    page = (out / rendition(mail, "web")["path"]).read_text()
    assert "tracker.invalid" not in page and "<script" not in page
    attachment = m["contract.eml/contract.pdf"]
    assert attachment["parent"] == mail["file_id"] and mail["children"] == [attachment["file_id"]]
    assert attachment["kind"] == "pdf" and attachment["status"] == "completed"
    assert "Supply contract" in (out / attachment["text"]).read_text()


def test_outlook_msg_is_an_email_with_its_attachment(batch):
    _, _, out, manifests = batch
    m = by_name(manifests)
    mail = m["contract.msg"]
    assert mail["kind"] == "email" and mail["mime"] == "application/vnd.ms-outlook" and mail["status"] == "completed"
    assert mail["metadata"]["email_parse"]["message_id"] == "<contract-43@example.com>"
    assert roles(mail) == {"text", "web", "pdf", "preview"} and mail["language"] == "en"
    attachment = m["contract.msg/contract.pdf"]
    assert attachment["parent"] == mail["file_id"] and attachment["status"] == "completed"


def test_nested_emails_are_members_down_to_the_depth_limit(batch):
    _, _, _, manifests = batch
    chain = ["forwarded.eml", "forwarded.eml/level 3.eml", "forwarded.eml/level 3.eml/level 2.eml"]
    m = by_name(manifests)
    for parent, child in zip(chain, chain[1:]):
        assert m[child]["parent"] == m[parent]["file_id"] and m[child]["status"] == "completed"
    assert "forwarded.eml/level 3.eml/level 2.eml/level 1.eml/level 0.eml" not in m


def test_attachment_bomb_leaves_the_email_itself_complete(batch):
    _, _, _, manifests = batch
    m = by_name(manifests)
    assert m["figures.eml"]["status"] == "completed" and len(m["figures.eml"]["children"]) == 1


def test_archives_of_every_common_format_expand_into_members(batch):
    _, _, out, manifests = batch
    m = by_name(manifests)
    for archive, members in {
        "bundle.7z": set(libarchives.FILES), "reports.tar.gz": set(libarchives.FILES),
        "minutes.rar": {"minutes.txt"}, "notes.txt.gz": {"notes.txt"},
    }.items():
        assert m[archive]["kind"] == "archive" and m[archive]["status"] == "completed", archive
        names = {n.split("/", 1)[1] for n in m if n.startswith(archive + "/")}
        assert names == members, archive
        assert len(m[archive]["children"]) == len(members)
    assert (out / m["minutes.rar/minutes.txt"]["text"]).read_bytes() == MEETING
    assert m["notes.txt.gz/notes.txt"]["language"] == "en"


def test_audio_gets_metadata_a_browser_rendition_and_a_waveform(batch):
    _, _, out, manifests = batch
    m = by_name(manifests)
    for name, codec, web_codec in (("call.mp3", "mp3", "mp3"), ("memo.m4a", "aac", "aac"), ("dictation.wav", "pcm_s16le", "aac")):
        clip = m[name]
        assert clip["kind"] == "audio" and clip["status"] == "completed", name
        probe = clip["metadata"]["audio_probe"]
        assert probe["codec"] == codec and probe["duration_s"] == pytest.approx(2.0, abs=0.06)
        assert probe["tags"]["title"] == audio.TITLE
        with av.open(str(out / rendition(clip, "web")["path"])) as container:
            assert container.streams.audio[0].codec_context.name.startswith(web_codec)
        previews = [r for r in clip["renditions"] if r["role"] == "preview"]
        assert sorted(r["width"] for r in previews) == [160, 480, 1280]
        assert all((out / r["path"]).read_bytes().startswith(b"\x89PNG") for r in previews)


def test_markup_gives_text_language_and_printable_previews(batch):
    _, _, out, manifests = batch
    m = by_name(manifests)
    page = m["page.html"]
    assert page["kind"] == "markup" and roles(page) == {"text", "web", "pdf", "preview"} and page["language"] == "en"
    assert m["report.xml"]["language"] == "fr" and "réunion" in (out / m["report.xml"]["text"]).read_text()
    assert m["contract.json"]["language"] == "de" and "Jürgen Müller" in (out / m["contract.json"]["text"]).read_text()
    book = m["handbook.epub"]
    assert book["kind"] == "markup" and book["children"] == []  # an EPUB is never expanded as an archive
    assert book["metadata"]["markup_text"]["title"] == "Site handbook" and book["language"] == "en"
    assert len([r for r in book["renditions"] if r["role"] == "preview"]) == 3
    plan = m["plan.svg"]
    assert plan["status"] == "completed" and "North building" in (out / plan["text"]).read_text()
    assert sorted(r["width"] for r in plan["renditions"] if r["role"] == "preview") == [160, 480, 1280]


def test_every_input_a_step_records_is_in_reprocessing_graph(batch):
    """As in tests/test_pipeline.py, for the e-mail, markup and audio kinds."""
    from fileflow.ops.reprocess import CONSUMERS

    manifests = batch[3]
    edges = {(s["input"], s["name"]) for m in manifests for s in m["steps"] if s.get("input")}
    assert ("email_parse", "office_pdf") in edges  # seen, not vacuous
    assert {e for e in edges if e[1] not in CONSUMERS.get(e[0], ())} == set()
