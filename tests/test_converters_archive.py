"""archive_expand: members round-trip byte-exact; hostile, bomb and broken archives fail typed."""

from __future__ import annotations

import io
import shutil
import struct
import zipfile
from pathlib import Path

import pytest

from converters import archive_expand
from converters.base import ConversionResult
from fileflow.errors import CorruptInput, LimitExceeded, UnsupportedInput

from fileflow.testing.samplegen import archives as gen

SAMPLES = Path(__file__).parent / "samples"


def expand(src: Path, out: Path, **options) -> ConversionResult:
    return archive_expand.convert(src, out, options)


def tree(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def assert_no_members(out: Path) -> None:
    assert not (out / "members").exists(), sorted(tree(out))


# --- normal archives ----------------------------------------------------------------------------


def test_spec() -> None:
    spec = archive_expand.SPEC
    assert spec.name == "archive_expand" and spec.kinds == frozenset({"archive"})
    assert spec.version == "1.0.0"


def test_nested_folders_round_trip_byte_exact(tmp_path: Path) -> None:
    files = gen.make_nested(tmp_path / "input.zip")
    out = tmp_path / "out"
    result = expand(tmp_path / "input.zip", out)

    assert [m.name for m in result.members] == list(files)
    for member in result.members:
        assert (out / member.path).read_bytes() == files[member.name]
        assert member.size == len(files[member.name])
    # numbered files only: no archive-supplied name became a path
    assert sorted(p.name for p in (out / "members").iterdir()) == ["000001", "000002", "000003"]
    assert [m.path for m in result.members] == ["members/000001", "members/000002", "members/000003"]
    assert not list(out.rglob("project*")) and not list(out.rglob("*.txt"))

    with zipfile.ZipFile(tmp_path / "input.zip") as zf:
        compressed = sum(i.compress_size for i in zf.infolist() if not i.is_dir())
    meta = result.metadata
    assert meta["entries"] == 6  # three directory entries are not members
    assert meta["members"] == 3
    assert meta["skipped"] == []
    assert meta["total_bytes"] == sum(len(d) for d in files.values())
    assert meta["compressed_bytes"] == compressed
    assert meta["max_ratio_seen"] > 1
    assert meta["depth"] == 0
    assert result.renditions == []


def test_every_supported_method_round_trips(tmp_path: Path) -> None:
    files = gen.make_methods(tmp_path / "input.zip")
    result = expand(tmp_path / "input.zip", tmp_path / "out")
    assert {m.name: (tmp_path / "out" / m.path).read_bytes() for m in result.members} == files


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_multi_chunk_members_round_trip(tmp_path: Path, method: int) -> None:
    """Sizes around the 64 KiB streaming chunk, compressible and not, in every method."""
    import random

    rnd = random.Random(7)
    words = [bytes(rnd.choice(b"abcdefghij") for _ in range(rnd.randint(2, 9))) for _ in range(300)]
    text = b" ".join(rnd.choice(words) for _ in range(400_000))[: 3 * 65536 + 17]
    data = {
        "exact.bin": bytes(3 * 65536),
        "text.txt": text,
        "noise.bin": rnd.randbytes(200_000),
    }
    gen.write_zip(tmp_path / "input.zip", [(gen.info(n, method=method), d) for n, d in data.items()])
    result = expand(tmp_path / "input.zip", tmp_path / "out")
    assert {m.name: (tmp_path / "out" / m.path).read_bytes() for m in result.members} == data


def test_zero_byte_members(tmp_path: Path) -> None:
    gen.make_zero_byte_member(tmp_path / "input.zip")
    out = tmp_path / "out"
    result = expand(tmp_path / "input.zip", out)
    assert [(m.name, m.size) for m in result.members] == [("empty.txt", 0), ("empty-stored.txt", 0), ("one.txt", 1)]
    assert (out / result.members[0].path).read_bytes() == b""
    assert (out / result.members[2].path).read_bytes() == b"1"


def test_empty_archive_completes_with_no_members(tmp_path: Path) -> None:
    gen.make_empty_archive(tmp_path / "input.zip")
    result = expand(tmp_path / "input.zip", tmp_path / "out")
    assert result.members == []
    assert result.metadata["entries"] == 0 and result.metadata["members"] == 0
    assert result.metadata["total_bytes"] == 0
    assert_no_members(tmp_path / "out")


def test_display_names_are_normalised_not_used_as_paths(tmp_path: Path) -> None:
    names = ["./a/b.txt", "././c.txt", "dir\\sub\\file.txt", "...", "a..b.txt", "ünïcode/日本語.txt",
             "x" * 1024]
    gen.write_zip(tmp_path / "input.zip", [(gen.info(n), n.encode()) for n in names])
    out = tmp_path / "out"
    result = expand(tmp_path / "input.zip", out)
    assert [m.name for m in result.members] == [
        "a/b.txt", "c.txt", "dir/sub/file.txt", "...", "a..b.txt", "ünïcode/日本語.txt", "x" * 1024
    ]
    for member, raw in zip(result.members, names):
        assert (out / member.path).read_bytes() == raw.encode()
    assert {p.relative_to(out).as_posix() for p in tree(out)} == {"members"} | {m.path for m in result.members}


def test_self_extractor_prefix_is_tolerated(tmp_path: Path) -> None:
    files = gen.make_nested(tmp_path / "plain.zip")
    (tmp_path / "input.zip").write_bytes(b"MZ" + bytes(998) + (tmp_path / "plain.zip").read_bytes())
    result = expand(tmp_path / "input.zip", tmp_path / "out")
    assert {m.name: (tmp_path / "out" / m.path).read_bytes() for m in result.members} == files


def test_rerun_into_the_same_out_dir_replaces_members(tmp_path: Path) -> None:
    gen.make_nested(tmp_path / "input.zip")
    out = tmp_path / "out"
    expand(tmp_path / "input.zip", out)
    (out / "members" / "999999").write_bytes(b"stale")
    result = expand(tmp_path / "input.zip", out)
    assert sorted(p.name for p in (out / "members").iterdir()) == ["000001", "000002", "000003"]
    assert len(result.members) == 3


def test_failed_rerun_leaves_no_stale_members(tmp_path: Path) -> None:
    gen.make_nested(tmp_path / "input.zip")
    out = tmp_path / "out"
    expand(tmp_path / "input.zip", out)
    with pytest.raises(LimitExceeded):
        expand(tmp_path / "input.zip", out, max_entries=2)
    assert_no_members(out)


def test_committed_bundle_sample(tmp_path: Path) -> None:
    sample = SAMPLES / "bundle.zip"
    assert sample.stat().st_size < 100 * 1024
    out = tmp_path / "out"
    result = expand(sample, out, mime="application/zip")
    by_name = {m.name: (out / m.path).read_bytes() for m in result.members}
    assert sorted(by_name) == ["bundle/README.txt", "bundle/images/label.png", "bundle/notes/chantier-fr.md"]
    assert by_name["bundle/README.txt"].decode() == gen.ENGLISH
    assert by_name["bundle/notes/chantier-fr.md"].decode("utf-8") == gen.FRENCH
    assert "réunion" in by_name["bundle/notes/chantier-fr.md"].decode("utf-8")

    from PIL import Image

    png = Image.open(io.BytesIO(by_name["bundle/images/label.png"]))
    assert png.format == "PNG" and png.size == (320, 96)
    dark = sum(1 for px in png.convert("L").getdata() if px < 100)
    assert dark > 300  # the drawn text is there


def test_committed_bundle_png_text_is_readable(tmp_path: Path) -> None:
    tesserocr = pytest.importorskip("tesserocr")
    tessdata = "/usr/share/tesseract-ocr/5/tessdata"
    if not Path(tessdata, "eng.traineddata").exists():
        pytest.skip("no English tessdata")
    from PIL import Image

    with zipfile.ZipFile(SAMPLES / "bundle.zip") as zf:
        png = Image.open(io.BytesIO(zf.read("bundle/images/label.png")))
    with tesserocr.PyTessBaseAPI(path=tessdata, lang="eng") as api:
        api.SetImage(png)
        assert gen.PNG_TEXT in api.GetUTF8Text()


def test_bundle_generator_matches_committed_texts(tmp_path: Path) -> None:
    files = gen.make_bundle(tmp_path / "bundle.zip")
    with zipfile.ZipFile(SAMPLES / "bundle.zip") as committed:
        for name, data in files.items():
            if not name.endswith(".png"):
                assert committed.read(name) == data


# --- hostile names: the whole archive is rejected -------------------------------------------------


HOSTILE_NAMES = {
    "dotdot": "../evil.txt",
    "deep-dotdot": "a/b/../../../evil.txt",
    "backslash-dotdot": "..\\evil.txt",
    "backslash-deep": "a\\..\\..\\evil.txt",
    "dotdot-trailing-space": "a/.. /evil.txt",
    "absolute": "/etc/cron.d/evil",
    "absolute-backslash": "\\Windows\\evil.txt",
    "unc": "\\\\server\\share\\evil.txt",
    "drive": "C:\\Windows\\evil.txt",
    "drive-relative": "C:evil.txt",
    "drive-forward": "d:/evil.txt",
    "empty": "",
    "control": "bad\x07name.txt",
    "newline": "line\nbreak.txt",
    "bidi-override": "invoice_\u202etxt.exe",
    "too-long": "y" * 1025,
    "too-long-multibyte": "é" * 513,  # 1026 UTF-8 bytes
}


@pytest.mark.parametrize("name", list(HOSTILE_NAMES.values()), ids=list(HOSTILE_NAMES))
def test_hostile_names_reject_the_whole_archive(tmp_path: Path, name: str) -> None:
    gen.make_named(tmp_path / "input.zip", name)
    out = tmp_path / "out"
    before = tree(tmp_path)
    with pytest.raises(CorruptInput, match="hostile archive: entry .* the whole archive is rejected"):
        expand(tmp_path / "input.zip", out)
    assert_no_members(out)
    assert tree(tmp_path) - before <= {out}
    assert not (tmp_path / "evil.txt").exists()


def test_nul_in_name_rejects_the_archive(tmp_path: Path) -> None:
    gen.make_nul_name(tmp_path / "input.zip")
    with zipfile.ZipFile(tmp_path / "input.zip") as zf:
        assert zf.infolist()[1].filename == "evil.txt"  # what zipfile shows hides the NUL
    with pytest.raises(CorruptInput, match="U\\+0000"):
        expand(tmp_path / "input.zip", tmp_path / "out")
    assert_no_members(tmp_path / "out")


def test_hostile_directory_entry_rejects_the_archive(tmp_path: Path) -> None:
    gen.write_zip(tmp_path / "input.zip", [(gen.info("ok.txt"), b"ok"), (gen.info("../../outside/", mode=0o40755), b"")])
    with pytest.raises(CorruptInput, match="path traversal"):
        expand(tmp_path / "input.zip", tmp_path / "out")


def test_name_limit_is_an_option(tmp_path: Path) -> None:
    gen.make_named(tmp_path / "input.zip", "z" * 100)
    with pytest.raises(CorruptInput, match="100-byte name; the limit is 64"):
        expand(tmp_path / "input.zip", tmp_path / "out", max_name_bytes=64)


# --- symlinks and special files ------------------------------------------------------------------


def test_symlinks_and_special_files_are_skipped_never_created(tmp_path: Path) -> None:
    gen.make_special_files(tmp_path / "input.zip")
    out = tmp_path / "out"
    before = tree(tmp_path)
    escaped = Path("/tmp/escaped")
    existed = escaped.exists()

    result = expand(tmp_path / "input.zip", out)

    assert [m.name for m in result.members] == ["real.txt"]
    assert (out / result.members[0].path).read_bytes() == b"real\n"
    assert result.metadata["skipped"] == [
        {"name": "link-to-passwd", "reason": "symlink"},
        {"name": "escape", "reason": "symlink"},
        {"name": "pipe", "reason": "fifo"},
        {"name": "null-device", "reason": "device"},
    ]
    assert result.metadata["entries"] == 5 and result.metadata["members"] == 1
    # nothing outside out_dir, no link, fifo or device anywhere under it
    new = tree(tmp_path) - before
    assert all(p == out or out in p.parents for p in new), new
    assert {p.relative_to(out).as_posix() for p in tree(out)} == {"members", "members/000001"}
    assert all(p.is_dir() or (p.is_file() and not p.is_symlink()) for p in tree(out))
    assert escaped.exists() == existed


def test_members_dir_planted_as_symlink_is_not_followed(tmp_path: Path) -> None:
    gen.make_nested(tmp_path / "input.zip")
    out = tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out.mkdir()
    (out / "members").symlink_to(elsewhere)
    expand(tmp_path / "input.zip", out)
    assert list(elsewhere.iterdir()) == []
    assert (out / "members").is_dir() and not (out / "members").is_symlink()


# --- bombs and limits ----------------------------------------------------------------------------


def test_zip_bomb_by_ratio(tmp_path: Path) -> None:
    gen.make_ratio_bomb(tmp_path / "input.zip", megabytes=10)
    with pytest.raises(LimitExceeded, match="zip bomb.*'zeros.bin'.*max_ratio"):
        expand(tmp_path / "input.zip", tmp_path / "out")
    assert_no_members(tmp_path / "out")
    # the same file is fine with a looser ratio
    result = expand(tmp_path / "input.zip", tmp_path / "out2", max_ratio=5000)
    assert result.members[0].size == 10 * 1024 * 1024
    assert result.metadata["max_ratio_seen"] > 200


def test_ratio_is_not_checked_for_small_entries(tmp_path: Path) -> None:
    gen.write_zip(tmp_path / "input.zip", [(gen.info("zeros.bin"), bytes(1024 * 1024))])  # exactly 1 MiB
    result = expand(tmp_path / "input.zip", tmp_path / "out")
    assert result.metadata["max_ratio_seen"] > 200


def test_declared_total_over_the_limit(tmp_path: Path) -> None:
    gen.make_stored_random(tmp_path / "input.zip", count=3, size=40_000)
    with pytest.raises(LimitExceeded, match="more than 100000 bytes in total.*'part02.bin'.*max_total_bytes"):
        expand(tmp_path / "input.zip", tmp_path / "out", max_total_bytes=100_000)
    assert_no_members(tmp_path / "out")
    assert len(expand(tmp_path / "input.zip", tmp_path / "out", max_total_bytes=120_000).members) == 3


def test_declared_total_over_default_two_gib(tmp_path: Path) -> None:
    """Three entries each declaring 0.9 GiB (under 1 GiB, ratio under 200): together over 2 GiB."""
    declared = int(0.9 * 1024**3)
    gen.make_stored_random(tmp_path / "input.zip", count=3, size=declared // 190)
    for i in range(3):
        gen.patch_entry(tmp_path / "input.zip", i, file_size=declared)
    with pytest.raises(LimitExceeded, match="more than 2147483648 bytes in total.*'part02.bin'"):
        expand(tmp_path / "input.zip", tmp_path / "out")
    assert_no_members(tmp_path / "out")


def test_declared_entry_over_default_one_gib(tmp_path: Path) -> None:
    gen.make_declared_huge(tmp_path / "input.zip", declared=3 * 1024**3)
    with pytest.raises(LimitExceeded, match="'huge.bin' declares 3221225472 bytes; the limit is 1073741824"):
        expand(tmp_path / "input.zip", tmp_path / "out")
    assert_no_members(tmp_path / "out")


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2], ids=["deflate", "bzip2"])
def test_lying_headers_are_stopped_while_streaming(tmp_path: Path, method: int) -> None:
    """50 MB of zeros whose headers declare 1000 bytes: no ratio alarm, caught by the real count."""
    gen.make_lying_headers(tmp_path / "input.zip", megabytes=50, declared=1000, method=method)
    with zipfile.ZipFile(tmp_path / "input.zip") as zf:
        lying = zf.infolist()[1]
        assert lying.file_size == 1000 and lying.file_size < lying.compress_size * 200
    out = tmp_path / "out"
    with pytest.raises(CorruptInput, match="'report.txt' declares 1000 bytes but holds more"):
        expand(tmp_path / "input.zip", out)
    assert_no_members(out)  # the harmless first member was deleted too


def test_real_byte_limits_stop_streaming_as_soon_as_passed(tmp_path: Path) -> None:
    """The streaming guard itself: real bytes are counted against the limits chunk by chunk."""
    import random

    data = random.Random(1).randbytes(1_000_000)
    gen.write_zip(tmp_path / "input.zip", [(gen.info("big.bin"), data)])
    dest = tmp_path / "dest"
    with open(tmp_path / "input.zip", "rb") as fp, zipfile.ZipFile(fp) as zf:
        info = zf.infolist()[0]
        budget = archive_expand._Budget(max_entry_bytes=100_000, max_total_bytes=10**9)
        with pytest.raises(LimitExceeded, match="'big.bin' expands past 100000 bytes"):
            archive_expand._write_member(fp, info, "big.bin", dest, budget)
        assert dest.stat().st_size <= 100_000  # stopped before writing the chunk that passed
        dest.unlink()
        budget = archive_expand._Budget(max_entry_bytes=10**9, max_total_bytes=300_000, total=250_000)
        with pytest.raises(LimitExceeded, match="past 300000 bytes in total"):
            archive_expand._write_member(fp, info, "big.bin", dest, budget)
        assert dest.stat().st_size <= 50_000


def test_too_many_entries_with_a_small_limit(tmp_path: Path) -> None:
    gen.make_many_entries(tmp_path / "input.zip", 6)
    with pytest.raises(LimitExceeded, match="6 entries; the limit is 5"):
        expand(tmp_path / "input.zip", tmp_path / "out", max_entries=5)
    assert_no_members(tmp_path / "out")
    assert len(expand(tmp_path / "input.zip", tmp_path / "out", max_entries=6).members) == 6


def test_too_many_entries_default_limit(tmp_path: Path) -> None:
    gen.make_many_entries(tmp_path / "input.zip", 10_001)
    with pytest.raises(LimitExceeded, match="10001 entries; the limit is 10000"):
        expand(tmp_path / "input.zip", tmp_path / "out")
    assert_no_members(tmp_path / "out")


def test_entry_count_is_walked_not_trusted(tmp_path: Path) -> None:
    """An end record that claims 1 entry while the directory holds 8 is still stopped."""
    gen.make_many_entries(tmp_path / "input.zip", 8)
    data = bytearray((tmp_path / "input.zip").read_bytes())
    eocd = data.rfind(b"PK\x05\x06")
    struct.pack_into("<2H", data, eocd + 8, 1, 1)
    (tmp_path / "input.zip").write_bytes(bytes(data))
    with pytest.raises(LimitExceeded, match="more than 5 entries"):
        expand(tmp_path / "input.zip", tmp_path / "out", max_entries=5)


def test_overlapping_entries_are_rejected(tmp_path: Path) -> None:
    gen.make_overlapping(tmp_path / "input.zip")
    with pytest.raises(CorruptInput, match="overlap"):
        expand(tmp_path / "input.zip", tmp_path / "out")
    assert_no_members(tmp_path / "out")


def test_nested_archive_depth(tmp_path: Path) -> None:
    """Members that are archives come back as members; the caller recurses with depth + 1."""
    gen.make_nested_chain(tmp_path / "input.zip", levels=4)
    src = tmp_path / "input.zip"
    for depth in range(3):
        out = tmp_path / f"out{depth}"
        result = expand(src, out, depth=depth)
        assert result.metadata["depth"] == depth
        [member] = result.members
        assert member.name == f"level{depth + 1}.zip"
        src = out / member.path
        assert zipfile.is_zipfile(src)
    with pytest.raises(LimitExceeded, match="archive nested deeper than 3"):
        expand(src, tmp_path / "out3", depth=3)
    assert_no_members(tmp_path / "out3")
    # the limit is an option
    deepest = expand(src, tmp_path / "out3b", depth=3, max_depth=5)
    assert deepest.members[0].name == "innermost.txt"
    assert (tmp_path / "out3b" / deepest.members[0].path).read_bytes() == b"innermost\n"


# --- unsupported ---------------------------------------------------------------------------------


def test_encrypted_flag(tmp_path: Path) -> None:
    gen.make_encrypted_flag(tmp_path / "input.zip")
    with pytest.raises(UnsupportedInput, match="password-protected archive: entry 'secret.txt'"):
        expand(tmp_path / "input.zip", tmp_path / "out")
    assert_no_members(tmp_path / "out")


@pytest.mark.skipif(not shutil.which("zip"), reason="Info-ZIP zip is not installed")
def test_encrypted_with_real_zipcrypto(tmp_path: Path) -> None:
    assert gen.make_encrypted_with_zip(tmp_path / "input.zip", tmp_path / "work")
    with pytest.raises(UnsupportedInput, match="password-protected"):
        expand(tmp_path / "input.zip", tmp_path / "out")


def test_unsupported_compression_method(tmp_path: Path) -> None:
    gen.make_unsupported_method(tmp_path / "input.zip", method=9)
    with pytest.raises(UnsupportedInput, match="deflate64"):
        expand(tmp_path / "input.zip", tmp_path / "out")


@pytest.mark.parametrize("mime", [
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.oasis.opendocument.text",
    "application/vnd.ms-excel.sheet.macroEnabled.12",
])
def test_office_documents_are_not_expanded(tmp_path: Path, mime: str) -> None:
    gen.make_nested(tmp_path / "input.zip")
    with pytest.raises(UnsupportedInput, match="office document"):
        expand(tmp_path / "input.zip", tmp_path / "out", mime=mime)
    assert_no_members(tmp_path / "out")


def test_real_docx_with_office_mime_is_refused(tmp_path: Path) -> None:
    docx = pytest.importorskip("docx")
    doc = docx.Document()
    doc.add_paragraph("hello")
    doc.save(tmp_path / "input.docx")
    with pytest.raises(UnsupportedInput):
        expand(tmp_path / "input.docx", tmp_path / "out",
               mime="application/vnd.openxmlformats-officedocument.wordprocessingml.document")


def test_other_archive_formats_are_unsupported(tmp_path: Path) -> None:
    (tmp_path / "input.7z").write_bytes(b"7z\xbc\xaf\x27\x1c" + bytes(100))
    with pytest.raises(UnsupportedInput, match="only ZIP"):
        expand(tmp_path / "input.7z", tmp_path / "out", mime="application/x-7z-compressed")


# --- broken --------------------------------------------------------------------------------------


def test_truncated_archive(tmp_path: Path) -> None:
    gen.make_truncated(tmp_path / "input.zip")
    with pytest.raises(CorruptInput, match="truncated"):
        expand(tmp_path / "input.zip", tmp_path / "out")
    assert_no_members(tmp_path / "out")


@pytest.mark.parametrize("data", [b"", b"PK\x03\x04", b"this is not a zip at all" * 10], ids=["empty", "magic-only", "text"])
def test_not_a_zip(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "input.zip").write_bytes(data)
    with pytest.raises(CorruptInput, match="ZIP archive"):
        expand(tmp_path / "input.zip", tmp_path / "out")


def test_directory_pointing_past_the_end(tmp_path: Path) -> None:
    gen.make_nested(tmp_path / "input.zip")
    data = (tmp_path / "input.zip").read_bytes()
    cut = data.find(b"PK\x01\x02")
    (tmp_path / "input.zip").write_bytes(data[:100] + data[cut:])  # member data removed, directory kept
    with pytest.raises(CorruptInput, match="truncated archive"):
        expand(tmp_path / "input.zip", tmp_path / "out")
    assert_no_members(tmp_path / "out")


def test_crc_error_while_streaming_cleans_written_members(tmp_path: Path) -> None:
    gen.make_bad_crc(tmp_path / "input.zip")
    out = tmp_path / "out"
    with pytest.raises(CorruptInput, match="'flipped.txt' fails its CRC-32 check"):
        expand(tmp_path / "input.zip", out)
    assert_no_members(out)  # good.txt had been written first and was removed


def test_garbled_deflate_stream(tmp_path: Path) -> None:
    text = (gen.ENGLISH * 200).encode()
    gen.write_zip(tmp_path / "input.zip", [(gen.info("a.txt"), text)])
    with zipfile.ZipFile(tmp_path / "input.zip") as zf:
        zi = zf.infolist()[0]
    data = bytearray((tmp_path / "input.zip").read_bytes())
    start = zi.header_offset + 30 + len(zi.filename)
    for i in range(start + 5, start + zi.compress_size - 5, 7):
        data[i] ^= 0x5A
    (tmp_path / "input.zip").write_bytes(bytes(data))
    with pytest.raises(CorruptInput, match="'a.txt'"):
        expand(tmp_path / "input.zip", tmp_path / "out")
    assert_no_members(tmp_path / "out")


def test_bad_option_values(tmp_path: Path) -> None:
    gen.make_empty_archive(tmp_path / "input.zip")
    with pytest.raises(ValueError, match="max_entries"):
        expand(tmp_path / "input.zip", tmp_path / "out", max_entries="many")
    with pytest.raises(ValueError, match="depth"):
        expand(tmp_path / "input.zip", tmp_path / "out", depth=-1)


def test_never_writes_outside_out_dir_on_any_case(tmp_path: Path) -> None:
    """All generators at once: the only new paths are under their out dirs."""
    cases = tmp_path / "cases"
    cases.mkdir()
    makers = [
        lambda p: gen.make_named(p, "../../escape.txt"),
        lambda p: gen.make_named(p, "/tmp/escape.txt"),
        gen.make_special_files,
        gen.make_bad_crc,
        gen.make_nested,
    ]
    for i, make in enumerate(makers):
        make(cases / f"{i}.zip")
    before = tree(tmp_path)
    existed = {p: Path(p).exists() for p in ("/tmp/escape.txt", "/escape.txt")}
    for i in range(len(makers)):
        try:
            expand(cases / f"{i}.zip", tmp_path / f"out{i}")
        except (CorruptInput, LimitExceeded, UnsupportedInput):
            pass
    new = tree(tmp_path) - before
    assert all(any(p == tmp_path / f"out{i}" or tmp_path / f"out{i}" in p.parents
                   for i in range(len(makers))) for p in new), new
    assert {p: Path(p).exists() for p in existed} == existed
