"""ZIP archives: guarded expansion of members, each returned for processing as a file of its own.

Nothing from inside the archive ever becomes a path on disk: members are written to
``out_dir/members/000001``, ``000002`` ... and the archive's own name for each member is returned
only as a display name (``Member.name``), never joined to a directory. ``ZipFile.extract()`` /
``extractall()`` are never used (they silently rewrite ``../`` and absolute names and write
symlinks as files).

Policy, applied to the whole archive BEFORE a single byte is written:

* Hostile names reject the WHOLE archive with :class:`CorruptInput`: an empty name, a name with
  a control character (NUL included; also the bidirectional-override characters used to disguise
  ``exe`` as ``txt``), a name over ``max_name_bytes`` (1024) UTF-8 bytes, an absolute name
  (``/x``, ``\\x``, ``\\\\server\\share``, ``C:\\x``, ``C:x``) or a name with a ``..`` component (after
  ``\\`` is read as ``/``). A traversal entry is a sign of attack, so nothing of such an archive is
  kept; entries are not skipped one by one.
* Entries whose compressed data overlap another entry's (the "overlapping files" zip bomb) reject
  the archive with :class:`CorruptInput`.
* Symlinks and other non-regular files (devices, fifos, sockets, from the Unix mode in
  ``external_attr``) are never created: they are skipped and listed in ``metadata["skipped"]`` with
  the reason ``symlink``, ``device``, ``fifo`` or ``socket``.
* Directories are not members (skipped silently; a directory entry carrying data is listed in
  ``skipped`` with the reason ``directory with data``).
* Limits (options, defaults): ``max_entries`` (10000) counted by walking the central directory
  before ``zipfile`` parses it; declared ``max_entry_bytes`` (1 GiB) and ``max_total_bytes`` (2 GiB);
  ``max_ratio`` (200) for entries declaring more than ``ratio_min_bytes`` (1 MiB); ``depth`` of this
  archive (0 for an upload) against ``max_depth`` (3). Over a limit: :class:`LimitExceeded`.
* Encrypted entries and compression methods other than stored/deflate/bzip2/LZMA:
  :class:`UnsupportedInput`. Office documents (zips by structure) are not archives: an office
  ``mime`` option raises :class:`UnsupportedInput`.

Streaming: ``zipfile`` parses the central directory; the compressed bytes of each entry are read
from the archive in chunks and decompressed here with a bound on every call's output, counting the
REAL bytes. ``ZipFile.open()`` is deliberately not used for the data: it silently truncates an
entry at its declared size (hiding a header that lies) and it decompresses bzip2/LZMA with no
output bound (177 bytes of bzip2 can expand to 200 MB in ONE call). An entry producing more
bytes than it declares fails with :class:`CorruptInput` ("header lies"), the real per-entry and
total counts are checked against the limits as they grow (:class:`LimitExceeded`), and the CRC is
checked at the end (:class:`CorruptInput`). On any failure every member file already written is
deleted: ``out_dir/members`` is removed.
"""

from __future__ import annotations

import itertools
import os
import shutil
import stat
import struct
import unicodedata
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Mapping

from converters.base import ConversionResult, ConverterSpec, Member, fresh_members_dir, refuse_past_depth
from converters.options import int_option
from fileflow.errors import CorruptInput, LimitExceeded, UnsupportedInput

SPEC = ConverterSpec(
    name="archive_expand",
    version="1.0.0",
    kinds=frozenset({"archive"}),
    timeout_s=600,
    memory_mb=1024,
    retries=1,
    description="ZIP: guarded expansion of members (names, types, sizes, ratio, entries, depth)",
    reads=frozenset({"max_depth", "depth"}),
)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

DEFAULTS: dict[str, int] = {
    "max_entries": 10_000,
    "max_total_bytes": 2 * GiB,
    "max_entry_bytes": 1 * GiB,
    "max_ratio": 200,
    "ratio_min_bytes": 1 * MiB,
    "max_name_bytes": 1024,
    "depth": 0,
    "max_depth": 3,
}

MEMBERS_DIR = "members"
_CHUNK = 64 * KiB  # compressed bytes read at a time, and the most output one decompress call may give

_STORED, _DEFLATED, _BZIP2, _LZMA = 0, 8, 12, 14
_METHODS = {_STORED: "stored", _DEFLATED: "deflate", _BZIP2: "bzip2", _LZMA: "LZMA"}
_METHOD_NAMES = {1: "shrink", 6: "implode", 9: "deflate64", 10: "PKWARE implode", 19: "IBM LZ77",
                 93: "zstandard", 95: "xz", 96: "JPEG", 97: "WavPack", 98: "PPMd", 99: "AES"}

_OFFICE_PREFIXES = (
    "application/vnd.openxmlformats-officedocument.",
    "application/vnd.oasis.opendocument.",
    "application/vnd.ms-",
    "application/msword",
)
_OTHER_ARCHIVES = {
    "application/x-7z-compressed": "7-Zip",
    "application/x-rar": "RAR",
    "application/vnd.rar": "RAR",
    "application/x-rar-compressed": "RAR",
    "application/x-tar": "tar",
    "application/gzip": "gzip",
    "application/x-gzip": "gzip",
    "application/x-bzip2": "bzip2",
    "application/x-xz": "xz",
    "application/zstd": "zstd",
}
# Bidirectional controls that make a name read differently from what it is (e.g. "gnp.exe").
_BIDI_CONTROLS = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

# End of central directory records (APPNOTE 4.3.16, 4.3.15, 4.3.14) and central file header.
_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIG = b"PK\x05\x06"
_Z64_LOCATOR = struct.Struct("<4sLQL")
_Z64_LOCATOR_SIG = b"PK\x06\x07"
_Z64_EOCD = struct.Struct("<4sQ2H2L4Q")
_Z64_EOCD_SIG = b"PK\x06\x06"
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_CENTRAL_SIG = b"PK\x01\x02"
_LOCAL = struct.Struct("<4s2B4HL2L2H")
_LOCAL_SIG = b"PK\x03\x04"


@dataclass
class _Budget:
    """Limits and running real counts while streaming."""

    max_entry_bytes: int
    max_total_bytes: int
    total: int = 0


def _options(options: Mapping[str, Any]) -> dict[str, int]:
    return {key: int_option(options, key, default, minimum=0) for key, default in DEFAULTS.items()}


def _shown(name: str) -> str:
    """An archive name safe to put in a message: escaped, at most 200 characters."""
    text = repr(name)
    return text if len(text) <= 200 else text[:197] + "...'"


def _check_mime(mime: str | None) -> None:
    if not mime:
        return
    mime = mime.split(";")[0].strip().lower()
    if mime.startswith(_OFFICE_PREFIXES):
        raise UnsupportedInput(
            f"{mime} is an office document, not an archive: it is converted as a document, "
            "never expanded"
        )
    if mime in _OTHER_ARCHIVES:
        raise UnsupportedInput(
            f"{_OTHER_ARCHIVES[mime]} archives ({mime}) are not expanded: only ZIP is supported; "
            "re-pack the files as a .zip"
        )


# --- central directory, read before zipfile parses it -------------------------------------------


_SPLIT = "split (multi-volume) ZIP archives are not supported: join the parts into one .zip first"


def _find_eocd(fp: BinaryIO, size: int) -> tuple[int, tuple]:
    if size < _EOCD.size:
        raise CorruptInput(
            f"not a ZIP archive: {size} bytes is too short to hold one (empty or truncated file)"
        )
    tail_len = min(size, _EOCD.size + 65535)
    fp.seek(size - tail_len)
    tail = fp.read(tail_len)
    pos = tail.rfind(_EOCD_SIG)
    while pos >= 0 and pos + _EOCD.size > len(tail):
        pos = tail.rfind(_EOCD_SIG, 0, pos)
    if pos < 0:
        raise CorruptInput(
            "not a ZIP archive, or a truncated one: its end-of-central-directory record is missing"
        )
    return size - tail_len + pos, _EOCD.unpack_from(tail, pos)


def _central_directory(fp: BinaryIO, size: int) -> tuple[int, int, int]:
    """(start offset, byte size, declared entry count) of the central directory."""
    eocd_pos, rec = _find_eocd(fp, size)
    _sig, disk, disk_cd, _n_disk, n_total, size_cd, offset_cd, _comment = rec
    zip64 = False
    if eocd_pos >= _Z64_LOCATOR.size:
        fp.seek(eocd_pos - _Z64_LOCATOR.size)
        loc = _Z64_LOCATOR.unpack(fp.read(_Z64_LOCATOR.size))
        if loc[0] == _Z64_LOCATOR_SIG and eocd_pos >= _Z64_LOCATOR.size + _Z64_EOCD.size:
            if loc[3] > 1:
                raise UnsupportedInput(_SPLIT)
            fp.seek(eocd_pos - _Z64_LOCATOR.size - _Z64_EOCD.size)
            z64 = _Z64_EOCD.unpack(fp.read(_Z64_EOCD.size))
            if z64[0] == _Z64_EOCD_SIG:
                zip64 = True
                disk, disk_cd, n_total, size_cd, offset_cd = z64[4], z64[5], z64[7], z64[8], z64[9]
    if disk or disk_cd:
        raise UnsupportedInput(_SPLIT)
    # Bytes prepended to the archive (self-extractors) shift every offset, as zipfile allows.
    concat = eocd_pos - size_cd - offset_cd
    if zip64:
        concat -= _Z64_EOCD.size + _Z64_LOCATOR.size
    start = offset_cd + concat
    if start < 0 or size_cd < 0 or start + size_cd > eocd_pos:
        raise CorruptInput("corrupt ZIP archive: its central directory lies outside the file")
    return start, size_cd, n_total


def _count_entries(fp: BinaryIO, size: int, max_entries: int) -> None:
    """Walk the central directory's records and stop as soon as there are too many."""
    start, size_cd, declared = _central_directory(fp, size)
    if declared > max_entries:
        raise LimitExceeded(
            f"archive declares {declared} entries; the limit is {max_entries} (option max_entries)"
        )
    fp.seek(start)
    count = walked = 0
    while walked < size_cd:
        head = fp.read(_CENTRAL.size)
        if len(head) < _CENTRAL.size or head[:4] != _CENTRAL_SIG:
            return  # zipfile reports the corruption with its own words
        rec = _CENTRAL.unpack(head)
        skip = rec[12] + rec[13] + rec[14]  # name, extra and comment lengths
        fp.seek(skip, os.SEEK_CUR)
        walked += _CENTRAL.size + skip
        count += 1
        if count > max_entries:
            raise LimitExceeded(
                f"archive has more than {max_entries} entries (option max_entries); "
                "nothing was extracted"
            )


# --- names and entry types -------------------------------------------------------------------


def _display_name(raw: str) -> str:
    name = raw.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name


def _check_name(raw: str, max_name_bytes: int) -> None:
    """Reject the whole archive on a hostile name; see the module docstring."""

    def hostile(why: str) -> CorruptInput:
        return CorruptInput(
            f"hostile archive: entry {_shown(raw)} {why}; the whole archive is rejected"
        )

    if raw == "":
        raise hostile("has an empty name")
    for ch in raw:
        if unicodedata.category(ch) == "Cc" or ch in _BIDI_CONTROLS:
            raise hostile(f"has a control character (U+{ord(ch):04X}) in its name")
    encoded = len(raw.encode("utf-8", "surrogatepass"))
    if encoded > max_name_bytes:
        raise hostile(f"has a {encoded}-byte name; the limit is {max_name_bytes} bytes")
    name = raw.replace("\\", "/")
    if name.startswith("/"):
        raise hostile("has an absolute name")
    if len(name) >= 2 and name[1] == ":" and name[0].isascii() and name[0].isalpha():
        raise hostile("has a Windows drive name")
    if any(part.strip() == ".." for part in name.split("/")):
        raise hostile("climbs out of the archive with '..' (path traversal)")


def _unix_type(info: Any) -> str | None:
    """'symlink', 'device', 'fifo', 'socket', 'directory', 'file' or None when no Unix mode."""
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if not kind:
        return None
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISREG(mode):
        return "file"
    return "device"  # unknown file type bits: never created either


def _is_directory(info: Any) -> bool:
    if info.orig_filename.endswith(("/", "\\")):
        return True
    kind = _unix_type(info)
    if kind is not None:
        return kind == "directory"
    return bool(info.external_attr & 0x10)  # MS-DOS directory attribute


def _check_overlaps(infos: list, cd_start: int) -> None:
    """Reject entries whose data would run into the next entry (overlapping-files bomb)."""
    spans = sorted(infos, key=lambda i: i.header_offset)
    if spans and spans[0].header_offset < 0:
        raise CorruptInput(
            f"corrupt or truncated archive: entry {_shown(spans[0].orig_filename)} points before "
            "the start of the file"
        )
    for here, after in zip(spans, spans[1:] + [None]):
        end = here.header_offset + _LOCAL.size + here.compress_size
        limit = cd_start if after is None else after.header_offset
        if end > limit:
            raise CorruptInput(
                f"hostile or corrupt archive: the data of entry {_shown(here.orig_filename)} "
                "overlaps another entry or the central directory (overlapping-entries zip bomb)"
            )


# --- streaming -----------------------------------------------------------------------------------


def _truncated(info: Any) -> CorruptInput:
    return CorruptInput(
        f"truncated archive: the compressed data of entry {_shown(info.orig_filename)} ends early"
    )


def _raw_chunks(fp: BinaryIO, info: Any) -> Iterator[bytes]:
    """The compressed bytes of an entry, read after its local header."""
    fp.seek(info.header_offset)
    head = fp.read(_LOCAL.size)
    if len(head) < _LOCAL.size or head[:4] != _LOCAL_SIG:
        raise CorruptInput(f"corrupt archive: entry {_shown(info.orig_filename)} has no local header")
    rec = _LOCAL.unpack(head)
    fp.seek(rec[10] + rec[11], os.SEEK_CUR)  # local name and extra field
    left = info.compress_size
    while left > 0:
        data = fp.read(min(_CHUNK, left))
        if not data:
            raise _truncated(info)
        left -= len(data)
        yield data


def _decompressed(fp: BinaryIO, info: Any) -> Iterator[bytes]:
    """The entry's real bytes; no single step yields more than _CHUNK bytes."""
    method = info.compress_type
    raw = _raw_chunks(fp, info)
    if method == _STORED or info.compress_size == 0:
        yield from raw
        return
    if method == _DEFLATED:
        inflater = zlib.decompressobj(-15)
        for data in raw:
            while data:
                out = inflater.decompress(data, _CHUNK)
                data = inflater.unconsumed_tail
                if out:
                    yield out
                if inflater.eof:
                    return
            while not inflater.eof:  # drain output held back by the bound
                out = inflater.decompress(b"", _CHUNK)
                if not out:
                    break
                yield out
            if inflater.eof:
                return
        raise _truncated(info)
    if method == _BZIP2:
        import bz2

        decomp: Any = bz2.BZ2Decompressor()
        need_eof = True
    else:  # _LZMA
        decomp, raw = _lzma_decompressor(info, raw)
        need_eof = bool(info.flag_bits & 0x2)  # end-of-stream marker present
    for data in raw:
        out = decomp.decompress(data, _CHUNK)
        if out:
            yield out
        while not decomp.eof and not decomp.needs_input:
            out = decomp.decompress(b"", _CHUNK)
            if not out:
                break
            yield out
        if decomp.eof:
            return
    if need_eof:
        raise _truncated(info)


def _lzma_decompressor(info: Any, raw: Iterator[bytes]) -> tuple[Any, Iterator[bytes]]:
    """LZMA in ZIP: 2-byte version, 2-byte properties size, properties, then raw LZMA1 (APPNOTE 5.8.8)."""
    import lzma

    first = next(raw, b"")
    if len(first) < 4:
        raise CorruptInput(f"corrupt archive: entry {_shown(info.orig_filename)} has no LZMA header")
    (psize,) = struct.unpack_from("<H", first, 2)
    if psize != 5 or len(first) < 4 + psize:
        raise CorruptInput(f"corrupt archive: entry {_shown(info.orig_filename)} has a bad LZMA header")
    props = first[4 : 4 + psize]
    lclppb = props[0]
    if lclppb >= 9 * 5 * 5:
        raise CorruptInput(f"corrupt archive: entry {_shown(info.orig_filename)} has bad LZMA properties")
    pb, rest = divmod(lclppb, 45)
    lp, lc = divmod(rest, 9)
    (dict_size,) = struct.unpack_from("<L", props, 1)
    # The dictionary is allocated up front: never larger than the entry can honestly need (back
    # references cannot reach further than the bytes produced, and we stop past the declared size).
    dict_size = max(4096, min(dict_size, info.file_size))
    filters = [{"id": lzma.FILTER_LZMA1, "lc": lc, "lp": lp, "pb": pb, "dict_size": dict_size}]
    decomp = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=filters)
    return decomp, itertools.chain([first[4 + psize :]], raw)


def _write_member(fp: BinaryIO, info: Any, name: str, dest: Path, budget: _Budget) -> int:
    """Stream one entry into ``dest`` (created exclusively, never following a link); real size."""
    import lzma

    declared = info.file_size
    real = 0
    crc = 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(fd, "wb") as out:
        stream = _decompressed(fp, info)
        while True:
            try:
                chunk = next(stream, None)
            # bz2 reports bad data as OSError (reading the source may too)
            except (zlib.error, lzma.LZMAError, EOFError, OSError) as exc:
                raise CorruptInput(
                    f"corrupt archive: entry {_shown(name)} does not decompress ({exc})"
                ) from None
            except MemoryError:
                raise LimitExceeded(
                    f"entry {_shown(name)} needs more memory to decompress than allowed"
                ) from None
            if chunk is None:
                break
            real += len(chunk)
            budget.total += len(chunk)
            if real > budget.max_entry_bytes:
                raise LimitExceeded(
                    f"entry {_shown(name)} expands past {budget.max_entry_bytes} bytes "
                    "(option max_entry_bytes): zip bomb"
                )
            if budget.total > budget.max_total_bytes:
                raise LimitExceeded(
                    f"archive expands past {budget.max_total_bytes} bytes in total at entry "
                    f"{_shown(name)} (option max_total_bytes): zip bomb"
                )
            if real > declared:
                raise CorruptInput(
                    f"hostile archive: entry {_shown(name)} declares {declared} bytes but holds more "
                    "(its header lies about its size)"
                )
            crc = zlib.crc32(chunk, crc)
            out.write(chunk)
    if real != declared:
        raise CorruptInput(
            f"corrupt archive: entry {_shown(name)} declares {declared} bytes but holds {real}"
        )
    if crc != info.CRC:
        raise CorruptInput(f"corrupt archive: entry {_shown(name)} fails its CRC-32 check")
    return real


# --- the converter -------------------------------------------------------------------------------


def convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult:
    import zipfile

    opts = _options(options)
    src = Path(src)
    out_dir = Path(out_dir)
    members_dir = fresh_members_dir(out_dir, MEMBERS_DIR)

    depth, max_depth = opts["depth"], opts["max_depth"]
    refuse_past_depth("archive", depth, max_depth)
    _check_mime(options.get("mime"))

    with open(src, "rb") as fp:
        size = os.fstat(fp.fileno()).st_size
        _count_entries(fp, size, opts["max_entries"])
        try:
            zf = zipfile.ZipFile(fp)
        except zipfile.BadZipFile as exc:
            raise CorruptInput(f"corrupt ZIP archive: {exc}") from None
        except NotImplementedError as exc:
            raise UnsupportedInput(f"this ZIP variant is not supported: {exc}") from None
        except (UnicodeDecodeError, ValueError, EOFError, struct.error, OSError) as exc:
            raise CorruptInput(f"corrupt ZIP archive: {exc}") from None
        except MemoryError:
            raise LimitExceeded("the archive's central directory is too large to read") from None
        with zf:
            infos = zf.infolist()
            if len(infos) > opts["max_entries"]:
                raise LimitExceeded(
                    f"archive has {len(infos)} entries; the limit is {opts['max_entries']} "
                    "(option max_entries); nothing was extracted"
                )
            # 1. Names: one hostile name rejects the whole archive.
            for info in infos:
                _check_name(info.orig_filename, opts["max_name_bytes"])
            # 2. Layout: no entry's data may overlap another's.
            _check_overlaps(infos, zf.start_dir)
            # 3. Types, encryption, methods and declared sizes.
            skipped: list[dict[str, str]] = []
            todo: list[tuple[Any, str]] = []
            declared_total = 0
            for info in infos:
                name = _display_name(info.orig_filename)
                kind = _unix_type(info)
                if kind in ("symlink", "device", "fifo", "socket"):
                    skipped.append({"name": name, "reason": kind})
                    continue
                if _is_directory(info):
                    if info.file_size:
                        skipped.append({"name": name, "reason": "directory with data"})
                    continue
                if name in ("", "."):
                    raise CorruptInput(
                        f"hostile archive: entry {_shown(info.orig_filename)} has no file name; "
                        "the whole archive is rejected"
                    )
                if info.flag_bits & 0x1:
                    raise UnsupportedInput(
                        f"password-protected archive: entry {_shown(name)} is encrypted; "
                        "upload it without a password"
                    )
                if info.compress_type not in _METHODS:
                    method = _METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
                    raise UnsupportedInput(
                        f"entry {_shown(name)} uses the {method} compression, which is not supported: "
                        "re-create the archive with standard (deflate) compression"
                    )
                if info.file_size > opts["max_entry_bytes"]:
                    raise LimitExceeded(
                        f"entry {_shown(name)} declares {info.file_size} bytes; the limit is "
                        f"{opts['max_entry_bytes']} (option max_entry_bytes)"
                    )
                if info.file_size > opts["ratio_min_bytes"]:
                    ratio = info.file_size / max(info.compress_size, 1)
                    if ratio > opts["max_ratio"]:
                        raise LimitExceeded(
                            f"zip bomb: entry {_shown(name)} expands {ratio:.0f} times "
                            f"({info.compress_size} -> {info.file_size} bytes); the limit is "
                            f"{opts['max_ratio']} (option max_ratio)"
                        )
                declared_total += info.file_size
                if declared_total > opts["max_total_bytes"]:
                    raise LimitExceeded(
                        f"archive declares more than {opts['max_total_bytes']} bytes in total "
                        f"(reached at entry {_shown(name)}; option max_total_bytes)"
                    )
                todo.append((info, name))

            # 4. Stream every member into a numbered file.
            members: list[Member] = []
            budget = _Budget(opts["max_entry_bytes"], opts["max_total_bytes"])
            compressed = 0
            max_ratio_seen = 0.0
            try:
                if todo:
                    members_dir.mkdir()
                for number, (info, name) in enumerate(todo, start=1):
                    rel = f"{MEMBERS_DIR}/{number:06d}"
                    real = _write_member(fp, info, name, out_dir / rel, budget)
                    members.append(Member(name=name, path=rel, size=real))
                    compressed += info.compress_size
                    if info.compress_size:
                        max_ratio_seen = max(max_ratio_seen, real / info.compress_size)
            except BaseException:
                shutil.rmtree(members_dir, ignore_errors=True)
                raise

    return ConversionResult(
        metadata={
            "entries": len(infos),
            "members": len(members),
            "skipped": skipped,
            "total_bytes": budget.total,
            "compressed_bytes": compressed,
            "max_ratio_seen": round(max_ratio_seen, 2),
            "depth": depth,
        },
        members=members,
    )
