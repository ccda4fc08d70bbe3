"""audio_probe, audio_transcode, audio_waveform on real files made by ffmpeg's lavfi sources."""

from __future__ import annotations

from pathlib import Path

import av
import pytest
from PIL import Image

from converters import audio_probe, audio_transcode, audio_waveform
from converters.video_transcode import faststart
from fileflow.errors import CorruptInput, LimitExceeded, UnsupportedInput

from fileflow.testing.samplegen import audio as gen
from fileflow.testing.samplegen import media

CODECS = {"mp3": "mp3", "m4a": "aac", "wav": "pcm_s16le", "ogg": "vorbis", "flac": "flac"}


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("audio")
    return {fmt: gen.rising_tone(folder / f"call.{fmt}") for fmt in gen.FORMATS}


@pytest.mark.parametrize("fmt", list(gen.FORMATS))
def test_probe_reads_codec_duration_rate_channels_and_tags(samples, fmt, tmp_path) -> None:
    meta = audio_probe.convert(samples[fmt], tmp_path, {}).metadata
    assert meta["codec"] == CODECS[fmt]
    assert meta["duration_s"] == pytest.approx(2.0, abs=0.06)
    assert meta["sample_rate"] == 44100 and meta["channels"] == 1
    assert meta["bitrate"] and meta["bitrate"] > 8000
    assert meta["tags"].get("title") == gen.TITLE and meta["tags"].get("artist") == gen.ARTIST
    assert "major_brand" not in meta["tags"]


def test_mp3_passes_through_unchanged(samples, tmp_path) -> None:
    result = audio_transcode.convert(samples["mp3"], tmp_path, {})
    (rendition,) = result.renditions
    assert (rendition.role, rendition.path, rendition.mime) == ("web", "audio.mp3", "audio/mpeg")
    assert (tmp_path / "audio.mp3").read_bytes() == samples["mp3"].read_bytes()
    assert result.metadata["passthrough"] is True


def test_aac_in_m4a_is_copied_not_reencoded_and_gets_its_index_first(samples, tmp_path) -> None:
    assert not faststart(samples["m4a"])  # ffmpeg writes moov last by default
    result = audio_transcode.convert(samples["m4a"], tmp_path, {})
    out = tmp_path / "audio.m4a"
    assert result.metadata["passthrough"] is True and faststart(out)
    with av.open(str(samples["m4a"])) as a, av.open(str(out)) as b:
        first = [bytes(p) for p in a.demux(a.streams.audio[0]) if p.size]
        second = [bytes(p) for p in b.demux(b.streams.audio[0]) if p.size]
    assert first == second  # the same AAC packets


@pytest.mark.parametrize("fmt", ["wav", "ogg", "flac"])
def test_other_formats_become_aac_m4a(samples, fmt, tmp_path) -> None:
    result = audio_transcode.convert(samples[fmt], tmp_path, {})
    (rendition,) = result.renditions
    assert (rendition.path, rendition.mime) == ("audio.m4a", "audio/mp4")
    meta = result.metadata
    assert meta["passthrough"] is False and meta["codec"] == "aac" and meta["sample_rate"] == 44100
    assert meta["duration_s"] == pytest.approx(2.0, abs=0.1)
    assert faststart(tmp_path / "audio.m4a")


def test_stereo_96k_is_brought_to_48k(tmp_path) -> None:
    src = gen.rising_tone(tmp_path / "hi.flac", rate=96000, channels=2)
    meta = audio_transcode.convert(src, tmp_path / "out", {}).metadata
    assert meta["sample_rate"] == 48000 and meta["channels"] == 2


def test_waveform_previews_show_the_rising_loudness(samples, tmp_path) -> None:
    result = audio_waveform.convert(samples["wav"], tmp_path, {})
    assert [(r.path, r.width, r.height, r.mime) for r in result.renditions] == [
        ("preview-1280.png", 1280, 320, "image/png"), ("preview-480.png", 480, 120, "image/png"),
        ("preview-160.png", 160, 40, "image/png")]
    image = Image.open(tmp_path / "preview-1280.png").convert("RGB")

    def height_at(x: int) -> int:
        return sum(1 for y in range(image.height) if image.getpixel((x, y)) == audio_waveform.WAVE)

    heights = [height_at(x) for x in (20, 320, 640, 960, 1270)]
    assert heights == sorted(heights) and heights[0] < 40 and heights[-1] > 280, heights
    assert result.metadata["peak"] == pytest.approx(0.9, abs=0.02)
    assert result.metadata["silent"] is False


def test_silence_is_reported_and_drawn_flat(tmp_path) -> None:
    result = audio_waveform.convert(gen.silence(tmp_path / "quiet.wav"), tmp_path / "out", {"preview_sizes": [200]})
    assert result.metadata["silent"] is True and result.metadata["peak"] == 0
    image = Image.open(tmp_path / "out" / "preview-200.png").convert("RGB")
    assert audio_waveform.WAVE not in {c for _, c in image.getcolors(10000)}


def test_duration_limit(samples, tmp_path) -> None:
    for module in (audio_probe, audio_transcode, audio_waveform):
        with pytest.raises(LimitExceeded, match="max_duration_s"):
            module.convert(samples["flac"], tmp_path / module.__name__, {"max_duration_s": 1})


@pytest.mark.parametrize("data", [b"", bytes(range(256)) * 64, b"ID3\x04\x00\x00\x00\x00\x00\x10" + b"\xff" * 100])
def test_garbage_is_corrupt_input(tmp_path, data) -> None:
    src = tmp_path / "bad.mp3"
    src.write_bytes(data)
    for module in (audio_probe, audio_transcode, audio_waveform):
        with pytest.raises((CorruptInput, UnsupportedInput)):
            module.convert(src, tmp_path / module.__name__, {})


def test_truncated_file_fails_typed_or_draws_what_decodes(samples, tmp_path) -> None:
    src = tmp_path / "cut.flac"
    src.write_bytes(samples["flac"].read_bytes()[:200])
    with pytest.raises(CorruptInput):
        audio_probe.convert(src, tmp_path / "p", {})


def test_a_file_without_sound_is_unsupported(tmp_path) -> None:
    src = media.video(tmp_path / "mute.mp4", 64, 48, 0.5, 10, audio=False)
    with pytest.raises(UnsupportedInput, match="no audio stream"):
        audio_probe.convert(src, tmp_path / "out", {})
