"""Audio: one file every browser plays - the original when it already is one (MP3; AAC in
MP4/M4A, re-muxed with its index first), else AAC in an M4A.

* MP3 (``mp3`` codec in an MP3 file): copied unchanged to ``audio.mp3`` (``audio/mpeg``).
* AAC (in MP4/M4A, or raw ADTS): the stream copied (no re-encoding) into ``audio.m4a`` with ``-movflags
  +faststart``, so playback starts before the download ends.
* anything else (WAV, FLAC, OGG Vorbis/Opus, raw ADTS AAC, AIFF, WMA ...): the first audio
  stream as AAC (``audio_bitrate``, default ``128k``), at most stereo and 48 kHz, faststart,
  in ``audio.m4a`` (``audio/mp4``). Cover pictures, chapters and tags are not copied.

ffmpeg is Debian's (option ``ffmpeg``: its path), run as in ``video_transcode`` (killed when
interrupted, its last stderr lines explain a failure). Metadata: ``passthrough`` (bool),
``codec``, ``duration_s``, ``bitrate``, ``sample_rate``, ``channels`` of the rendition.

Errors as ``audio_probe`` (it opens the input the same way); ffmpeg failures as
``video_transcode``'s (:class:`CorruptInput`, :class:`ToolCrashed`, :class:`ToolError`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Mapping

from converters.audio_probe import audio_stream, check_duration, codec_name, duration_of, open_audio
from converters.base import ConversionResult, ConverterSpec, Rendition
from converters.options import int_option
from converters.video_transcode import _failure, _ffmpeg, faststart, run_ffmpeg
from fileflow.errors import ToolError

SPEC = ConverterSpec(
    name="audio_transcode",
    version="1.0.0",
    kinds=frozenset({"audio"}),
    timeout_s=900,
    memory_mb=1024,
    retries=1,
    description="Audio: browser-ready MP3 or AAC/M4A (passed through when it already is one)",
)

_MP4_FAMILY = "mov,mp4,m4a,3gp,3g2,mj2"


def _describe(path: Path) -> dict[str, Any]:
    with open_audio(path) as container:
        stream = audio_stream(container)
        ctx = stream.codec_context
        duration = duration_of(container, stream)
        return {
            "codec": codec_name(ctx),
            "duration_s": round(duration, 3) if duration is not None else None,
            "bitrate": ctx.bit_rate or container.bit_rate or None,
            "sample_rate": ctx.sample_rate or None,
            "channels": ctx.channels or None,
            "container": container.format.name,
        }


def convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult:
    src, out_dir = Path(src), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = _describe(src)
    check_duration(source["duration_s"], options)
    for stale in ("audio.mp3", "audio.m4a"):
        (out_dir / stale).unlink(missing_ok=True)

    if source["codec"] == "mp3" and source["container"] == "mp3":
        out, mime, passthrough = out_dir / "audio.mp3", "audio/mpeg", True
        shutil.copyfile(src, out)
    else:
        out, mime = out_dir / "audio.m4a", "audio/mp4"
        passthrough = source["codec"] == "aac" and source["container"] in (_MP4_FAMILY, "aac")
        channels = min(source["channels"] or 2, 2)
        rate = min(source["sample_rate"] or 48000, 48000)
        bitrate = str(options.get("audio_bitrate") or "128k")
        threads = int_option(options, "threads", 2, minimum=1, maximum=64)
        codec = ["-c:a", "copy"] if passthrough else ["-c:a", "aac", "-b:a", bitrate, "-ac", str(channels), "-ar", str(rate)]
        cmd = [
            _ffmpeg(options), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-threads", str(threads),
            "-i", str(src), "-map", "0:a:0", "-vn", "-sn", "-dn", "-map_metadata", "-1", "-map_chapters", "-1",
            *codec, "-movflags", "+faststart", "-f", "mp4", str(out),
        ]
        code, tail = run_ffmpeg(cmd)
        if code != 0:
            out.unlink(missing_ok=True)
            raise _failure(code, tail)
        if not out.is_file() or out.stat().st_size == 0:
            raise ToolError("ffmpeg wrote no audio")
        if not faststart(out):
            raise ToolError("ffmpeg wrote an M4A whose index does not come first")

    made = _describe(out)
    made.pop("container")
    return ConversionResult(
        renditions=[Rendition(role="web", path=out.name, mime=mime)],
        metadata={"passthrough": passthrough, **made},
    )
