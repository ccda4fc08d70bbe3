"""Deterministic ZIP archives for the archive_expand tests: normal, hostile, bombs and broken.

Every generator writes ``path`` and returns what a test needs to check the result. Hostile
variants are made with ``zipfile`` writing raw :class:`zipfile.ZipInfo` records (``writestr`` keeps
the name as given, unlike ``write``), then, where ``zipfile`` refuses to write the lie (NUL in a
name, sizes, flags, offsets), by patching the local header and the central directory with
``struct``. Run ``python -m fileflow.testing.samplegen.archives`` (or this file) to rewrite
``tests/samples/bundle.zip``.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import zipfile
from pathlib import Path

DATE = (2024, 5, 17, 10, 30, 0)  # fixed timestamps keep the bytes reproducible

# Offsets inside a local file header (APPNOTE 4.3.7) and a central directory header (4.3.12).
_LOCAL = {"flag_bits": (6, "<H"), "method": (8, "<H"), "crc": (14, "<L"),
          "compress_size": (18, "<L"), "file_size": (22, "<L")}
_CENTRAL = {"flag_bits": (8, "<H"), "method": (10, "<H"), "crc": (16, "<L"),
            "compress_size": (20, "<L"), "file_size": (24, "<L"), "external_attr": (38, "<L"),
            "header_offset": (42, "<L")}

ENGLISH = (
    "Quarterly maintenance report.\n"
    "The north pump was inspected on Monday and the filters were replaced.\n"
    "No leaks were found; the next inspection is planned for the end of the month.\n"
)
FRENCH = (
    "# Notes de chantier\n\n"
    "La réunion de coordination a eu lieu jeudi matin avec l'équipe électrique.\n"
    "Les câbles du deuxième étage seront posés la semaine prochaine, après la réception des gaines.\n"
)
PNG_TEXT = "FILEFLOW 42"


def info(name: str, *, method: int = zipfile.ZIP_DEFLATED, mode: int | None = None) -> zipfile.ZipInfo:
    """A ZipInfo with the raw name as given, a fixed date and an optional Unix mode."""
    zi = zipfile.ZipInfo(name, date_time=DATE)
    zi.compress_type = method
    zi.create_system = 3  # Unix
    zi.external_attr = ((stat.S_IFREG | 0o644) if mode is None else mode) << 16
    return zi


def write_zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    """Write entries (ZipInfo or plain name, data) in order."""
    path = Path(path)
    with zipfile.ZipFile(path, "w") as zf:
        for entry, data in entries:
            zf.writestr(entry if isinstance(entry, zipfile.ZipInfo) else info(entry), data)
    return path


def central_offsets(path: Path) -> list[int]:
    """File offsets of each central directory record, in directory order."""
    data = Path(path).read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        pos, count = zf.start_dir, len(zf.infolist())
    offsets = []
    for _ in range(count):
        assert data[pos : pos + 4] == b"PK\x01\x02"
        offsets.append(pos)
        n, m, k = struct.unpack_from("<3H", data, pos + 28)
        pos += 46 + n + m + k
    return offsets


def patch_entry(path: Path, index: int, *, local: bool = True, **fields: int) -> None:
    """Overwrite header fields of entry ``index`` in the central directory (and its local header)."""
    path = Path(path)
    with zipfile.ZipFile(path) as zf:
        header = zf.infolist()[index].header_offset
    cd = central_offsets(path)[index]
    data = bytearray(path.read_bytes())
    for field, value in fields.items():
        off, fmt = _CENTRAL[field]
        struct.pack_into(fmt, data, cd + off, value)
        if local and field in _LOCAL:
            off, fmt = _LOCAL[field]
            struct.pack_into(fmt, data, header + off, value)
    path.write_bytes(bytes(data))


def replace_name_bytes(path: Path, old: bytes, new: bytes) -> None:
    """Rewrite a name in place (same length) where zipfile would not write it (e.g. a NUL)."""
    assert len(old) == len(new)
    data = Path(path).read_bytes()
    assert data.count(old) == 2, "the name must appear once in the local header and once in the directory"
    Path(path).write_bytes(data.replace(old, new))


# --- normal archives --------------------------------------------------------------------------


def nested_files() -> dict[str, bytes]:
    return {
        "project/readme.txt": ENGLISH.encode(),
        "project/docs/notes.md": FRENCH.encode("utf-8"),
        "project/docs/deep/data.bin": bytes(range(256)) * 40 + b"\x00\xff" * 333,
    }


def make_nested(path: Path) -> dict[str, bytes]:
    """Folders (with directory entries) and three files, deflated."""
    files = nested_files()
    entries: list[tuple[zipfile.ZipInfo | str, bytes]] = [
        (info("project/", mode=stat.S_IFDIR | 0o755), b""),
        (info("project/docs/", mode=stat.S_IFDIR | 0o755), b""),
        (info("project/docs/deep/", mode=stat.S_IFDIR | 0o755), b""),
    ]
    entries += [(info(name), data) for name, data in files.items()]
    write_zip(path, entries)
    return files


def make_methods(path: Path) -> dict[str, bytes]:
    """One member per supported compression method."""
    text = (ENGLISH * 50).encode()
    files = {"stored.txt": text, "deflated.txt": text, "bzip2.txt": text, "lzma.txt": text}
    write_zip(path, [
        (info("stored.txt", method=zipfile.ZIP_STORED), text),
        (info("deflated.txt", method=zipfile.ZIP_DEFLATED), text),
        (info("bzip2.txt", method=zipfile.ZIP_BZIP2), text),
        (info("lzma.txt", method=zipfile.ZIP_LZMA), text),
    ])
    return files


def make_nested_chain(path: Path, levels: int) -> None:
    """``levels`` archives inside each other: the one at depth k holds ``level<k+1>.zip``; the
    deepest (depth ``levels - 1``) holds ``innermost.txt``."""
    inner, name = b"innermost\n", "innermost.txt"
    for depth in range(levels - 1, -1, -1):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(info(name), inner)
        inner, name = buf.getvalue(), f"level{depth}.zip"
    Path(path).write_bytes(inner)


def make_png(text: str = PNG_TEXT) -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (320, 96), "white")
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=40)
    except TypeError:  # older Pillow without a scalable default font
        font = ImageFont.load_default()
    draw.text((16, 24), text, fill="black", font=font)
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return out.getvalue()


def bundle_files() -> dict[str, bytes]:
    return {
        "bundle/README.txt": ENGLISH.encode(),
        "bundle/notes/chantier-fr.md": FRENCH.encode("utf-8"),
        "bundle/images/label.png": make_png(),
    }


def make_bundle(path: Path) -> dict[str, bytes]:
    """The committed sample: a PNG with drawn text, an English .txt, a French .md, nested folders."""
    files = bundle_files()
    entries: list[tuple[zipfile.ZipInfo | str, bytes]] = [
        (info("bundle/", mode=stat.S_IFDIR | 0o755), b""),
        (info("bundle/notes/", mode=stat.S_IFDIR | 0o755), b""),
        (info("bundle/images/", mode=stat.S_IFDIR | 0o755), b""),
    ]
    for name, data in files.items():
        method = zipfile.ZIP_STORED if name.endswith(".png") else zipfile.ZIP_DEFLATED
        entries.append((info(name, method=method), data))
    write_zip(path, entries)
    return files


# --- hostile names and types ------------------------------------------------------------------


def make_named(path: Path, name: str, data: bytes = b"owned\n") -> None:
    """One good file, then one entry with the given raw name."""
    write_zip(path, [(info("ok.txt"), b"fine\n"), (info(name), data)])


def make_nul_name(path: Path) -> None:
    """An entry named 'evil.txt\\x00.png' (zipfile cuts names at NUL on write, so patch it in)."""
    make_named(path, "evil.txt_.png")
    replace_name_bytes(path, b"evil.txt_.png", b"evil.txt\x00.png")


def make_special_files(path: Path) -> None:
    """A regular file, a symlink to /etc/passwd, a fifo and a character device."""
    write_zip(path, [
        (info("real.txt"), b"real\n"),
        (info("link-to-passwd", method=zipfile.ZIP_STORED, mode=stat.S_IFLNK | 0o777), b"/etc/passwd"),
        (info("escape", method=zipfile.ZIP_STORED, mode=stat.S_IFLNK | 0o777), b"../../../../tmp/escaped"),
        (info("pipe", method=zipfile.ZIP_STORED, mode=stat.S_IFIFO | 0o644), b""),
        (info("null-device", method=zipfile.ZIP_STORED, mode=stat.S_IFCHR | 0o666), b""),
    ])


# --- bombs and limits -------------------------------------------------------------------------


def make_ratio_bomb(path: Path, megabytes: int = 10) -> int:
    """One entry of zeros deflated about 1000 times; returns its size."""
    size = megabytes * 1024 * 1024
    write_zip(path, [(info("zeros.bin"), bytes(size))])
    return size


def make_stored_random(path: Path, count: int, size: int) -> None:
    """``count`` stored entries of pseudo-random (incompressible) bytes."""
    entries = [(info(f"part{i:02d}.bin", method=zipfile.ZIP_STORED), os.urandom(size)) for i in range(count)]
    write_zip(path, entries)


def make_declared_huge(path: Path, declared: int) -> None:
    """An entry whose headers declare ``declared`` bytes (the data is small)."""
    write_zip(path, [(info("huge.bin", method=zipfile.ZIP_STORED), b"x" * 100)])
    patch_entry(path, 0, file_size=declared)


def make_lying_headers(path: Path, megabytes: int = 50, declared: int = 1000,
                       method: int = zipfile.ZIP_DEFLATED) -> int:
    """``megabytes`` MB of zeros whose local header and directory declare only ``declared`` bytes."""
    size = megabytes * 1024 * 1024
    write_zip(path, [(info("small.txt"), b"harmless\n"), (info("report.txt", method=method), bytes(size))])
    patch_entry(path, 1, file_size=declared)
    return size


def make_many_entries(path: Path, count: int) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(count):
            zf.writestr(info(f"f{i:05d}.txt", method=zipfile.ZIP_STORED), b"")


def make_overlapping(path: Path) -> None:
    """Two directory records pointing at the same local header (the overlapping-files bomb shape)."""
    write_zip(path, [(info("a.bin"), bytes(100_000)), (info("b.bin"), bytes(100_000))])
    with zipfile.ZipFile(path) as zf:
        first = zf.infolist()[0].header_offset
    data = bytearray(Path(path).read_bytes())
    struct.pack_into("<L", data, central_offsets(path)[1] + 42, first)
    Path(path).write_bytes(bytes(data))


# --- encrypted, unsupported, broken -----------------------------------------------------------


def make_encrypted_flag(path: Path) -> None:
    """An entry whose flag bit 0 (encrypted) is set in both headers."""
    write_zip(path, [(info("secret.txt"), b"top secret\n")])
    patch_entry(path, 0, flag_bits=0x1)


def make_encrypted_with_zip(path: Path, workdir: Path) -> bool:
    """A real ZipCrypto archive from Info-ZIP ``zip -P``; False when /usr/bin/zip is missing."""
    import shutil
    import subprocess

    exe = shutil.which("zip")
    if not exe:
        return False
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "secret.txt").write_text("top secret\n")
    subprocess.run([exe, "-q", "-P", "hunter2", str(Path(path).resolve()), "secret.txt"],
                   cwd=workdir, check=True)
    return True


def make_unsupported_method(path: Path, method: int = 9) -> None:
    """An entry claiming a compression method zipfile cannot read (9 = deflate64)."""
    write_zip(path, [(info("data.bin"), b"abc" * 100)])
    patch_entry(path, 0, method=method)


def make_truncated(path: Path) -> None:
    """A normal archive cut in the middle."""
    make_nested(path)
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])


def make_bad_crc(path: Path) -> None:
    """A good first entry, then a stored entry with one byte flipped in its data."""
    write_zip(path, [(info("good.txt"), b"good\n" * 100),
                     (info("flipped.txt", method=zipfile.ZIP_STORED), b"abcdefgh" * 100)])
    with zipfile.ZipFile(path) as zf:
        zi = zf.infolist()[1]
    data = bytearray(Path(path).read_bytes())
    pos = zi.header_offset + 30 + len(zi.filename) + 50
    data[pos] ^= 0xFF
    Path(path).write_bytes(bytes(data))


def make_empty_archive(path: Path) -> None:
    write_zip(path, [])


def make_zero_byte_member(path: Path) -> None:
    write_zip(path, [(info("empty.txt"), b""), (info("empty-stored.txt", method=zipfile.ZIP_STORED), b""),
                     (info("one.txt"), b"1")])


if __name__ == "__main__":  # pragma: no cover - regenerates the committed sample
    from fileflow.testing.samplegen import SAMPLES

    target = SAMPLES / "bundle.zip"
    make_bundle(target)
    print(target, target.stat().st_size, "bytes")
