"""Videos: what the file holds (duration, container, codecs, picture size, rate), read with PyAV.

No renditions. The first video frame is decoded too: a file whose picture cannot be decoded
is reported here, before the heavier steps start. Metadata:

* ``duration_s`` (None when neither the container nor the stream says), ``container`` (FFmpeg
  demuxer name, e.g. ``mov,mp4,m4a,3gp,3g2,mj2``), ``container_long_name``, ``bitrate`` (bit/s);
* ``video_codec`` (e.g. ``h264``), ``video_profile``, ``pixel_format``, ``width`` and ``height``
  as the picture is shown (pixel aspect ratio applied, turned when the file carries a
  rotation), ``coded_width``/``coded_height`` as stored, ``rotation`` (0, 90, 180, 270, degrees
  clockwise), ``sample_aspect_ratio``, ``fps``, ``frame_count`` (None when unknown);
* ``audio_codec`` (None without audio), ``audio_channels``, ``audio_sample_rate``;
* ``stream_count``, ``video_streams``, ``audio_streams``, ``subtitle_streams``, ``tags``.

Errors: empty, truncated or foreign bytes (and a picture that does not decode) are
:class:`CorruptInput`; a file without a video stream (audio only, cover art only) or with a
video codec FFmpeg cannot decode is :class:`UnsupportedInput`.

The helpers :func:`open_video`, :func:`video_stream`, :func:`first_frame`, :func:`describe`,
:func:`duration_of`, :func:`rotation_of`, :func:`as_fraction` and :func:`display_size`
are shared with ``video_transcode`` and ``video_poster``.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping

from converters.base import ConversionResult, ConverterSpec, require
from fileflow.errors import CorruptInput, LimitExceeded, UnsupportedInput

SPEC = ConverterSpec(
    name="video_probe",
    version="1.0.0",
    kinds=frozenset({"video"}),
    timeout_s=60,
    memory_mb=4096,
    retries=1,
    description="Video: duration, container, codecs, display size, rotation, frame rate, bitrate, streams",
)

MAX_PACKETS_FOR_FIRST_FRAME = 2000
_MAX_TAGS = 32
_MAX_TAG_CHARS = 256


# --------------------------------------------------------------------------- errors
def media_error(exc: BaseException, doing: str) -> Exception:
    """The fileflow error for a PyAV/FFmpeg failure while ``doing`` something."""
    av = require("av", "av")
    if isinstance(exc, MemoryError) or isinstance(exc, getattr(av.error, "MemoryError", ())):
        return LimitExceeded(f"{doing} needs more memory than this step may use")
    if isinstance(exc, av.error.DecoderNotFoundError):
        return UnsupportedInput(
            f"the video uses a codec that FFmpeg cannot decode ({exc}); export it as H.264 MP4 and upload it again"
        )
    detail = str(exc).strip() or type(exc).__name__
    return CorruptInput(f"the video is damaged, truncated or not a video ({doing} failed: {detail})")


# --------------------------------------------------------------------------- opening
def open_video(src: Path):
    """The PyAV input container for ``src``; broken bytes fail as :class:`CorruptInput`."""
    av = require("av", "av")
    if src.stat().st_size == 0:
        raise CorruptInput("the video file is empty (0 bytes)")
    try:
        return av.open(str(src), mode="r", metadata_errors="ignore")
    except MemoryError as exc:
        raise media_error(exc, "opening the video") from None
    except (av.FFmpegError, UnicodeDecodeError, ValueError, OSError) as exc:
        raise media_error(exc, "opening the video") from None


def _is_cover_art(stream) -> bool:
    av = require("av", "av")
    try:
        return bool(stream.disposition & av.stream.Disposition.attached_pic)
    except (AttributeError, TypeError):
        return False


def video_stream(container):
    """The first real video stream (not cover art); :class:`UnsupportedInput` when none."""
    for stream in container.streams.video:
        if not _is_cover_art(stream):
            return stream
    audio = [s.codec_context.name for s in container.streams.audio]
    if audio:
        raise UnsupportedInput(
            f"the file has no video stream, only audio ({', '.join(audio)}); "
            "upload audio files as documents, or add a picture track to make it a video"
        )
    raise UnsupportedInput("the file has no video stream; it is not a video this pipeline can show")


def first_frame(container, stream):
    """The first decodable frame of ``stream`` or None; damaged data fails as CorruptInput."""
    av = require("av", "av")
    packets = 0
    try:
        for packet in container.demux(stream):
            packets += 1
            for frame in packet.decode():  # the last, empty packet flushes the decoder
                return frame
            if packets >= MAX_PACKETS_FOR_FIRST_FRAME:
                break
    except MemoryError as exc:
        raise media_error(exc, "decoding the first frame") from None
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise media_error(exc, "decoding the first frame") from None
    return None


# --------------------------------------------------------------------------- reading
def as_fraction(value) -> Fraction | None:
    if value is None:
        return None
    try:
        fraction = Fraction(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return fraction if fraction > 0 else None


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def rotation_of(frame) -> int:
    """Degrees clockwise that the picture must be turned for display: 0, 90, 180 or 270."""
    try:
        counter_clockwise = float(frame.rotation or 0)
    except (AttributeError, TypeError, ValueError):
        return 0
    if not math.isfinite(counter_clockwise):
        return 0
    return int(round(-counter_clockwise / 90.0)) * 90 % 360


def display_size(coded: tuple[int, int], sar: Fraction | None, rotation: int) -> tuple[int, int]:
    """(width, height) as shown: square pixels, turned by ``rotation``."""
    width, height = coded
    if sar and sar != 1:
        width = max(1, round(width * sar))
    if rotation in (90, 270):
        width, height = height, width
    return width, height


def duration_of(container, stream) -> float | None:
    if container.duration is not None:
        value = _number(container.duration / 1_000_000)
        if value:
            return value
    if stream is not None and stream.duration is not None and stream.time_base is not None:
        return _number(stream.duration * stream.time_base)
    return None


def _tags(container) -> dict[str, str]:
    tags: dict[str, str] = {}
    for key, value in list((container.metadata or {}).items())[:_MAX_TAGS]:
        text = str(value).replace("\x00", "").strip()
        if text:
            tags[str(key)[:64]] = text[:_MAX_TAG_CHARS]
    return tags


def describe(container, src: Path) -> dict[str, Any]:
    """Everything :mod:`video_probe` reports, from an open container (decodes one frame)."""
    stream = video_stream(container)
    ctx = stream.codec_context
    frame = first_frame(container, stream)
    if frame is None:
        raise CorruptInput("the video has a video stream but not one frame of it could be decoded")
    rotation = rotation_of(frame)
    coded = (int(ctx.width or frame.width), int(ctx.height or frame.height))
    if coded[0] <= 0 or coded[1] <= 0:
        coded = (frame.width, frame.height)
    sar = as_fraction(stream.sample_aspect_ratio) or as_fraction(getattr(ctx, "sample_aspect_ratio", None))
    width, height = display_size(coded, sar, rotation)
    duration = duration_of(container, stream)

    fps = _number(stream.average_rate) or _number(stream.guessed_rate) or _number(stream.base_rate)
    audio = next(iter(container.streams.audio), None)
    bitrate = container.bit_rate or None
    if not bitrate and duration:
        bitrate = int(src.stat().st_size * 8 / duration)

    info: dict[str, Any] = {
        "duration_s": round(duration, 3) if duration else None,
        "container": container.format.name,
        "container_long_name": container.format.long_name,
        "bitrate": int(bitrate) if bitrate else None,
        "video_codec": ctx.name,
        "video_profile": getattr(ctx, "profile", None) or None,
        "pixel_format": getattr(frame.format, "name", None),
        "width": width,
        "height": height,
        "coded_width": coded[0],
        "coded_height": coded[1],
        "rotation": rotation,
        "sample_aspect_ratio": f"{sar.numerator}:{sar.denominator}" if sar else None,
        "fps": round(fps, 3) if fps else None,
        "frame_count": int(stream.frames) if stream.frames else None,
        "audio_codec": audio.codec_context.name if audio is not None else None,
        "audio_channels": _channels(audio),
        "audio_sample_rate": (audio.codec_context.sample_rate or None) if audio is not None else None,
        "stream_count": len(container.streams),
        "video_streams": sum(1 for s in container.streams.video if not _is_cover_art(s)),
        "audio_streams": len(container.streams.audio),
        "subtitle_streams": len(container.streams.subtitles),
        "video_stream_index": stream.index,
        "audio_stream_index": audio.index if audio is not None else None,
        "tags": _tags(container),
    }
    return info


def _channels(audio) -> int | None:
    if audio is None:
        return None
    ctx = audio.codec_context
    try:
        return int(ctx.layout.nb_channels) or None
    except (AttributeError, TypeError, ValueError):
        return getattr(ctx, "channels", None) or None


def probe(src: Path) -> dict[str, Any]:
    container = open_video(src)
    try:
        return describe(container, src)
    finally:
        container.close()


# --------------------------------------------------------------------------- convert
def convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult:
    return ConversionResult(metadata=probe(src))
