"""Deterministic non-ZIP archives for archive_libarchive's tests: tar (plain and compressed), 7z,
RAR, single compressed files; normal, hostile, bombs and broken.

tar through the stdlib ``tarfile`` (it writes any name, links and devices as asked); 7z and
encrypted ZIP through libarchive's own writer; RAR has no free writer, so :func:`rar` builds a
RAR 4.x archive byte by byte (stored entries: marker, archive header, file headers, end block,
each header with its CRC-16 as the format defines it).
"""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import zlib
from pathlib import Path

MTIME = 1_715_941_800  # 2024-05-17 10:30 UTC: fixed timestamps keep the bytes reproducible

FILES = {
    "report/summary.txt": b"Quarterly maintenance report.\nThe north pump was inspected on Monday.\n",
    "report/data.csv": b"name,value\npump,3\nvalve,7\n",
    "readme.md": b"# Notes\n\nThe filters were replaced.\n",
}


def _tarinfo(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE, **attrs) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mtime, info.mode = size, kind, MTIME, 0o644
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


def tar(path: Path, files: dict[str, bytes] = FILES, compression: str = "", extra: list[tarfile.TarInfo] = ()) -> Path:
    """A tar (``compression`` '', 'gz', 'bz2' or 'xz') holding ``files`` and ``extra`` entries."""
    path = Path(path)
    with tarfile.open(path, f"w:{compression}", format=tarfile.GNU_FORMAT) as tf:
        tf.addfile(_tarinfo("report/", kind=tarfile.DIRTYPE))
        for name, data in files.items():
            tf.addfile(_tarinfo(name, len(data)), io.BytesIO(data))
        for info in extra:
            tf.addfile(info)
    return path


def tar_with_special_files(path: Path) -> Path:
    """A tar with a symlink to /etc/passwd, a hardlink, a character device and a fifo."""
    return tar(path, {"ok.txt": b"kept\n"}, extra=[
        _tarinfo("link-to-passwd", kind=tarfile.SYMTYPE, linkname="/etc/passwd"),
        _tarinfo("hard", kind=tarfile.LNKTYPE, linkname="ok.txt"),
        _tarinfo("null", kind=tarfile.CHRTYPE, devmajor=1, devminor=3),
        _tarinfo("pipe", kind=tarfile.FIFOTYPE),
    ])


def tar_named(path: Path, name: str, compression: str = "gz") -> Path:
    """A tar whose second entry has the raw ``name`` (traversal, absolute ...)."""
    return tar(path, {"ok.txt": b"fine\n", name: b"owned\n"}, compression)


def tar_declaring(path: Path, declared: int) -> Path:
    """A plain tar whose one entry's header declares ``declared`` bytes (base-256 size field)."""
    tar(path, {"huge.bin": b"x" * 10})
    data = bytearray(Path(path).read_bytes())
    header = 512  # entry 0 is the directory, entry 1 the file
    data[header + 124 : header + 136] = b"\x80" + declared.to_bytes(11, "big")
    data[header + 148 : header + 156] = b" " * 8
    checksum = sum(data[header : header + 512])
    data[header + 148 : header + 156] = f"{checksum:06o}\0 ".encode()
    Path(path).write_bytes(bytes(data))
    return Path(path)


def tar_many(path: Path, count: int) -> Path:
    return tar(path, {f"f{i:05d}.txt": b"x" for i in range(count)}, "gz")


def seven_zip(path: Path, files: dict[str, bytes] = FILES) -> Path:
    import libarchive

    with libarchive.file_writer(str(path), "7zip") as archive:
        for name, data in files.items():
            archive.add_file_from_memory(name, len(data), data, mtime=MTIME)
    return Path(path)


def seven_zip_bomb(path: Path, megabytes: int = 64) -> int:
    """A 7z holding ``megabytes`` MiB of zeros (LZMA: a few KiB); returns the expanded size."""
    size = megabytes * 1024 * 1024
    seven_zip(path, {"zeros.bin": b"\0" * size})
    return size


def zip_encrypted(path: Path, files: dict[str, bytes] = FILES) -> Path:
    """A ZipCrypto-encrypted ZIP written by libarchive (password 's3cret')."""
    import libarchive

    with libarchive.file_writer(str(path), "zip", options="encryption=zipcrypt", passphrase="s3cret") as archive:
        for name, data in files.items():
            archive.add_file_from_memory(name, len(data), data, mtime=MTIME)
    return Path(path)


def gz(path: Path, data: bytes, name: str | None = "notes.txt") -> Path:
    """A single gzip'd file; ``name`` goes into the header's FNAME field (None: no name)."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename=name or "", mode="wb", fileobj=buf, mtime=MTIME) as fh:
        fh.write(data)
    Path(path).write_bytes(buf.getvalue())
    return Path(path)


# --- RAR 4.x, stored entries -------------------------------------------------------------------

_RAR_MARKER = b"Rar!\x1a\x07\x00"
_RAR_END = bytes.fromhex("c43d7b00400700")


def _rar_block(head_type: int, flags: int, body: bytes) -> bytes:
    rest = struct.pack("<BHH", head_type, flags, 7 + len(body)) + body
    return struct.pack("<H", zlib.crc32(rest) & 0xFFFF) + rest


def rar(path: Path, files: list[tuple[str, bytes]], encrypted: bool = False) -> Path:
    """A RAR 4.x archive of stored (uncompressed) entries with the raw names as given; ``encrypted``
    sets each file header's password flag (0x04), as a password-protected RAR's headers say."""
    out = bytearray(_RAR_MARKER)
    out += _rar_block(0x73, 0x0000, b"\0" * 6)
    for name, data in files:
        raw_name = name.encode("utf-8")
        body = struct.pack(
            "<LLBLLBBHL",
            len(data), len(data), 3, zlib.crc32(data), 0x58B15A00,  # packed, unpacked, Unix, CRC, DOS time
            20, 0x30, len(raw_name), 0o100644,  # version 2.0, method "store", name length, mode
        ) + raw_name
        out += _rar_block(0x74, 0x8004 if encrypted else 0x8000, body) + data  # 0x8000: data follows the header
    out += _RAR_END
    Path(path).write_bytes(bytes(out))
    return Path(path)


# --- 7z with AES-256 content, built byte by byte ------------------------------------------------


def seven_zip_aes(path: Path, name: str = "secret.txt") -> Path:
    """A 7z whose one folder is coded with 7-Zip's AES-256 + SHA-256 coder (id 06F10701), as
    ``7z a -p`` writes it (libarchive's writer cannot encrypt). The header is plain, so the entry's
    name is readable; the 32 packed bytes are not real ciphertext (no password opens them)."""
    packed = bytes(range(32))
    raw_name = name.encode("utf-16-le") + b"\0\0"
    props = bytes([0x13 | 0x40, 0x0F]) + bytes(16)  # 2^19 SHA-256 rounds, a 16-byte IV, no salt
    coder = bytes([0x04 | 0x20]) + bytes.fromhex("06f10701") + bytes([len(props)]) + props
    header = (
        b"\x01\x04"  # Header, MainStreamsInfo
        + b"\x06\x00\x01\x09" + bytes([len(packed)]) + b"\x00"  # PackInfo: at 0, 1 stream, its size
        + b"\x07\x0b\x01\x00\x01" + coder + b"\x0c\x10\x00"  # UnPackInfo: 1 folder of 1 coder, 16 bytes out
        + b"\x08\x00"  # SubStreamsInfo: the defaults (one stream per folder)
        + b"\x00"  # end of MainStreamsInfo
        + b"\x05\x01\x11" + bytes([len(raw_name) + 1]) + b"\x00" + raw_name + b"\x00"  # FilesInfo: 1 name
        + b"\x00"
    )
    start = struct.pack("<QQL", len(packed), len(header), zlib.crc32(header))
    signature = b"7z\xbc\xaf\x27\x1c\x00\x04" + struct.pack("<L", zlib.crc32(start)) + start
    Path(path).write_bytes(signature + packed + header)
    return Path(path)
