"""7z, RAR, tar (plain, .gz, .bz2, .xz, .zst) and single compressed files: guarded expansion
through libarchive, every member returned for processing as a file of its own.

The same policy as :mod:`converters.archive_expand` (ZIP), which keeps its own reader: ZIP's
guards use what only a ZIP has (a central directory walked before any data is read, per-entry
compressed sizes and CRCs, overlapping-entry detection, CP437/UTF-8 name flags), and libarchive
exposes none of them. Everything else goes through this one reader.

* Members are written to ``out_dir/members/000001`` ...; the archive's own name for a member is
  only a display name (``Member.name``), never joined to a directory. libarchive's
  ``extract`` is never used (it creates real symlinks and hardlinks).
* A hostile name (empty, control or bidi characters, longer than ``max_name_bytes``, absolute,
  drive-lettered, or with a ``..`` component) rejects the WHOLE archive with
  :class:`CorruptInput`, with the same checks as ZIP (:func:`archive_expand._check_name`).
* Symlinks, hardlinks, devices, fifos and sockets are never created: skipped and listed in
  ``metadata["skipped"]`` (reasons ``symlink``, ``hardlink``, ``device``, ``fifo``, ``socket``).
  Directories are not members.
* Encrypted entries or headers (7z AES, RAR passwords, ZipCrypto): :class:`UnsupportedInput`.
* Limits (the same options and defaults as ZIP): ``max_entries``, ``max_entry_bytes``,
  ``max_total_bytes``, ``max_ratio`` over ``ratio_min_bytes`` and ``depth``/``max_depth``. Sizes
  are counted on the REAL bytes while streaming (libarchive hands out bounded blocks); a declared
  size over the limit fails before the entry is read, and an entry yielding more bytes than its
  header declares fails as a lying header. Solid archives (7z, tar.gz) have no per-entry
  compressed size, so the ratio is the archive's: real bytes out over compressed bytes read in
  so far, checked once more than ``ratio_min_bytes`` came out.

libarchive reads an archive front to back, so checks happen as entries come; a failure at any
entry removes ``out_dir/members`` entirely, so what a rejected archive leaves is the same as
for ZIP: nothing. A compressed stream that holds no archive (``report.txt.gz``) is read with
libarchive's ``raw`` format: one member, named after the gzip header's file name when it has
one, else ``content``. Uncompressed bytes that are no archive at all fail with
:class:`CorruptInput`. Office documents and EPUBs (zips by structure) are refused with
:class:`UnsupportedInput`: they are documents, never expanded.
"""

from __future__ import annotations

import ctypes
import shutil
from pathlib import Path
from typing import Any, Mapping

from converters.archive_expand import DEFAULTS, MEMBERS_DIR, _check_name, _display_name, _shown
from converters.base import ConversionResult, ConverterSpec, Member, require, fresh_members_dir, refuse_past_depth
from converters.options import int_option
from fileflow.errors import CorruptInput, LimitExceeded, UnsupportedInput

SPEC = ConverterSpec(
    name="archive_libarchive",
    version="1.0.0",
    kinds=frozenset({"archive"}),
    timeout_s=600,
    memory_mb=1024,
    retries=1,
    description="7z, RAR, tar(.gz/.bz2/.xz), .gz/.bz2/.xz: guarded expansion through libarchive",
    reads=frozenset({"max_depth", "depth"}),
)

_BLOCK = 64 * 1024
_NOT_ARCHIVES = (
    "application/vnd.openxmlformats-officedocument.",
    "application/vnd.oasis.opendocument.",
    "application/vnd.ms-",
    "application/msword",
    "application/epub+zip",
)


def _options(options: Mapping[str, Any]) -> dict[str, int]:
    return {key: int_option(options, key, default, minimum=0) for key, default in DEFAULTS.items()}


def _gzip_name(src: Path) -> str | None:
    """The original file name a gzip header carries (RFC 1952 FNAME), if any."""
    with open(src, "rb") as fh:
        head = fh.read(4096)
    if len(head) < 10 or head[:2] != b"\x1f\x8b" or not head[3] & 0x08:
        return None
    pos = 10
    if head[3] & 0x04:  # FEXTRA
        if len(head) < 12:
            return None
        pos += 2 + int.from_bytes(head[10:12], "little")
    end = head.find(b"\0", pos)
    if end <= pos:
        return None
    return head[pos:end].decode("latin-1")  # RFC 1952: ISO 8859-1


def _is_encrypted(entry: Any) -> bool:
    """libarchive's archive_entry_is_encrypted (libarchive-c does not wrap it)."""
    from libarchive import ffi

    fn = getattr(ffi.libarchive, "archive_entry_is_encrypted", None)
    if fn is None:  # pragma: no cover - libarchive older than 3.1.2
        return False
    fn.argtypes = [ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return bool(fn(entry._entry_p))


def _size_is_set(entry: Any) -> bool:
    from libarchive import ffi

    fn = ffi.libarchive.archive_entry_size_is_set
    fn.argtypes = [ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return bool(fn(entry._entry_p))


def _entry_type(entry: Any) -> str:
    if entry.issym:
        return "symlink"
    if entry.islnk:
        return "hardlink"
    if entry.isblk or entry.ischr:
        return "device"
    if entry.isfifo:
        return "fifo"
    if entry.issock:
        return "socket"
    if entry.isdir:
        return "directory"
    if entry.isreg:
        return "file"
    return "device"  # unknown type bits: never created either


def _archive_error(exc: Exception, where: str) -> Exception:
    message = str(exc)
    if message.startswith("None"):  # libarchive set no error string
        message = "libarchive could not read it"
    lowered = message.lower()
    if "encrypt" in lowered or "passphrase" in lowered or "password" in lowered:
        return UnsupportedInput(
            f"password-protected archive ({where}): encrypted archives are not expanded; "
            "upload it without a password"
        )
    if "unrecognized archive format" in lowered:
        return CorruptInput("not an archive libarchive can read (7z, RAR, tar, gzip, bzip2, xz, zstd)")
    if "unsupported" in lowered or "not supported" in lowered:
        return UnsupportedInput(f"this archive variant is not supported ({where}): {message[:300]}")
    return CorruptInput(f"corrupt or truncated archive ({where}): {message[:300]}")


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


def _format(archive: Any) -> str:
    return _text(archive.format_name)


def _filters(archive: Any) -> list[str]:
    return [name for name in map(_text, archive.filter_names) if name != "none"]


#: an empty tar is at most this many zero bytes (GNU tar pads to a 10 KiB record)
_EMPTY_TAR_BYTES = 10240


class _Reader:
    """libarchive with every format, every filter, and 'raw' for a lone compressed stream."""

    def __init__(self, src: Path, raw_only: bool = False) -> None:
        self.src, self.raw_only = src, raw_only

    def __enter__(self):
        libarchive = require("libarchive", "libarchive-c", "libarchive13")
        from libarchive import ffi
        from libarchive.read import ArchiveRead

        self._p = ffi.read_new()
        try:
            ffi.read_support_filter_all(self._p)
            if not self.raw_only:
                ffi.read_support_format_all(self._p)
            ffi.read_support_format_raw(self._p)  # bids last: only when no real format matches
            ffi.read_open_filename_w(self._p, str(self.src), _BLOCK)
        except libarchive.ArchiveError as exc:
            ffi.read_free(self._p)
            raise _archive_error(exc, "opening it") from None
        return ArchiveRead(self._p, header_codec="utf-8")

    def __exit__(self, *exc: object) -> None:
        from libarchive import ffi

        ffi.read_free(self._p)


def _store(entry: Any, name: str, out_dir: Path, rel: str, declared: int | None, opts: dict[str, int],
           state: dict) -> int:
    """Write one member at ``out_dir/rel`` under the guards of :func:`_write`; its size. A read
    error of libarchive in the middle of the entry is the archive's fault, typed as such."""
    libarchive = require("libarchive", "libarchive-c", "libarchive13")
    (out_dir / rel).parent.mkdir(exist_ok=True)
    try:
        return _write(entry, name, out_dir / rel, declared, opts, state)
    except libarchive.ArchiveError as exc:
        raise _archive_error(exc, f"entry {_shown(name)}") from None


def _write(entry: Any, name: str, dest: Path, declared: int | None, opts: dict[str, int], state: dict) -> int:
    """Stream one entry's blocks into ``dest`` (created exclusively), counting real bytes."""
    import os

    real = 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(fd, "wb") as out:
        for block in entry.get_blocks(_BLOCK):
            real += len(block)
            state["total"] += len(block)
            if real > opts["max_entry_bytes"]:
                raise LimitExceeded(
                    f"entry {_shown(name)} expands past {opts['max_entry_bytes']} bytes "
                    "(option max_entry_bytes): archive bomb"
                )
            if state["total"] > opts["max_total_bytes"]:
                raise LimitExceeded(
                    f"archive expands past {opts['max_total_bytes']} bytes in total at entry "
                    f"{_shown(name)} (option max_total_bytes): archive bomb"
                )
            if declared is not None and real > declared:
                raise CorruptInput(
                    f"hostile archive: entry {_shown(name)} declares {declared} bytes but holds more "
                    "(its header lies about its size)"
                )
            if state["total"] > opts["ratio_min_bytes"]:
                ratio = state["total"] / max(state["archive"].bytes_read, 1)
                if ratio > opts["max_ratio"]:
                    raise LimitExceeded(
                        f"archive bomb: {state['archive'].bytes_read} compressed bytes expanded to "
                        f"{state['total']} at entry {_shown(name)} ({ratio:.0f} times); the limit is "
                        f"{opts['max_ratio']} (option max_ratio)"
                    )
            out.write(block)
    if declared is not None and real != declared:
        raise CorruptInput(f"corrupt archive: entry {_shown(name)} declares {declared} bytes but holds {real}")
    return real


def convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult:
    libarchive = require("libarchive", "libarchive-c", "libarchive13")
    opts = _options(options)
    src, out_dir = Path(src), Path(out_dir)
    members_dir = fresh_members_dir(out_dir, MEMBERS_DIR)
    refuse_past_depth("archive", opts["depth"], opts["max_depth"])
    mime = str(options.get("mime") or "").split(";")[0].strip().lower()
    if mime.startswith(_NOT_ARCHIVES):
        raise UnsupportedInput(f"{mime} is a document, not an archive: it is converted, never expanded")

    members: list[Member] = []
    skipped: list[dict[str, str]] = []
    entries = 0
    state: dict[str, Any] = {"total": 0}
    try:
        with _Reader(src) as archive:
            state["archive"] = archive
            iterator = iter(archive)
            while True:
                try:
                    entry = next(iterator, None)
                except libarchive.ArchiveError as exc:
                    raise _archive_error(exc, f"after {entries} entries") from None
                if entry is None:
                    break
                entries += 1
                if entries > opts["max_entries"]:
                    raise LimitExceeded(
                        f"archive has more than {opts['max_entries']} entries (option max_entries); "
                        "nothing was kept"
                    )
                raw = _format(archive) == "raw"
                if raw and not _filters(archive):
                    raise CorruptInput("not an archive: neither a known archive format nor a compressed stream")
                raw_name = (_gzip_name(src) or "content") if raw else entry.pathname
                if raw_name is None:
                    raise CorruptInput("hostile or corrupt archive: an entry has no readable name")
                _check_name(raw_name, opts["max_name_bytes"])
                name = _display_name(raw_name)
                kind = _entry_type(entry)
                if kind == "directory":
                    continue
                if kind != "file":
                    skipped.append({"name": name, "reason": kind})
                    continue
                if _is_encrypted(entry):
                    raise UnsupportedInput(
                        f"password-protected archive: entry {_shown(name)} is encrypted; "
                        "upload it without a password"
                    )
                if name.rstrip("/") in ("", "."):
                    raise CorruptInput(f"hostile archive: entry {_shown(raw_name)} has no file name")
                declared = entry.size if (not raw and _size_is_set(entry)) else None
                if declared is not None and declared > opts["max_entry_bytes"]:
                    raise LimitExceeded(
                        f"entry {_shown(name)} declares {declared} bytes; the limit is "
                        f"{opts['max_entry_bytes']} (option max_entry_bytes)"
                    )
                rel = f"{MEMBERS_DIR}/{len(members) + 1:06d}"
                size = _store(entry, name, out_dir, rel, declared, opts, state)
                members.append(Member(name=name, path=rel, size=size))
            fmt = _format(archive)
            filters = _filters(archive)
            compressed = archive.bytes_read
        if fmt == "tar" and entries == 0 and filters:
            # A compressed stream whose first 512 bytes are zeros reads as an empty tar (its
            # end-of-archive block), so a gzip'd file of zeros (a single-file bomb) came out as
            # "no members" without its bytes ever being counted: read it again as the lone
            # compressed file it may be, under the same guards. Only an empty tar's few blocks of
            # zeros stay an empty tar.
            with _Reader(src, raw_only=True) as archive:
                state = {"total": 0, "archive": archive}
                entry = next(iter(archive), None)
                if entry is not None:
                    name = _display_name(_gzip_name(src) or "content")
                    rel = f"{MEMBERS_DIR}/000001"
                    size = _store(entry, name, out_dir, rel, None, opts, state)
                    if size > _EMPTY_TAR_BYTES or (out_dir / rel).read_bytes().strip(b"\0"):
                        members.append(Member(name=name, path=rel, size=size))
                        fmt, entries = "raw", 1
                    else:
                        (out_dir / rel).unlink()
                compressed = archive.bytes_read
    except MemoryError:
        shutil.rmtree(members_dir, ignore_errors=True)
        raise LimitExceeded("the archive needs more memory to read than allowed") from None
    except BaseException:
        shutil.rmtree(members_dir, ignore_errors=True)
        raise

    return ConversionResult(
        metadata={
            "format": fmt,
            "filters": filters,
            "entries": entries,
            "members": len(members),
            "skipped": skipped,
            "total_bytes": state["total"],
            "compressed_bytes": compressed,
            "depth": opts["depth"],
        },
        members=members,
    )
