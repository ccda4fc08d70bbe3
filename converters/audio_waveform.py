"""Audio: a waveform picture as the preview of a sound file.

The first audio stream is decoded with PyAV, mixed down to mono at 8 kHz, and the peak level of
every slice of time is drawn as a bar centred on a line (``preview-<size>.png``, one per
``preview_sizes``, default 1280, 480 and 160 pixels wide, 4:1, PNG: flat colours compress
better and stay sharp). Metadata: ``peak`` (0..1, the loudest sample), ``rms`` (0..1),
``silent`` (nothing above -60 dBFS), ``duration_s`` decoded.

Decoding stops at ``max_duration_s`` (default 4 h; :class:`LimitExceeded` beyond), so a file
whose header lies about its length cannot keep the step busy; memory stays bounded (one peak per
1024 samples). Errors otherwise as ``audio_probe``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

from converters.audio_probe import DEFAULT_MAX_DURATION_S, audio_stream, check_duration, duration_of, media_error, open_audio
from converters.base import ConversionResult, ConverterSpec, Rendition, require
from converters.options import int_option, preview_sizes
from fileflow.errors import CorruptInput, LimitExceeded

SPEC = ConverterSpec(
    name="audio_waveform",
    version="1.0.0",
    kinds=frozenset({"audio"}),
    timeout_s=300,
    memory_mb=1024,
    retries=1,
    description="Audio: waveform preview images (PNG) and peak/RMS levels",
    reads=frozenset({"preview_sizes"}),
)

RATE = 8000
BLOCK = 1024  # samples per stored peak (0.128 s)
BACKGROUND = (255, 255, 255)
WAVE = (31, 78, 140)
AXIS = (200, 200, 200)


def _levels(src: Path, max_s: int) -> tuple[list[float], float, float, float]:
    """(peak of each BLOCK of samples, overall peak, RMS, seconds decoded)."""
    av = require("av", "av")
    np = require("numpy", "numpy")
    peaks: list[float] = []
    carry = np.zeros(0, dtype=np.float32)
    squares = 0.0
    count = 0
    with open_audio(src) as container:
        stream = audio_stream(container)
        check_duration(duration_of(container, stream), {"max_duration_s": max_s})
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    for out in resampler.resample(frame):
                        samples = out.to_ndarray().reshape(-1).astype(np.float32)
                        count += samples.size
                        if count > max_s * RATE:
                            raise LimitExceeded(
                                f"the audio decodes to more than {max_s} s (option max_duration_s)"
                            )
                        squares += float(np.square(samples, dtype=np.float64).sum())
                        carry = np.concatenate([carry, np.abs(samples)])
                        whole = carry.size - carry.size % BLOCK
                        if whole:
                            peaks.extend(carry[:whole].reshape(-1, BLOCK).max(axis=1).tolist())
                            carry = carry[whole:]
        except av.FFmpegError as exc:
            if not peaks:
                raise media_error(exc, "decoding the audio") from None
            # a damaged tail: draw what decoded
    if carry.size:
        peaks.append(float(carry.max()))
    if not count:
        raise CorruptInput("no audio could be decoded (the file is damaged or truncated)")
    peak = min(max(peaks), 1.0)
    rms = min(math.sqrt(squares / count), 1.0)
    return [min(p, 1.0) for p in peaks], peak, rms, count / RATE


def _columns(peaks: list[float], width: int) -> list[float]:
    """The loudest peak falling into each of ``width`` columns."""
    n = len(peaks)
    return [max(peaks[(i * n) // width: max(((i + 1) * n) // width, (i * n) // width + 1)]) for i in range(width)]


def _draw(peaks: list[float], width: int, scale: float):
    Image = require("PIL.Image", "pillow")
    ImageDraw = require("PIL.ImageDraw", "pillow")
    height = max(width // 4, 8)
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    middle = height // 2
    draw.line([(0, middle), (width - 1, middle)], fill=AXIS)
    for x, level in enumerate(_columns(peaks, width)):
        half = int(round(level * scale * (height / 2 - 1)))
        if half:
            draw.line([(x, middle - half), (x, middle + half)], fill=WAVE)
    return image


def convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult:
    src, out_dir = Path(src), Path(out_dir)
    sizes = preview_sizes(options, accept_single=True)
    if not sizes:
        raise ValueError("option 'preview_sizes' must name at least one size")
    max_s = int_option(options, "max_duration_s", DEFAULT_MAX_DURATION_S, minimum=1)
    peaks, peak, rms, seconds = _levels(src, max_s)
    silent = peak < 0.001
    scale = 1.0 if silent else 1.0 / max(peak, 0.05)  # quiet recordings are drawn visibly, never clipped
    out_dir.mkdir(parents=True, exist_ok=True)
    renditions = []
    for size in sizes:
        image = _draw(peaks, size, scale)
        name = f"preview-{size}.png"
        image.save(out_dir / name, "PNG", optimize=True)
        renditions.append(Rendition("preview", name, "image/png", image.width, image.height))
    return ConversionResult(
        renditions=renditions,
        metadata={"peak": round(peak, 4), "rms": round(rms, 4), "silent": silent, "duration_s": round(seconds, 3)},
    )
