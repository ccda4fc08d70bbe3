"""Hostile and broken uploads, each with the outcome the pipeline owes it (issue 4).

:data:`CASES` lists every case: the upload's name, the bytes (written by a generator, most of
them reused from the per-converter generators beside this module), and what its manifest must
say: ``completed``, or ``failed`` with a typed error from :mod:`fileflow.errors` at a named
step. Some cases end in an archive member (``member``): the expectation is then about the
member's manifest, found by the end of its name.

:func:`write_batch` writes every case (and none of the good samples) into a folder and returns
the paths plus the upload names that cannot be file names on disk (a ``/`` or more than 255
bytes): an upload service receives such names from browsers, so the batch hands them to the
pipeline as the upload's name. ``tests/test_hostile.py`` and ``bench/hostile_table.py`` run the
batch through the embedded pipeline.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fileflow.testing.samplegen import SAMPLES, archives, audio, documents, emails, images, libarchives, markup, media, msg

GOOD_TEXT = (
    "The inspection of the north pump found no leaks and the filters were replaced on Monday.\n"
    "The next inspection is planned for the end of the month.\n"
)
MiB = 1024 * 1024


@dataclass(frozen=True)
class Case:
    file: str
    """The file name on disk (what the upload is called unless ``upload_name`` says otherwise)."""
    what: str
    make: Callable[[Path, Path], object]
    """Writes the bytes to the path; the second argument is a scratch folder (for markers)."""
    status: str
    """Expected status of the manifest named by ``member`` (or of the upload itself)."""
    error: str | None = None
    step: str | None = None
    member: str | None = None
    """End of the name of the archive member the expectation is about."""
    upload_name: str | None = None

    @property
    def name(self) -> str:
        return self.upload_name or self.file


# --------------------------------------------------------------------------- new generators
def zip_bomb_absolute(path: Path, size: int = 1100 * MiB) -> int:
    """One entry of ``size`` zero bytes whose headers tell the truth (ratio ~1000, > 1 GiB).

    The deflate stream is one fully flushed block of 1 MiB of zeros repeated (a full flush
    makes each repetition independent of the one before), so writing 1.1 GiB takes no time;
    the CRC is the real one.
    """
    chunk = bytes(MiB)
    squeezer = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = squeezer.compress(chunk) + squeezer.flush(zlib.Z_FULL_FLUSH)
    assert size % MiB == 0
    count = size // MiB
    data = block * count + zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # an empty final block
    crc = 0
    for _ in range(count):
        crc = zlib.crc32(chunk, crc)
    name = b"zeros.bin"
    dostime, dosdate = 0x5000, 0x58B1  # 2024-05-17 10:00
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, dostime, dosdate, crc, len(data), size,
                        len(name), 0)
    central = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 0x0314, 20, 0, 8, dostime, dosdate, crc, len(data),
                          size, len(name), 0, 0, 0, 0, 0o100644 << 16, 0)
    cd_offset = len(local) + len(name) + len(data)
    cd = central + name
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(cd), cd_offset, 0)
    path.write_bytes(local + name + data + cd + eocd)
    return size


def png_bomb(path: Path, width: int = 12_000, height: int = 12_000) -> Path:
    """A valid greyscale PNG of ``width`` x ``height`` white pixels: a few hundred KB on disk,
    144 megapixels decoded (a real decompression bomb, not only a lying header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    squeezer = zlib.compressobj(9)
    row = b"\x00" + b"\xff" * width  # filter type 0, then the row
    idat = b"".join(squeezer.compress(row) for _ in range(height)) + squeezer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def pdf_many_pages(path: Path, pages: int = 6000) -> Path:
    """A real PDF of ``pages`` pages (one shared content stream), past the 5,000-page default."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{4 + i} 0 R" for i in range(pages))
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode())
    stream = b"BT /F1 12 Tf 72 720 Td (page) Tj ET"
    objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    page = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 3 0 R >>"
    objects += [page] * pages
    return documents.write_pdf(path, objects)


def pdf_lying_page_count(path: Path, declared: int = 2_000_000_000) -> Path:
    """A one-page PDF whose page tree declares ``declared`` pages in ``/Count``."""
    stream = b"BT /F1 12 Tf 72 720 Td (one page) Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [4 0 R] /Count {declared} >>".encode(),
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 3 0 R >>",
    ]
    return documents.write_pdf(path, objects)


def dxf_garbage_body(path: Path) -> Path:
    """Starts like a DXF (a HEADER section), then random bytes."""
    import random

    head = b"  0\nSECTION\n  2\nHEADER\n  9\n$ACADVER\n  1\nAC1015\n  9\n$INSUNITS\n 70\n4\n"
    path.write_bytes(head + random.Random(5).randbytes(3000))
    return path


def good_text(path: Path) -> Path:
    path.write_text(GOOD_TEXT, encoding="utf-8")
    return path


def _copy(sample: str) -> Callable[[Path, Path], Path]:
    def make(path: Path, _scratch: Path) -> Path:
        path.write_bytes((SAMPLES / sample).read_bytes())
        return path

    return make


def _one(fn: Callable[[Path], object]) -> Callable[[Path, Path], object]:
    return lambda path, _scratch: fn(path)


def _truncated_pdf(path: Path, scratch: Path) -> Path:
    good = documents.text_pdf(scratch / "whole.pdf", [["Some text on a page."]] * 3)
    return documents.truncated(path, good, 0.5)


def _encrypted_zip(path: Path, scratch: Path) -> None:
    if not archives.make_encrypted_with_zip(path, scratch / "zip-P"):
        archives.make_encrypted_flag(path)  # no Info-ZIP here: the flag alone says "encrypted"


#: where the macro documents would write if their macros ever ran
MACRO_MARKERS = ("odt-macro-ran.txt", "docm-macro-ran.txt")


CASES: tuple[Case, ...] = (
    # archives
    Case("bomb-ratio.zip", "zip bomb by ratio: 10 MiB of zeros deflated ~1000:1",
         _one(archives.make_ratio_bomb), "failed", "LimitExceeded", "archive_expand"),
    Case("bomb-absolute.zip", "zip bomb by absolute size: one entry of 1.1 GiB, honest headers, 1.1 MB file",
         _one(zip_bomb_absolute), "failed", "LimitExceeded", "archive_expand"),
    Case("bomb-lying-headers.zip", "zip bomb whose headers lie: 50 MiB of zeros declared as 1,000 bytes",
         _one(archives.make_lying_headers), "failed", "CorruptInput", "archive_expand"),
    Case("bomb-overlapping.zip", "overlapping-entries zip bomb: two entries share one data block",
         _one(archives.make_overlapping), "failed", "CorruptInput", "archive_expand"),
    Case("nested-too-deep.zip", "archives nested 5 deep (limit 3): levels 0-2 expand, level 3 is refused",
         _one(lambda p: archives.make_nested_chain(p, 5)), "failed", "LimitExceeded", "archive_expand",
         member="/level3.zip"),
    Case("traversal.zip", "entry named ../../escaped.txt", _one(lambda p: archives.make_named(p, "../../escaped.txt")),
         "failed", "CorruptInput", "archive_expand"),
    Case("absolute.zip", "entry named /tmp/fileflow-absolute.txt",
         _one(lambda p: archives.make_named(p, "/tmp/fileflow-absolute.txt")), "failed", "CorruptInput",
         "archive_expand"),
    Case("symlinks.zip", "symlink entries (to /etc/passwd and ../../../../tmp/escaped), a fifo, a device",
         _one(archives.make_special_files), "completed"),
    Case("symlinks.zip", "the regular file beside those symlinks is processed",
         _one(archives.make_special_files), "completed", member="/real.txt"),
    Case("many-entries.zip", "10,001 entries (limit 10,000)", _one(lambda p: archives.make_many_entries(p, 10_001)),
         "failed", "LimitExceeded", "archive_expand"),
    Case("encrypted.zip", "password-protected (ZipCrypto) archive", _encrypted_zip, "failed",
         "UnsupportedInput", "archive_expand"),
    # archives other than ZIP (libarchive)
    Case("bomb.7z", "7z bomb: 64 MiB of zeros in a 7z of a few KiB",
         _one(lambda p: libarchives.seven_zip_bomb(p, 64)), "failed", "LimitExceeded", "archive_libarchive"),
    Case("traversal.rar", "RAR (built byte by byte) whose second entry is ../../escaped.txt",
         _one(lambda p: libarchives.rar(p, [("ok.txt", b"fine\n"), ("../../escaped.txt", b"owned\n")])),
         "failed", "CorruptInput", "archive_libarchive"),
    Case("absolute.tar.gz", "tar.gz entry named /tmp/fileflow-absolute.txt",
         _one(lambda p: libarchives.tar_named(p, "/tmp/fileflow-absolute.txt")), "failed", "CorruptInput",
         "archive_libarchive"),
    Case("links.tar", "tar with a symlink to /etc/passwd, a hardlink, a device and a fifo",
         _one(libarchives.tar_with_special_files), "completed"),
    Case("declared-huge.tar", "tar entry declaring 5 GiB (limit 1 GiB)",
         _one(lambda p: libarchives.tar_declaring(p, 5 * 1024 * MiB)), "failed", "LimitExceeded",
         "archive_libarchive"),
    Case("bomb.gz", "single-gzip bomb: one file of 64 MiB of zeros gzipped (64 KiB)",
         _one(lambda p: libarchives.gz(p, bytes(64 * MiB), "zeros.bin")), "failed", "LimitExceeded",
         "archive_libarchive"),
    Case("encrypted.rar", "RAR whose entry carries the password flag",
         _one(lambda p: libarchives.rar(p, [("secret.txt", b"secret\n")], encrypted=True)), "failed",
         "UnsupportedInput", "archive_libarchive"),
    Case("encrypted.7z", "7z whose content is coded with AES-256 (built byte by byte; the header is plain)",
         _one(libarchives.seven_zip_aes), "failed", "UnsupportedInput", "archive_libarchive"),
    Case("encrypted-by-libarchive.zip", "ZipCrypto ZIP written by libarchive",
         _one(libarchives.zip_encrypted), "failed", "UnsupportedInput", "archive_expand"),
    # e-mail
    Case("attachment-bomb.eml", "e-mail carrying a 64 MiB zip bomb as an attachment: the mail completes",
         lambda p, s: emails.attachment_bomb(p, s, 64), "completed"),
    Case("attachment-bomb.eml", "... and its attachment is refused as the bomb it is",
         lambda p, s: emails.attachment_bomb(p, s, 64), "failed", "LimitExceeded", "archive_expand",
         member="/figures.zip"),
    Case("nested-too-deep.eml", "e-mails forwarded 4 deep (limit 3): the one at depth 3 is refused",
         _one(lambda p: emails.nested(p, 4)), "failed", "LimitExceeded", "email_parse",
         member="/level 1.eml"),
    Case("traversal-attachment.eml", "e-mail whose attachment is named ../../escaped.txt",
         _one(lambda p: emails.named_attachment(p, "../../escaped.txt")), "failed", "CorruptInput", "email_parse"),
    Case("traversal-attachment.msg", "Outlook .msg whose attachment is named ../../escaped.txt",
         _one(lambda p: msg.message(p, subject="Figures", sender_name="Anna Weber", sender_email="anna@example.com",
                                    to=[("Board", "board@example.com")], body="See the attachment.",
                                    message_id="<f@example.com>", filetime=133_600_000_000_000_000,
                                    attachments=[("../../escaped.txt", "text/plain", b"owned\n")])),
         "failed", "CorruptInput", "email_parse"),
    Case("not-a-message.msg", "a Compound File (the container of .msg) holding one binary stream, no message",
         _one(msg.not_a_message), "failed", "UnsupportedInput", "route"),
    Case("not-a-mail.eml", "random bytes named .eml", _one(lambda p: images.garbage(p, seed=12)), "failed",
         "UnsupportedInput", "route"),
    # audio
    Case("truncated.flac", "FLAC cut after 200 bytes",
         lambda p, s: p.write_bytes(audio.rising_tone(s / "whole.flac").read_bytes()[:200]), "failed",
         "CorruptInput", "audio_probe"),
    Case("truncated.mp3", "MP3 cut after 200 bytes",
         lambda p, s: p.write_bytes(audio.rising_tone(s / "whole.mp3").read_bytes()[:200]), "failed",
         "CorruptInput", "audio_probe"),
    Case("truncated.m4a", "M4A cut in half",
         lambda p, s: media.truncated(audio.rising_tone(s / "whole.m4a"), p, 0.5), "failed", "CorruptInput",
         "audio_probe"),
    # markup
    Case("remote-and-local.html", "HTML page with <script>, remote <img>/<iframe>/CSS and file:///etc/passwd "
         "<img>: completes, nothing fetched or read", _one(markup.html_page), "completed"),
    Case("deep.json", "JSON nested 100,000 arrays deep (detected as plain text: its text is taken as is)",
         _one(markup.deep_json), "completed"),
    Case("bomb.epub", "EPUB whose zip also holds 64 MiB of zeros outside the spine: completes, the bomb is "
         "never inflated", _one(lambda p: markup.epub(p, extra=[("OEBPS/zeros.bin", bytes(64 * MiB))])),
         "completed"),
    Case("billion-laughs.xml", "XML billion laughs (10 levels of 10 entity references)",
         _one(markup.billion_laughs), "failed", "CorruptInput", "markup_text"),
    Case("external-entity.xml", "XML external entity reading file:///etc/passwd",
         _one(markup.external_entity), "failed", "CorruptInput", "markup_text"),
    Case("passwd.svg", "SVG with <image href=\"file:///etc/passwd\">", _one(markup.svg_local_file), "failed",
         "CorruptInput", "svg_render"),
    Case("xlink-local.svg", "SVG with xlink:href to a local picture",
         _one(lambda p: markup.svg_xlink_local(p, Path("/usr/share/pixmaps/debian-logo.png"))), "failed",
         "CorruptInput", "svg_render"),
    Case("entity.svg", "SVG declaring an external entity", _one(markup.svg_external_entity), "failed",
         "CorruptInput", "svg_render"),
    # images
    Case("bomb.png", "decompression-bomb PNG: 12,000 x 12,000 white pixels in a small file",
         _one(png_bomb), "failed", "LimitExceeded", "image_renditions"),
    Case("absurd-header.png", "PNG header declaring 2,147,483,647 x 2,147,483,647 pixels",
         _one(lambda p: images.png_declaring(p, 2**31 - 1, 2**31 - 1)), "failed", "LimitExceeded",
         "image_renditions"),
    Case("truncated.jpg", "JPEG cut in half", _one(images.truncated_jpeg), "failed", "CorruptInput",
         "image_renditions"),
    # documents
    Case("truncated.pdf", "PDF cut in half", _truncated_pdf, "failed", "CorruptInput", "pdf_preview"),
    Case("many-pages.pdf", "PDF with 6,000 real pages (limit 5,000)", _one(pdf_many_pages), "failed",
         "LimitExceeded", "pdf_preview"),
    Case("lying-page-count.pdf", "one-page PDF whose page tree declares 2,000,000,000 pages",
         _one(pdf_lying_page_count), "completed"),
    Case("garbage-body.docx", "DOCX whose word/document.xml is binary junk", _one(documents.docx_with_garbage_body),
         "failed", "CorruptInput", "office_pdf"),
    Case("not-ooxml.docx", "a .docx that is a plain zip (no [Content_Types].xml): expanded as the zip it is",
         _one(documents.zip_with_garbage), "completed"),
    Case("macro.odt", "ODT with a Basic macro on OnLoad that would write a marker file",
         lambda p, s: documents.macro_odt(p, s / MACRO_MARKERS[0]), "completed"),
    Case("macro.docm", "DOCM declaring a VBA project whose AutoOpen would write a marker file",
         lambda p, s: documents.docm_with_vba(p, s / MACRO_MARKERS[1]), "completed"),
    # drawings
    Case("garbage.dxf", "random bytes named .dxf", _one(media.garbage), "failed", "UnsupportedInput", "route"),
    Case("broken-body.dxf", "a DXF header followed by random bytes", _one(dxf_garbage_body), "failed",
         "CorruptInput", "drawing_render"),
    Case("drawing.dwg", "DWG (no converter exists offline)", _one(media.fake_dwg), "failed", "UnsupportedInput",
         "drawing_render"),
    # video
    Case("truncated.mp4", "the sample MP4 cut in half",
         _one(lambda p: media.truncated(SAMPLES / "clip.mp4", p, 0.5)), "failed", "CorruptInput", "video_probe"),
    # any type
    Case("zero-bytes.pdf", "zero-byte file", _one(images.empty), "failed", "CorruptInput", "inspect"),
    Case("pdf-named.jpg", "a PDF named .jpg", _copy("scan.pdf"), "completed"),
    Case("photo-named.pdf", "a JPEG named .pdf", _copy("photo.jpg"), "completed"),
    Case("docx-named.zip", "a DOCX named .zip (an office document, never expanded)", _copy("report.docx"),
         "completed"),
    Case("random-named.txt", "random bytes named .txt", _one(lambda p: images.garbage(p, seed=11)), "failed",
         "UnsupportedInput", "route"),
    # names
    Case("dotdot-name.txt", "upload named ../../../etc/passwd", _one(good_text), "completed",
         upload_name="../../../etc/passwd"),
    Case("..\\..\\win.txt", "upload named with Windows traversal ..\\..\\", _one(good_text), "completed"),
    Case("bell\x07esc\x1b[31mred.txt", "upload name with control characters (BEL, ESC)", _one(good_text),
         "completed"),
    Case("two\nlines.txt", "upload name with a newline", _one(good_text), "completed"),
    Case("long-name.txt", "upload name of 300 bytes", _one(good_text), "completed",
         upload_name="n" * 296 + ".txt"),
)


def write_batch(folder: Path, scratch: Path) -> tuple[list[Path], dict[Path, str]]:
    """Every case's bytes in ``folder``; (paths, upload names that differ from the file name)."""
    folder.mkdir(parents=True, exist_ok=True)
    scratch.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    names: dict[Path, str] = {}
    for case in CASES:
        path = folder / case.file
        if path in paths:
            continue  # several expectations about one upload
        case.make(path, scratch)
        paths.append(path)
        if case.upload_name:
            names[path] = case.upload_name
    return paths, names


# --------------------------------------------------------------------------- reading the outcome
def find_manifest(case: Case, manifests: list[dict]) -> dict | None:
    """The manifest a case's expectation is about (the upload's, or its archive member's)."""
    from fileflow.engine.mediator import display_name

    shown = display_name(case.name)
    if case.member is None:
        return next((m for m in manifests if m["parent"] is None and m["name"] == shown), None)
    return next((m for m in manifests if m["name"].startswith(shown + "/") and m["name"].endswith(case.member)), None)


def observed(manifest: dict | None) -> tuple[str, str | None, str | None, str]:
    """(status, error type, failed step, message) of a manifest; ("lost", ...) when there is none."""
    if manifest is None:
        return "lost", None, None, "no manifest"
    failed = next((s for s in manifest["steps"] if s["status"] == "failed"), None)
    if failed is None:
        return manifest["status"], None, None, ""
    return manifest["status"], failed["error"]["type"], failed["name"], failed["error"]["message"]


def expected_text(case: Case) -> str:
    return case.status if case.error is None else f"{case.status}: {case.error} ({case.step})"


def observed_text(manifest: dict | None) -> str:
    status, error, step, _ = observed(manifest)
    return status if error is None else f"{status}: {error} ({step})"


def markdown_table(manifests: list[dict]) -> str:
    """One row per case: what it is, what it must give, what it gave."""
    rows = ["| upload | case | expected | observed | message (first 120 characters) |", "|---|---|---|---|---|"]
    for case in CASES:
        manifest = find_manifest(case, manifests)
        *_, message = observed(manifest)
        label = repr(case.name) if not case.name.isprintable() or len(case.name) > 60 else case.name
        if len(label) > 60:
            label = label[:28] + "…" + label[-28:]
        label = f"`{label}`" + (f" → member `…{case.member}`" if case.member else "")
        cells = [label, case.what, expected_text(case), observed_text(manifest),
                 message[:120].replace("|", "/").replace("\n", " ")]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)
