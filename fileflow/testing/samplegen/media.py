"""Deterministic sample inputs for the drawing (DXF) and video converters.

Drawings are written with ezdxf; videos with Debian's ``ffmpeg`` from its ``lavfi`` sources
(``testsrc`` pictures with a frame counter, ``sine`` tones), with bit-exact flags so that the
same call writes the same bytes. Every generator writes one file and returns its path.

Run ``python -m fileflow.testing.samplegen.media`` once to (re)write the small committed samples under
``tests/samples/`` (plan.dxf, clip.mp4).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
from pathlib import Path

# --------------------------------------------------------------------------- drawings
#: layers of the sample plan: name -> ACI colour (1 red, 5 blue, 7 black/white)
PLAN_LAYERS = {"WALLS": 1, "DOORS": 5, "NOTES": 7}
#: a layer that entities use but the layer table does not define
GHOST_LAYER = "GHOST"
PLAN_TEXT = "PLAN A"
#: what the plan covers, in millimetres: min (x, y), max (x, y)
PLAN_EXTENTS = ((0.0, 0.0), (200.0, 120.0))


def plan_dxf(path: Path, dxfversion: str = "R2010") -> Path:
    """A small floor plan in mm: walls (lines), a door swing (circle), a label (text) on three
    layers from the layer table, and one line on a layer missing from it (``GHOST``)."""
    import ezdxf

    with _fixed_meta():
        doc = ezdxf.new(dxfversion, units=4)  # 4 = millimetres ($INSUNITS)
        _draw_plan(doc)
        # ezdxf registers a CLASS per entity type in use from a set (hash-seed order): sort them
        doc.classes.add_required_classes(doc.dxfversion)
        doc.classes.classes = dict(sorted(doc.classes.classes.items()))
        doc.saveas(path)
    return path


def _draw_plan(doc) -> None:
    for name, color in PLAN_LAYERS.items():
        doc.layers.add(name, color=color)
    msp = doc.modelspace()
    walls = {"layer": "WALLS"}
    msp.add_line((0, 0), (200, 0), dxfattribs=walls)
    msp.add_line((200, 0), (200, 100), dxfattribs=walls)
    msp.add_line((200, 100), (20, 100), dxfattribs=walls)
    msp.add_circle((50, 50), 20, dxfattribs={"layer": "DOORS"})
    msp.add_circle((150, 50), 10, dxfattribs={"layer": "DOORS"})
    msp.add_text(PLAN_TEXT, height=8, dxfattribs={"layer": "NOTES"}).set_placement((80, 20))
    # the left wall, from (0, 0) up to (0, 120), on a layer the table does not know
    msp.add_line((0, 0), (0, 120), dxfattribs={"layer": GHOST_LAYER})


@contextlib.contextmanager
def _fixed_meta():
    """ezdxf's fixed dates, GUIDs and marker, so that the committed sample does not change."""
    import ezdxf

    previous = ezdxf.options.write_fixed_meta_data_for_testing
    ezdxf.options.write_fixed_meta_data_for_testing = True
    try:
        yield
    finally:
        ezdxf.options.write_fixed_meta_data_for_testing = previous


TITLED_PLAN_TEXTS = (
    "Grundriss EG - Büro",
    "Besprechungsraum und Küche",
    "Projekt 2025-117 Neubau Verwaltung",
    "Gezeichnet: Jürgen Weiß",
    "Maßstab 1:100",
    "Alle Maße sind vor Ort zu prüfen",
)


def titled_plan_dxf(path: Path) -> Path:
    """A plan whose words sit where CAD users put them: an MTEXT title with formatting codes,
    room labels as TEXT (one repeated), a title block inserted with attributes, a text inside
    that block, and a note on the paper-space sheet."""
    import ezdxf

    with _fixed_meta():
        doc = ezdxf.new("R2010", units=4)
        msp = doc.modelspace()
        msp.add_line((0, 0), (200, 0))
        msp.add_mtext("{\\fArial|b1;Grundriss EG} - \\LBüro\\l", dxfattribs={"char_height": 6}).set_location((10, 90))
        msp.add_text("Besprechungsraum und Küche", height=4).set_placement((20, 50))
        msp.add_text("Besprechungsraum und Küche", height=4).set_placement((120, 50))
        block = doc.blocks.new("TITLE")
        block.add_attdef("PROJECT", (0, 10), dxfattribs={"height": 3}).dxf.text = "Projektnummer"
        block.add_attdef("DRAWN", (0, 5), dxfattribs={"height": 3}).dxf.text = "Name"
        block.add_text("Maßstab 1:100", height=2.5).set_placement((0, 0))
        insert = msp.add_blockref("TITLE", (150, 5))
        insert.add_auto_attribs({"PROJECT": "Projekt 2025-117 Neubau Verwaltung", "DRAWN": "Gezeichnet: Jürgen Weiß"})
        doc.layouts.get("Layout1").add_text("Alle Maße sind vor Ort zu prüfen", height=3).set_placement((10, 10))
        doc.saveas(path)
    return path


def many_entities_dxf(path: Path, count: int) -> Path:
    """``count`` short lines on layer 0."""
    import ezdxf

    doc = ezdxf.new("R2010", units=4)
    msp = doc.modelspace()
    for i in range(count):
        msp.add_line((i, 0), (i, 10))
    doc.saveas(path)
    return path


def fake_dwg(path: Path, version: bytes = b"AC1032") -> Path:
    """Looks like a DWG (the 6-byte version magic, then binary); nothing else about it is real."""
    rng = random.Random(11)
    path.write_bytes(version + b"\x00" * 6 + bytes(rng.randrange(256) for _ in range(2042)))
    return path


def garbage(path: Path, size: int = 4096, seed: int = 7) -> Path:
    rng = random.Random(seed)
    path.write_bytes(bytes(rng.randrange(256) for _ in range(size)))
    return path


def text_not_dxf(path: Path) -> Path:
    path.write_text("This is a shopping list, not a drawing.\nmilk\nbread\n", encoding="utf-8")
    return path


def truncated(src: Path, path: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


# --------------------------------------------------------------------------- videos
BITEXACT = ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1"]


def ffmpeg_path() -> str | None:
    return shutil.which("ffmpeg")


def has_encoders(*names: str) -> bool:
    """Whether Debian's ffmpeg offers every encoder in ``names``."""
    exe = ffmpeg_path()
    if not exe:
        return False
    out = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True, check=False).stdout
    listed = {line.split()[1] for line in out.splitlines() if len(line.split()) > 1 and line.startswith(" ")}
    return all(name in listed for name in names)


def _ffmpeg(args: list[str], path: Path) -> Path:
    exe = ffmpeg_path()
    if not exe:
        raise RuntimeError("ffmpeg is not installed (apt-get install ffmpeg)")
    cmd = [exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args, *BITEXACT, str(path)]
    subprocess.run(cmd, check=True, timeout=120)
    return path


def _sources(width: int, height: int, seconds: float, fps: int, audio: bool) -> list[str]:
    args = ["-f", "lavfi", "-i", f"testsrc=size={width}x{height}:rate={fps}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}"]
    return args


def video(
    path: Path,
    width: int = 320,
    height: int = 240,
    seconds: float = 2.0,
    fps: int = 25,
    audio: bool = True,
    vcodec: list[str] | None = None,
    acodec: list[str] | None = None,
    extra: list[str] | None = None,
) -> Path:
    """A test-pattern video (``testsrc``: colour bars and a running frame counter) with a 440 Hz
    tone; the container follows the suffix of ``path``."""
    args = _sources(width, height, seconds, fps, audio)
    args += vcodec if vcodec is not None else ["-c:v", "libx264", "-preset", "veryfast", "-crf", "30",
                                               "-pix_fmt", "yuv420p", "-threads", "1"]
    if audio:
        args += acodec if acodec is not None else ["-c:a", "aac", "-b:a", "64k", "-ac", "1"]
    args += extra or []
    return _ffmpeg(args, path)


def browser_ready_mp4(path: Path, width: int = 1280, height: int = 720, seconds: float = 6.0) -> Path:
    """An MP4 as phones and cameras write it for the web: H.264 High, yuv420p, AAC stereo, the
    index (moov) at the end, a few Mbit/s - everything a browser plays except the fast start."""
    return video(path, width, height, seconds, 30, audio=True,
                 vcodec=["-c:v", "libx264", "-preset", "ultrafast", "-crf", "23", "-pix_fmt", "yuv420p", "-threads", "1"],
                 acodec=["-c:a", "aac", "-b:a", "128k", "-ac", "2"])


def clip_mp4(path: Path) -> Path:
    """The committed sample: 2 s, 320x240, 25 fps, H.264 + AAC, moov at the end."""
    return video(path, 320, 240, 2.0, 25, audio=True)


def avi_mpeg4(path: Path, width: int = 640, height: int = 480, seconds: float = 3.0) -> Path:
    """MPEG-4 part 2 video + MP3 audio in AVI (the classic camera/download combination)."""
    return video(path, width, height, seconds, 25, audio=True,
                 vcodec=["-c:v", "mpeg4", "-q:v", "8"], acodec=["-c:a", "libmp3lame", "-b:a", "64k"])


def mkv_mpeg4(path: Path, width: int = 640, height: int = 480, seconds: float = 3.0) -> Path:
    """MPEG-4 part 2 video + Vorbis audio in Matroska."""
    return video(path, width, height, seconds, 25, audio=True,
                 vcodec=["-c:v", "mpeg4", "-q:v", "8"], acodec=["-c:a", "libvorbis", "-q:a", "2"])


def large_mpeg4(path: Path, width: int = 1920, height: int = 1440, seconds: float = 2.0) -> Path:
    """A big picture (beyond 1080p), cheap to make: MPEG-4 part 2 at 10 fps, no audio."""
    return video(path, width, height, seconds, 10, audio=False, vcodec=["-c:v", "mpeg4", "-q:v", "12"])


def webm_vp9(path: Path, width: int = 320, height: int = 240, seconds: float = 2.0) -> Path:
    """VP9 + Opus in WebM (needs libvpx-vp9 and libopus in the ffmpeg build)."""
    return video(path, width, height, seconds, 25, audio=True,
                 vcodec=["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "200k",
                         "-threads", "1"],
                 acodec=["-c:a", "libopus", "-b:a", "48k"], extra=["-ar", "48000"])


def mpegts(path: Path, width: int = 320, height: int = 240, seconds: float = 4.0) -> Path:
    """MPEG-2 video + MP2 audio in an MPEG transport stream: timestamps start at 1.4 s, and
    seeking lands after the asked time."""
    return video(path, width, height, seconds, 25, audio=True,
                 vcodec=["-c:v", "mpeg2video", "-q:v", "8"], acodec=["-c:a", "mp2", "-b:a", "64k"],
                 extra=["-f", "mpegts"])


def silent_mp4(path: Path, width: int = 320, height: int = 240, seconds: float = 2.0) -> Path:
    """Video only: no audio stream at all."""
    return video(path, width, height, seconds, 25, audio=False)


def rotated_mp4(src: Path, path: Path, degrees: int = 90) -> Path:
    """``src`` re-muxed with a display matrix (the ``rotate`` tag): players show it turned, as
    ffmpeg's own autorotation does (:func:`frame_at` returns the turned picture)."""
    return _ffmpeg(["-i", str(src), "-c", "copy", "-metadata:s:v:0", f"rotate={degrees}"], path)


def anamorphic_mp4(path: Path) -> Path:
    """Stored 320x240 with 2:1 pixels (sample aspect ratio): shown as 640x240."""
    return video(path, 320, 240, 1.0, 25, audio=False,
                 vcodec=["-c:v", "libx264", "-preset", "veryfast", "-crf", "30", "-pix_fmt", "yuv420p",
                         "-threads", "1", "-aspect", "8:3"])


def audio_only(path: Path, seconds: float = 1.0) -> Path:
    """An M4A: AAC audio, no picture."""
    return _ffmpeg(["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}",
                    "-c:a", "aac", "-b:a", "64k"], path)


def frame_at(src: Path, seconds: float, path: Path) -> Path:
    """The frame that ffmpeg shows at ``seconds`` (display orientation), as PNG."""
    return _ffmpeg(["-ss", f"{seconds:.3f}", "-i", str(src), "-frames:v", "1", "-update", "1"], path)


def write_committed_samples(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [plan_dxf(folder / "plan.dxf"), clip_mp4(folder / "clip.mp4")]


if __name__ == "__main__":
    from fileflow.testing.samplegen import SAMPLES

    for written in write_committed_samples(SAMPLES):
        print(written, os.path.getsize(written), "bytes")
