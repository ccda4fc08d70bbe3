"""Audio (MP3, M4A/AAC, WAV, OGG Vorbis/Opus, FLAC ...): what the file holds, read with PyAV.

No renditions. The first audio frame is decoded too, so a file whose sound cannot be decoded is
reported here, before the heavier steps start. Metadata: ``duration_s``, ``container`` (FFmpeg
demuxer name), ``container_long_name``, ``codec`` (e.g. ``mp3``, ``aac``, ``flac``),
``codec_long_name``, ``bitrate`` (bit/s: the stream's, else the container's), ``sample_rate``,
``channels``, ``channel_layout``, ``sample_format``, ``audio_streams``, ``cover_art`` (an
attached picture is present) and ``tags`` (title, artist, album, date ..., at most 32, each
at most 256 characters).

Errors: empty, truncated or foreign bytes are :class:`CorruptInput`; a file without an audio
stream or with a codec FFmpeg cannot decode is :class:`UnsupportedInput`; a duration over
``max_duration_s`` (default 4 h) is :class:`LimitExceeded`.

:func:`open_audio`, :func:`audio_stream` and :func:`duration_of` are shared with
``audio_transcode`` and ``audio_waveform``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from converters.base import ConversionResult, ConverterSpec, require
from converters.options import int_option
from fileflow.errors import CorruptInput, LimitExceeded, UnsupportedInput

SPEC = ConverterSpec(
    name="audio_probe",
    version="1.0.0",
    kinds=frozenset({"audio"}),
    timeout_s=60,
    memory_mb=1024,
    retries=1,
    description="Audio: duration, codec, bitrate, sample rate, channels, tags",
)

DEFAULT_MAX_DURATION_S = 4 * 3600
_MAX_TAGS = 32
_MAX_TAG_CHARS = 256
#: container bookkeeping, not what a person tagged
_TECHNICAL_TAGS = frozenset({"major_brand", "minor_version", "compatible_brands", "handler_name", "vendor_id", "encoder"})
MAX_PACKETS_FOR_FIRST_FRAME = 2000


def media_error(exc: BaseException, doing: str) -> Exception:
    av = require("av", "av")
    if isinstance(exc, MemoryError):
        return LimitExceeded(f"{doing} needs more memory than this step may use")
    if isinstance(exc, av.error.DecoderNotFoundError):
        return UnsupportedInput(f"the audio uses a codec FFmpeg cannot decode ({exc})")
    detail = str(exc).strip() or type(exc).__name__
    return CorruptInput(f"the audio is damaged, truncated or not audio ({doing} failed: {detail})")


def open_audio(src: Path):
    av = require("av", "av")
    if src.stat().st_size == 0:
        raise CorruptInput("the audio file is empty (0 bytes)")
    try:
        return av.open(str(src), metadata_errors="replace")
    except (av.FFmpegError, UnicodeDecodeError, ValueError, OSError) as exc:
        raise media_error(exc, "opening the file") from None


def audio_stream(container):
    stream = next(iter(container.streams.audio), None)
    if stream is None:
        raise UnsupportedInput("the file holds no audio stream")
    return stream


def duration_of(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000
    return None


def check_duration(duration: float | None, options: Mapping[str, Any]) -> None:
    limit = int_option(options, "max_duration_s", DEFAULT_MAX_DURATION_S, minimum=1)
    if duration is not None and duration > limit:
        raise LimitExceeded(f"the audio lasts {duration:.0f} s; the limit is {limit} s (option max_duration_s)")


def _tags(*sources: Mapping[str, Any]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for source in sources:
        for key, value in (source or {}).items():
            key = str(key).lower()[:64]
            if key in tags or key in _TECHNICAL_TAGS or len(tags) >= _MAX_TAGS:
                continue
            text = str(value).replace("\x00", "").strip()
            if text:
                tags[key] = text[:_MAX_TAG_CHARS]
    return tags


def codec_name(ctx) -> str:
    """The codec, not FFmpeg's decoder variant (``mp3float`` is ``mp3``)."""
    name = ctx.name or ""
    return name[: -len("float")] if name.endswith("float") and len(name) > 5 else name


def _first_frame(container, stream) -> None:
    av = require("av", "av")
    try:
        for count, packet in enumerate(container.demux(stream)):
            if count >= MAX_PACKETS_FOR_FIRST_FRAME:
                break
            for _frame in packet.decode():
                return
    except av.FFmpegError as exc:
        raise media_error(exc, "decoding the first audio frame") from None
    raise CorruptInput("no audio frame could be decoded (the file is damaged or truncated)")


def convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult:
    src = Path(src)
    with open_audio(src) as container:
        stream = audio_stream(container)
        ctx = stream.codec_context
        duration = duration_of(container, stream)
        check_duration(duration, options)
        metadata = {
            "duration_s": round(duration, 3) if duration is not None else None,
            "container": container.format.name,
            "container_long_name": container.format.long_name,
            "codec": codec_name(ctx),
            "codec_long_name": ctx.codec.long_name if ctx.codec else None,
            "bitrate": ctx.bit_rate or container.bit_rate or None,
            "sample_rate": ctx.sample_rate or None,
            "channels": ctx.channels or None,
            "channel_layout": ctx.layout.name if ctx.layout else None,
            "sample_format": ctx.format.name if ctx.format else None,
            "audio_streams": len(container.streams.audio),
            "cover_art": any(v.disposition & 0x400 for v in container.streams.video) if container.streams.video else False,
            "tags": _tags(container.metadata, stream.metadata),
        }
        _first_frame(container, stream)
    return ConversionResult(metadata=metadata)
