"""Videos: one MP4 every browser plays - H.264 (yuv420p) + AAC, moov atom first, at most 1080p.

A video that browsers already play - H.264/AAC in MP4, within the size, frame-rate and bitrate
limits (see :func:`reasons_to_transcode`) - is not re-encoded: its streams are copied into a
new MP4 with the index in front (``mode: remux``), in a fraction of the time and without a
second generation of compression loss. Everything else is transcoded (``mode: transcode``,
``transcode_reasons`` says why).

Animated GIFs come here too (kind ``image``, from the image flow): they become an H.264 MP4,
which the page plays with ``loop`` (option ``loop``, recorded as ``loop: true``).

Runs Debian's ``ffmpeg`` (option ``ffmpeg``: its path; default: found on PATH) as a child
process and writes ``video.mp4`` (role ``web``, ``video/mp4``, width and height filled in):

* video: libx264, ``preset`` (default ``veryfast``), ``crf`` (default 23), yuv420p, square
  pixels, the picture turned upright when the file carries a rotation, frame rate capped at
  ``max_fps`` (default 60);
* size: at most 1080p - the picture fits a 1920x1080 box (1080x1920 for portrait videos),
  ``max_height`` (default 1080) being the short side of that box; the aspect ratio is kept,
  both sides are even (H.264 4:2:0 needs it), and a picture is never enlarged;
* audio: the first audio stream as AAC (``audio_bitrate``, default ``128k``), at most stereo and
  48 kHz; a video without audio gives an MP4 without an audio track;
* ``-movflags +faststart``: the index (moov) comes before the media data, so playback starts
  before the download ends; metadata (GPS positions of phones...) and chapters are not copied.

ffmpeg runs with ``-nostdin`` and ``-threads`` (default 2); its stderr is read as it comes, and
the last lines explain a failure. ffmpeg is killed when ``convert`` is interrupted (an exception
such as a timeout raised into it, or SIGTERM to this process).

Metadata: ``mode`` (remux or transcode), ``transcode_reasons``, ``width``, ``height``, ``duration_s``, ``video_codec``, ``audio_codec``, ``fps``,
``bitrate``, ``faststart``, ``source`` (what :mod:`video_probe` says about the input),
``ffmpeg_messages`` (count of error lines ffmpeg printed while still succeeding).

Errors: :class:`CorruptInput` for input that does not open or decode (or decodes to less than
90 % of its declared duration), :class:`UnsupportedInput` without a video stream,
:class:`LimitExceeded` beyond ``max_duration_s`` (default 4 h) or ``max_pixels`` per frame
(default 8192x8192) or when ffmpeg runs out of memory, :class:`ToolCrashed` when ffmpeg dies of
a signal, :class:`ToolError` when ffmpeg is missing or fails for another reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from collections import deque
from pathlib import Path
from typing import Any, Mapping

from converters.base import ConversionResult, ConverterSpec, Rendition, require
from converters.options import int_option
from converters.video_probe import describe, open_video
from fileflow.errors import CorruptInput, LimitExceeded, ToolCrashed, ToolError

SPEC = ConverterSpec(
    name="video_transcode",
    version="1.1.0",
    kinds=frozenset({"video", "image"}),  # images: animated GIFs
    timeout_s=3600,
    memory_mb=4096,
    retries=1,
    description="Video: H.264/AAC MP4 with faststart, at most 1080p, upright, square pixels",
)

DEFAULT_PRESET = "veryfast"
DEFAULT_CRF = 23
DEFAULT_MAX_HEIGHT = 1080
DEFAULT_THREADS = 2
DEFAULT_MAX_FPS = 60
DEFAULT_AUDIO_BITRATE = "128k"
DEFAULT_MAX_DURATION_S = 4 * 3600
DEFAULT_MAX_PIXELS = 8192 * 8192
DEFAULT_MAX_REMUX_BITRATE = 12_000_000
#: H.264 profiles every browser decodes (not High 10, 4:2:2 or 4:4:4)
BROWSER_H264_PROFILES = {"Baseline", "Constrained Baseline", "Main", "High", "Extended"}
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")

OUTPUT = "video.mp4"
PARTIAL = ".video.mp4.part"
_TAIL_LINES = 40
# stderr phrases that mean: the input's bytes are at fault
_CORRUPT_HINTS = (
    "invalid data found", "moov atom not found", "error while decoding", "corrupt", "invalid nal",
    "partial file", "end of file", "could not find codec parameters", "truncat", "no frame",
    "decode_slice", "non-existing pps", "missing picture", "error splitting", "invalid frame",
    "header damaged", "could not open", "cannot determine format",
)


# --------------------------------------------------------------------------- tools
def _ffmpeg(options: Mapping[str, Any]) -> str:
    configured = options.get("ffmpeg")
    if configured:
        path = str(configured)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            found = shutil.which(path)
            if not found:
                raise ToolError(f"the configured ffmpeg ({path}) is not an executable file")
            path = found
        return path
    found = shutil.which("ffmpeg")
    if not found:
        raise ToolError("ffmpeg is not installed on this machine (apt-get install ffmpeg)")
    return found


# --------------------------------------------------------------------------- geometry
def _even_floor(value: float) -> int:
    number = int(round(value))
    return max(2, number - (number % 2))


def target_size(width: int, height: int, max_height: int = DEFAULT_MAX_HEIGHT) -> tuple[int, int]:
    """The output size: fits a (16/9 * max_height) x max_height box in the picture's own
    orientation, keeps the aspect ratio, never enlarges, even on both sides."""
    long_limit = round(max_height * 16 / 9)
    limit_w, limit_h = (long_limit, max_height) if width >= height else (max_height, long_limit)
    scale = min(1.0, limit_w / width, limit_h / height)
    return _even_floor(width * scale), _even_floor(height * scale)


# --------------------------------------------------------------------------- remux or transcode
def reasons_to_transcode(info: Mapping[str, Any], options: Mapping[str, Any]) -> list[str]:
    """Why the input is not already what browsers play; empty: the streams can be copied as
    they are into a new MP4 (only the index moved to the front).

    Browser-ready means: an MP4/MOV container holding H.264 (a browser profile, yuv420p) with
    AAC audio (at most stereo, 48 kHz) or none, upright, square pixels, no larger than the
    output size limit, at most ``max_fps`` frames/s and ``max_remux_bitrate`` bits/s (default
    12 Mbit/s: above it a web copy is worth re-encoding). Option ``remux`` false always transcodes.
    """
    if options.get("remux") is False or str(options.get("remux")).lower() in ("false", "0", "no"):
        return ["remux switched off (option remux)"]
    max_height = int_option(options, "max_height", DEFAULT_MAX_HEIGHT, minimum=16, maximum=8640)
    max_fps = int_option(options, "max_fps", DEFAULT_MAX_FPS, minimum=1, maximum=1000)
    max_bitrate = int_option(options, "max_remux_bitrate", DEFAULT_MAX_REMUX_BITRATE, minimum=1)
    reasons = []
    if "mp4" not in str(info.get("container") or "").split(","):
        reasons.append(f"container {info.get('container')} is not MP4")
    if info.get("video_codec") != "h264":
        reasons.append(f"video codec {info.get('video_codec')} is not H.264")
    elif info.get("video_profile") not in BROWSER_H264_PROFILES:
        reasons.append(f"H.264 profile {info.get('video_profile')} is not one browsers decode")
    if info.get("pixel_format") not in ("yuv420p", "yuvj420p"):
        reasons.append(f"pixel format {info.get('pixel_format')} is not yuv420p")
    if info.get("audio_codec") not in (None, "aac"):
        reasons.append(f"audio codec {info.get('audio_codec')} is not AAC")
    if (info.get("audio_channels") or 0) > 2 or (info.get("audio_sample_rate") or 0) > 48000:
        reasons.append("audio has more than 2 channels or 48 kHz")
    if info.get("rotation"):
        reasons.append(f"the picture is stored rotated by {info.get('rotation')} degrees")
    if info.get("sample_aspect_ratio") not in (None, "1:1", "0:1"):
        reasons.append(f"pixels are not square ({info.get('sample_aspect_ratio')})")
    if target_size(info["width"], info["height"], max_height) != (info["width"], info["height"]):
        reasons.append(f"{info['width']}x{info['height']} is larger than the {max_height}p limit or odd-sized")
    if (info.get("fps") or 0) > max_fps:
        reasons.append(f"{info.get('fps')} frames/s is more than {max_fps}")
    if (info.get("bitrate") or 0) > max_bitrate:
        reasons.append(f"bitrate {info.get('bitrate')} is more than {max_bitrate}")
    return reasons


def _remux_command(ffmpeg: str, src: Path, dst: Path, info: Mapping[str, Any]) -> list[str]:
    cmd = [ffmpeg, "-nostdin", "-hide_banner", "-nostats", "-loglevel", "error", "-y", "-i", str(src),
           "-map", f"0:{info['video_stream_index']}"]
    if info.get("audio_stream_index") is not None:
        cmd += ["-map", f"0:{info['audio_stream_index']}"]
    else:
        cmd += ["-an"]
    cmd += ["-map_metadata", "-1", "-map_chapters", "-1", "-sn", "-dn", "-c", "copy",
            "-movflags", "+faststart", "-f", "mp4", str(dst)]
    return cmd


# --------------------------------------------------------------------------- running ffmpeg
def _command(
    ffmpeg: str, src: Path, dst: Path, info: Mapping[str, Any], size: tuple[int, int], options: Mapping[str, Any]
) -> list[str]:
    threads = int_option(options, "threads", DEFAULT_THREADS, minimum=1, maximum=64)
    crf = int_option(options, "crf", DEFAULT_CRF, minimum=0, maximum=51)
    max_fps = int_option(options, "max_fps", DEFAULT_MAX_FPS, minimum=1, maximum=1000)
    preset = str(options.get("preset") or DEFAULT_PRESET)
    if preset not in PRESETS:
        raise ValueError(f"option 'preset' must be one of {', '.join(PRESETS)}, got {preset!r}")
    audio_bitrate = str(options.get("audio_bitrate") or DEFAULT_AUDIO_BITRATE)

    width, height = size
    cmd = [
        ffmpeg, "-nostdin", "-hide_banner", "-nostats", "-loglevel", "error", "-y",
        "-threads", str(threads),
        "-i", str(src),
        "-map", f"0:{info['video_stream_index']}",
    ]
    if info.get("audio_stream_index") is not None:
        cmd += ["-map", f"0:{info['audio_stream_index']}"]
    cmd += [
        "-map_metadata", "-1", "-map_chapters", "-1", "-sn", "-dn",
        "-vf", f"scale={width}:{height}:flags=bicubic,setsar=1,format=yuv420p",
        "-fpsmax", str(max_fps),
        "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
        "-threads", str(threads), "-filter_threads", str(threads),
    ]
    if info.get("audio_stream_index") is not None:
        cmd += ["-c:a", "aac", "-b:a", audio_bitrate]
        if (info.get("audio_channels") or 2) > 2:
            cmd += ["-ac", "2"]
        if (info.get("audio_sample_rate") or 48000) > 48000:
            cmd += ["-ar", "48000"]
    else:
        cmd += ["-an"]
    cmd += ["-movflags", "+faststart", "-max_muxing_queue_size", "4096", "-f", "mp4", str(dst)]
    return cmd


def run_ffmpeg(cmd: list[str]) -> tuple[int, list[str]]:
    """Run ffmpeg; return (exit code, last stderr lines). ffmpeg never outlives this call:
    it is killed when an exception (a timeout, KeyboardInterrupt...) or SIGTERM interrupts it."""
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, close_fds=True
    )
    restore = _kill_on_sigterm(proc)
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    try:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                tail.append(line)
        code = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
        restore()
    return code, list(tail)


def _kill_on_sigterm(proc: subprocess.Popen):
    """While ffmpeg runs, SIGTERM to this process first kills ffmpeg, then does what it did
    before (usually: end this process). Only the main thread may set handlers; elsewhere the
    caller's process-group kill is what stops ffmpeg."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except (ValueError, OSError):
        return lambda: None

    def handler(signum, frame):
        if proc.poll() is None:
            proc.kill()
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        if callable(previous):
            previous(signum, frame)
        elif previous in (signal.SIG_DFL, None):
            os.kill(os.getpid(), signal.SIGTERM)

    try:
        signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):
        return lambda: None

    def restore() -> None:
        if signal.getsignal(signal.SIGTERM) is handler:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)

    return restore


def _failure(code: int, tail: list[str]) -> Exception:
    text = "\n".join(tail[-8:]) or "(ffmpeg printed nothing)"
    if code < 0:  # a crash (or the kernel's OOM killer): may not happen again, so transient
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return ToolCrashed(f"ffmpeg died with {name}: {text}")
    lowered = text.lower()
    if "cannot allocate memory" in lowered or "out of memory" in lowered:
        return LimitExceeded(f"transcoding the video needs more memory than this step may use: {text}")
    if any(hint in lowered for hint in _CORRUPT_HINTS):
        return CorruptInput(f"the video could not be decoded (it is damaged or truncated): {text}")
    return ToolError(f"ffmpeg failed with exit code {code}: {text}")


# --------------------------------------------------------------------------- checking the output
def faststart(path: Path) -> bool:
    """Whether the MP4's moov box comes before its mdat box (top-level boxes only)."""
    order: list[bytes] = []
    size = path.stat().st_size
    with path.open("rb") as fh:
        offset = 0
        while offset + 8 <= size and len(order) < 64:
            fh.seek(offset)
            header = fh.read(16)
            box_size = int.from_bytes(header[:4], "big")
            kind = header[4:8]
            if box_size == 1 and len(header) >= 16:
                box_size = int.from_bytes(header[8:16], "big")
            elif box_size == 0:
                box_size = size - offset
            if box_size < 8:
                break
            order.append(kind)
            offset += box_size
    return b"moov" in order and b"mdat" in order and order.index(b"moov") < order.index(b"mdat")


def _output_info(path: Path) -> dict[str, Any]:
    av = require("av", "av")
    try:
        with av.open(str(path)) as container:
            video = container.streams.video[0]
            audio = next(iter(container.streams.audio), None)
            duration = container.duration / 1_000_000 if container.duration else None
            fps = video.average_rate or video.guessed_rate
            return {
                "width": video.codec_context.width,
                "height": video.codec_context.height,
                "duration_s": round(duration, 3) if duration else None,
                "video_codec": video.codec_context.name,
                "audio_codec": audio.codec_context.name if audio is not None else None,
                "fps": round(float(fps), 3) if fps else None,
                "bitrate": container.bit_rate or None,
            }
    except (av.FFmpegError, IndexError) as exc:
        raise ToolError(f"ffmpeg wrote an MP4 that cannot be read back: {exc}") from None


# --------------------------------------------------------------------------- convert
def convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult:
    max_height = int_option(options, "max_height", DEFAULT_MAX_HEIGHT, minimum=16, maximum=8640)
    max_duration = int_option(options, "max_duration_s", DEFAULT_MAX_DURATION_S, minimum=1)
    max_pixels = int_option(options, "max_pixels", DEFAULT_MAX_PIXELS, minimum=1)
    ffmpeg = _ffmpeg(options)

    container = open_video(src)
    try:
        info = describe(container, src)
    finally:
        container.close()
    if info["coded_width"] * info["coded_height"] > max_pixels:
        raise LimitExceeded(
            f"the video picture is {info['coded_width']}x{info['coded_height']}, more than the limit of "
            f"{max_pixels:,} pixels per frame"
        )
    if info["duration_s"] and info["duration_s"] > max_duration:
        raise LimitExceeded(
            f"the video lasts {info['duration_s']:.0f} s, longer than the limit of {max_duration} s"
        )

    size = target_size(info["width"], info["height"], max_height)
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / PARTIAL
    reasons = reasons_to_transcode(info, options)
    if reasons:
        cmd = _command(ffmpeg, src, partial, info, size, options)
    else:  # already what browsers play: copy the streams, move the index to the front
        cmd = _remux_command(ffmpeg, src, partial, info)
    try:
        code, tail = run_ffmpeg(cmd)
        if code != 0:
            raise _failure(code, tail)
        if not partial.exists() or partial.stat().st_size == 0:
            raise _failure(1, tail or ["no output was written"])
        result = _output_info(partial)
        declared = info["duration_s"]
        if declared and declared > 1 and result["duration_s"] is not None and tail:
            if result["duration_s"] < 0.9 * declared:
                raise CorruptInput(
                    f"the video is damaged or truncated: only {result['duration_s']:.1f} s of its "
                    f"{declared:.1f} s could be decoded ({tail[-1]})"
                )
        partial.replace(out_dir / OUTPUT)
    finally:
        partial.unlink(missing_ok=True)

    metadata = {**result, "faststart": faststart(out_dir / OUTPUT), "ffmpeg_messages": len(tail), "source": info,
                "mode": "transcode" if reasons else "remux", "transcode_reasons": reasons}
    if options.get("loop"):  # an animation (GIF): the page plays it with <video loop muted autoplay>
        metadata["loop"] = True
    rendition = Rendition("web", OUTPUT, "video/mp4", result["width"], result["height"])
    return ConversionResult(renditions=[rendition], metadata=metadata)
