"""Deterministic audio for the audio converters' tests and the pipeline, made with Debian's
ffmpeg from lavfi sources: a 440 Hz tone whose loudness rises from silence to full scale
(so a waveform has a shape to check), plus silence, in the formats people upload."""

from __future__ import annotations

import subprocess
from pathlib import Path

from fileflow.testing.samplegen.media import ffmpeg_path

TITLE, ARTIST = "Board call", "Anna Weber"
#: suffix -> encoder arguments
FORMATS = {
    "mp3": ["-c:a", "libmp3lame", "-b:a", "64k"],
    "m4a": ["-c:a", "aac", "-b:a", "64k"],
    "wav": ["-c:a", "pcm_s16le"],
    "ogg": ["-c:a", "libvorbis"],
    "flac": ["-c:a", "flac"],
}


def _run(args: list[str], path: Path) -> Path:
    exe = ffmpeg_path()
    if not exe:
        raise RuntimeError("ffmpeg is not installed (apt-get install ffmpeg)")
    cmd = [exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args,
           "-fflags", "+bitexact", "-flags:a", "+bitexact", str(path)]
    subprocess.run(cmd, check=True, timeout=120)
    return Path(path)


def rising_tone(path: Path, seconds: float = 2.0, rate: int = 44100, channels: int = 1) -> Path:
    """440 Hz whose amplitude rises linearly from 0 to 0.9; format from the suffix, tagged."""
    layout = "mono" if channels == 1 else "stereo"
    source = f"aevalsrc=0.9*sin(2*PI*440*t)*t/{seconds}:s={rate}:d={seconds}:c={layout}"
    suffix = Path(path).suffix.lstrip(".")
    return _run(["-f", "lavfi", "-i", source, "-metadata", f"title={TITLE}", "-metadata", f"artist={ARTIST}",
                 *FORMATS[suffix]], path)


def silence(path: Path, seconds: float = 1.0) -> Path:
    suffix = Path(path).suffix.lstrip(".")
    return _run(["-f", "lavfi", "-i", f"anullsrc=r=44100:cl=mono", "-t", str(seconds), *FORMATS[suffix]], path)
