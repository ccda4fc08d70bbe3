"""Videos: a poster frame and JPEG previews of it, decoded with PyAV.

The frame shown at ``at_fraction`` of the duration (default 0.1), but never later than
``max_at_s`` (default 10 s) - early enough to be cheap to reach, late enough to skip fades from
black - is decoded after a seek to the keyframe before it. Outputs, upright (the file's rotation
applied) and with square pixels:

* ``poster.jpg`` (role ``poster``): the full frame, at most ``poster_max`` pixels (default 1920)
  on its long side;
* ``preview-<size>.jpg`` for every size in ``preview_sizes`` (default 160, 480, 1280): long side
  exactly ``size``, never upscaled.

Metadata: ``poster_time_s`` (the time of the frame used), ``width``/``height`` of the picture
as shown, ``rotation``.

Errors: :class:`CorruptInput` when no frame can be decoded, :class:`UnsupportedInput` without a
video stream, :class:`LimitExceeded` beyond ``max_pixels`` per frame (default 8192x8192).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from converters.base import ConversionResult, ConverterSpec, Rendition, require
from converters.geometry import fit_long_side
from converters.options import float_option, preview_sizes
from converters.video_probe import (
    as_fraction,
    display_size,
    duration_of,
    first_frame,
    media_error,
    open_video,
    rotation_of,
    video_stream,
)
from fileflow.errors import CorruptInput, LimitExceeded

SPEC = ConverterSpec(
    name="video_poster",
    version="1.0.0",
    kinds=frozenset({"video"}),
    timeout_s=120,
    memory_mb=4096,
    retries=1,
    description="Video: poster frame (JPEG, <= 1920 px) and JPEG previews, upright",
    reads=frozenset({"preview_sizes"}),
)

DEFAULT_AT_FRACTION = 0.1
DEFAULT_MAX_AT_S = 10.0
DEFAULT_POSTER_MAX = 1920
DEFAULT_MAX_PIXELS = 8192 * 8192
DEFAULT_JPEG_QUALITY = 85
MAX_PACKETS_AFTER_SEEK = 5000

# clockwise degrees -> the PIL transpose that shows the picture upright
_TURN = {90: "ROTATE_270", 180: "ROTATE_180", 270: "ROTATE_90"}


# --------------------------------------------------------------------------- options
# --------------------------------------------------------------------------- decoding
def _frame_at(container, stream, seconds: float, start: float = 0.0):
    """The first frame at or after ``seconds`` (the last one before it if the stream ends
    first); None when nothing decodes after the seek.

    Some containers (MPEG-TS...) land after the asked time when seeking: then it seeks again,
    earlier, and settles for the best frame found."""
    best = None
    for margin in (0.0, 2.0, 10.0):
        frame, overshoot = _seek_and_decode(container, stream, max(start, seconds - margin), seconds)
        if frame is not None and (best is None or overshoot < best[1]):
            best = (frame, overshoot)
        if frame is not None and overshoot <= 1e-6:
            break
        if seconds - margin <= start:
            break
    return best[0] if best else None


def _seek_and_decode(container, stream, seek_to: float, seconds: float):
    """(frame, how far after ``seconds`` the first decoded frame was)."""
    av = require("av", "av")
    try:
        container.seek(int(seek_to / stream.time_base), stream=stream, backward=True, any_frame=False)
    except (av.FFmpegError, ValueError, OverflowError):
        return None, 0.0
    first_time = None
    last = None
    packets = 0
    try:
        for packet in container.demux(stream):
            packets += 1
            for frame in packet.decode():
                if first_time is None and frame.time is not None:
                    first_time = frame.time
                if frame.time is None or frame.time + 1e-6 >= seconds:
                    return frame, max(0.0, (first_time or seconds) - seconds)
                last = frame
            if packets >= MAX_PACKETS_AFTER_SEEK:
                break
    except MemoryError as exc:
        raise media_error(exc, "decoding the poster frame") from None
    except (av.FFmpegError, ValueError, OSError):
        pass  # damaged data after the seek: use what was decoded, or the first frame
    return last, 0.0


def _start_time(stream) -> float:
    """When the stream's first frame is shown (MPEG-TS and cut files do not start at 0)."""
    try:
        if stream.start_time is not None and stream.time_base is not None:
            start = float(stream.start_time * stream.time_base)
            return start if start > 0 else 0.0
    except (TypeError, ValueError, OverflowError):
        pass
    return 0.0


def _rewind(container) -> None:
    av = require("av", "av")
    try:
        container.seek(0)
    except (av.FFmpegError, ValueError, OSError):
        pass


def _picture(frame, sar, rotation: int):
    """The frame as an upright RGB picture with square pixels."""
    Image = require("PIL.Image", "pillow")
    try:
        picture = frame.to_image()  # RGB24
    except MemoryError as exc:
        raise media_error(exc, "converting the poster frame") from None
    except (ValueError, OSError) as exc:
        raise CorruptInput(f"the poster frame could not be converted: {exc}") from None
    width, height = display_size((frame.width, frame.height), sar, 0)
    if (width, height) != picture.size:
        picture = picture.resize((width, height), Image.Resampling.LANCZOS)
    if rotation in _TURN:
        picture = picture.transpose(getattr(Image.Transpose, _TURN[rotation]))
    return picture


# --------------------------------------------------------------------------- convert
def convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult:
    Image = require("PIL.Image", "pillow")
    at_fraction = float_option(options, "at_fraction", DEFAULT_AT_FRACTION, 0.0, 1.0)
    max_at = float_option(options, "max_at_s", DEFAULT_MAX_AT_S, 0.0, 86400.0)
    poster_max = int(float_option(options, "poster_max", DEFAULT_POSTER_MAX, 16, 8192))
    max_pixels = int(float_option(options, "max_pixels", DEFAULT_MAX_PIXELS, 1, 1e12))
    quality = int(float_option(options, "jpeg_quality", DEFAULT_JPEG_QUALITY, 1, 95))
    # without the option the default is kept smallest first, as this converter always had it
    sizes = preview_sizes(options, accept_single=True)  # largest first

    container = open_video(src)
    try:
        stream = video_stream(container)
        ctx = stream.codec_context
        if (ctx.width or 0) * (ctx.height or 0) > max_pixels:
            raise LimitExceeded(
                f"the video picture is {ctx.width}x{ctx.height}, more than the limit of {max_pixels:,} pixels per frame"
            )
        stream.thread_type = "AUTO"
        duration = duration_of(container, stream)
        wanted = min(duration * at_fraction, max_at) if duration else 0.0
        start = _start_time(stream)
        frame = _frame_at(container, stream, start + wanted, start) if wanted > 0 else None
        if frame is None:  # no duration, a failed seek, or nothing after it: the first frame
            if wanted > 0:
                _rewind(container)
            frame = first_frame(container, stream)
        if frame is None:
            raise CorruptInput("not one frame of the video could be decoded")
        if frame.width * frame.height > max_pixels:
            raise LimitExceeded(
                f"the video picture is {frame.width}x{frame.height}, more than the limit of {max_pixels:,} pixels per frame"
            )
        rotation = rotation_of(frame)
        sar = as_fraction(stream.sample_aspect_ratio) or as_fraction(getattr(ctx, "sample_aspect_ratio", None))
        poster_time = max(0.0, float(frame.time) - start) if frame.time is not None else 0.0
        picture = _picture(frame, sar, rotation)
    finally:
        container.close()

    out_dir.mkdir(parents=True, exist_ok=True)
    width, height = picture.size
    renditions: list[Rendition] = []
    poster = picture
    poster_size = fit_long_side(*picture.size, poster_max)
    if poster_size != picture.size:
        poster = picture.resize(poster_size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    poster.save(out_dir / "poster.jpg", "JPEG", quality=quality, optimize=True, progressive=True)
    renditions.append(Rendition("poster", "poster.jpg", "image/jpeg", poster.width, poster.height))

    source = picture
    for size in sizes:  # largest first: each preview is made from the previous, larger one
        target = fit_long_side(width, height, size)
        preview = source if source.size == target else source.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
        name = f"preview-{size}.jpg"
        preview.save(out_dir / name, "JPEG", quality=quality, optimize=True)
        renditions.append(Rendition("preview", name, "image/jpeg", preview.width, preview.height))
        source = preview

    metadata = {"poster_time_s": round(poster_time, 3), "width": width, "height": height, "rotation": rotation}
    return ConversionResult(renditions=renditions, metadata=metadata)
