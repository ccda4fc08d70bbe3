"""archive_libarchive: 7z, RAR, tar(.gz/.bz2/.xz) and single compressed files expand to byte-exact
members; hostile, bomb, encrypted and broken archives fail typed and leave no members."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from converters import archive_libarchive
from converters.base import ConversionResult
from fileflow.errors import CorruptInput, LimitExceeded, UnsupportedInput

from fileflow.testing.samplegen import libarchives as gen


def expand(src: Path, out: Path, **options) -> ConversionResult:
    return archive_libarchive.convert(src, out, options)


def members_of(result: ConversionResult, out: Path) -> dict[str, bytes]:
    return {m.name: (out / m.path).read_bytes() for m in result.members}


def assert_nothing_kept(tmp_path: Path, out: Path, inputs: set[str]) -> None:
    assert not (out / "members").exists()
    assert {p.name for p in tmp_path.iterdir()} <= inputs | {out.name}


@pytest.mark.parametrize("compression,fmt,filters", [
    ("", "GNU tar format", []), ("gz", "GNU tar format", ["gzip"]),
    ("bz2", "GNU tar format", ["bzip2"]), ("xz", "GNU tar format", ["xz"]),
])
def test_tar_family_round_trips(tmp_path: Path, compression: str, fmt: str, filters: list[str]) -> None:
    src = gen.tar(tmp_path / "in.tar", compression=compression)
    out = tmp_path / "out"
    result = expand(src, out)
    assert members_of(result, out) == gen.FILES
    assert [m.path for m in result.members] == ["members/000001", "members/000002", "members/000003"]
    assert result.metadata["format"] == fmt and result.metadata["filters"] == filters
    assert result.metadata["entries"] == 4 and result.metadata["members"] == 3  # the directory is no member
    assert result.metadata["total_bytes"] == sum(map(len, gen.FILES.values()))


def test_seven_zip_round_trips(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = expand(gen.seven_zip(tmp_path / "in.7z"), out)
    assert members_of(result, out) == gen.FILES
    assert result.metadata["format"] == "7-Zip"


def test_rar_built_byte_by_byte_round_trips(tmp_path: Path) -> None:
    files = [("minutes.txt", b"Minutes of the board meeting.\n"), ("scans/page1.txt", b"page one\n")]
    out = tmp_path / "out"
    result = expand(gen.rar(tmp_path / "in.rar", files), out)
    assert members_of(result, out) == dict(files)
    assert result.metadata["format"] == "RAR"


def test_single_gzip_file_is_one_member_named_from_its_header(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = expand(gen.gz(tmp_path / "notes.txt.gz", b"plain notes\n", "notes.txt"), out)
    assert members_of(result, out) == {"notes.txt": b"plain notes\n"}
    assert result.metadata["format"] == "raw" and result.metadata["filters"] == ["gzip"]
    result = expand(gen.gz(tmp_path / "anon.gz", b"no name\n", None), tmp_path / "out2")
    assert [m.name for m in result.members] == ["content"]


def test_uncompressed_garbage_is_not_an_archive(tmp_path: Path) -> None:
    src = tmp_path / "garbage.bin"
    src.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(CorruptInput, match="not an archive"):
        expand(src, tmp_path / "out")
    assert_nothing_kept(tmp_path, tmp_path / "out", {"garbage.bin"})


@pytest.mark.parametrize("name", ["../../evil.txt", "a/../../evil.txt", "/etc/cron.d/evil", "C:\\evil.txt",
                                  "..\\..\\evil.txt", "ok\u202etxt.exe"])
def test_hostile_names_in_tar_reject_the_whole_archive(tmp_path: Path, name: str) -> None:
    src = gen.tar_named(tmp_path / "in.tar.gz", name)
    with pytest.raises(CorruptInput, match="whole archive is rejected"):
        expand(src, tmp_path / "out")
    assert_nothing_kept(tmp_path, tmp_path / "out", {"in.tar.gz"})
    assert not (tmp_path.parent / "evil.txt").exists()


@pytest.mark.parametrize("name", ["../../evil.txt", "/etc/evil"])
def test_hostile_names_in_rar_reject_the_whole_archive(tmp_path: Path, name: str) -> None:
    # the good member comes first: it is written, then removed when the hostile one is seen
    src = gen.rar(tmp_path / "in.rar", [("ok.txt", b"fine\n"), (name, b"owned\n")])
    with pytest.raises(CorruptInput, match="whole archive is rejected"):
        expand(src, tmp_path / "out")
    assert_nothing_kept(tmp_path, tmp_path / "out", {"in.rar"})


def test_links_and_devices_are_skipped_never_created(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = expand(gen.tar_with_special_files(tmp_path / "in.tar"), out)
    assert members_of(result, out) == {"ok.txt": b"kept\n"}
    assert result.metadata["skipped"] == [
        {"name": "link-to-passwd", "reason": "symlink"}, {"name": "hard", "reason": "hardlink"},
        {"name": "null", "reason": "device"}, {"name": "pipe", "reason": "fifo"},
    ]
    assert not any(p.is_symlink() for p in out.rglob("*"))
    assert [p.name for p in (out / "members").iterdir()] == ["000001"]


def test_seven_zip_bomb_is_stopped_by_ratio_while_streaming(tmp_path: Path) -> None:
    src = tmp_path / "bomb.7z"
    expanded = gen.seven_zip_bomb(src, 64)
    assert src.stat().st_size < expanded / 1000  # a real bomb: tiny in, huge out
    with pytest.raises(LimitExceeded, match="archive bomb.*max_ratio"):
        expand(src, tmp_path / "out")
    assert_nothing_kept(tmp_path, tmp_path / "out", {"bomb.7z"})


def test_seven_zip_bomb_is_stopped_by_real_bytes_when_ratio_allows(tmp_path: Path) -> None:
    src = tmp_path / "bomb.7z"
    gen.seven_zip_bomb(src, 16)
    with pytest.raises(LimitExceeded, match="max_entry_bytes"):
        expand(src, tmp_path / "out", max_ratio=10**9, max_entry_bytes=4 * 2**20)
    with pytest.raises(LimitExceeded, match="max_total_bytes"):
        expand(src, tmp_path / "out", max_ratio=10**9, max_total_bytes=2 * 2**20)
    assert_nothing_kept(tmp_path, tmp_path / "out", {"bomb.7z"})


def test_declared_size_over_the_limit_fails_before_reading(tmp_path: Path) -> None:
    src = gen.tar_declaring(tmp_path / "in.tar", 5 * 2**30)
    with pytest.raises(LimitExceeded, match="declares 5368709120 bytes"):
        expand(src, tmp_path / "out")
    assert_nothing_kept(tmp_path, tmp_path / "out", {"in.tar"})


def test_entry_count_limit(tmp_path: Path) -> None:
    src = gen.tar_many(tmp_path / "many.tar.gz", 50)
    with pytest.raises(LimitExceeded, match="more than 10 entries"):
        expand(src, tmp_path / "out", max_entries=10)
    assert_nothing_kept(tmp_path, tmp_path / "out", {"many.tar.gz"})
    assert expand(src, tmp_path / "out2").metadata["members"] == 50


def test_nesting_depth_limit(tmp_path: Path) -> None:
    src = gen.tar(tmp_path / "in.tar.gz", compression="gz")
    assert expand(src, tmp_path / "out", depth=2).metadata["depth"] == 2
    with pytest.raises(LimitExceeded, match="nested deeper than 3"):
        expand(src, tmp_path / "out3", depth=3)


def test_encrypted_entries_are_refused_clearly(tmp_path: Path) -> None:
    src = gen.zip_encrypted(tmp_path / "secret.zip")
    with pytest.raises(UnsupportedInput, match="password-protected"):
        expand(src, tmp_path / "out")
    assert_nothing_kept(tmp_path, tmp_path / "out", {"secret.zip"})


@pytest.mark.parametrize("keep", [40, 100, 200])
def test_truncated_seven_zip_fails_typed(tmp_path: Path, keep: int) -> None:
    whole = gen.seven_zip(tmp_path / "whole.7z").read_bytes()
    src = tmp_path / "cut.7z"
    src.write_bytes(whole[:keep])
    with pytest.raises((CorruptInput, UnsupportedInput)):
        expand(src, tmp_path / "out")
    assert not (tmp_path / "out" / "members").exists()


def test_truncated_tar_gz_fails_typed_and_keeps_nothing(tmp_path: Path) -> None:
    whole = gen.tar(tmp_path / "whole.tar.gz", {"big.txt": bytes(range(256)) * 4000}, "gz").read_bytes()
    src = tmp_path / "cut.tar.gz"
    src.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CorruptInput):
        expand(src, tmp_path / "out")
    assert not (tmp_path / "out" / "members").exists()


@pytest.mark.parametrize("mime", ["application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                                  "application/epub+zip", "application/vnd.oasis.opendocument.text"])
def test_documents_that_are_zips_are_never_expanded(tmp_path: Path, mime: str) -> None:
    with pytest.raises(UnsupportedInput, match="not an archive"):
        expand(gen.seven_zip(tmp_path / "doc"), tmp_path / "out", mime=mime)


def test_rerun_replaces_members_and_a_planted_symlink_is_not_followed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    (out / "members").symlink_to(victim)
    result = expand(gen.seven_zip(tmp_path / "in.7z"), out)
    assert members_of(result, out) == gen.FILES
    assert list(victim.iterdir()) == []
    assert not (out / "members").is_symlink()


def test_member_files_are_never_named_by_the_archive(tmp_path: Path) -> None:
    out = tmp_path / "out"
    expand(gen.tar(tmp_path / "in.tar", {"deep/dir/évil name.txt": b"x"}, extra=[]), out)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["members", "members/000001"]


def test_tarfile_writes_what_the_hostile_tests_claim(tmp_path: Path) -> None:
    """The generator really puts the raw names and link types into the tar (guards the tests)."""
    with tarfile.open(gen.tar_with_special_files(tmp_path / "s.tar")) as tf:
        kinds = {m.name: m.type for m in tf.getmembers()}
    assert kinds["link-to-passwd"] == tarfile.SYMTYPE and kinds["null"] == tarfile.CHRTYPE
    with tarfile.open(gen.tar_named(tmp_path / "n.tar.gz", "../../evil.txt")) as tf:
        assert "../../evil.txt" in tf.getnames()


def test_single_gzip_of_zeros_is_a_file_not_an_empty_tar(tmp_path: Path) -> None:
    # its first 512 bytes are zeros, which libarchive reads as an empty tar's end-of-archive block
    result = expand(gen.gz(tmp_path / "zeros.bin.gz", bytes(1024 * 1024), "zeros.bin"), tmp_path / "out")
    assert members_of(result, tmp_path / "out") == {"zeros.bin": bytes(1024 * 1024)}
    assert result.metadata["format"] == "raw"
    with pytest.raises(LimitExceeded, match="archive bomb"):  # a single-gzip bomb, refused by ratio
        expand(gen.gz(tmp_path / "bomb.gz", bytes(64 * 1024 * 1024), "zeros.bin"), tmp_path / "out2")
    assert not (tmp_path / "out2" / "members").exists() or not any((tmp_path / "out2" / "members").iterdir())
    empty = tmp_path / "empty.tar.gz"  # a real empty tar stays an empty tar
    with tarfile.open(empty, "w:gz"):
        pass
    result = expand(empty, tmp_path / "out3")
    assert result.metadata["format"] == "tar" and result.members == []
