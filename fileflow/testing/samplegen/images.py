"""Deterministic sample inputs for the image, OCR, language and text converters.

Every generator writes one file and returns its path. Pictures carry large black words on
white (DejaVu Sans) so that OCR has something real to find; texts are real sentences.

Run ``python -m fileflow.testing.samplegen.images`` once to (re)write the small committed samples under
``tests/samples/`` (photo.jpg, notes-de.txt, table.csv).
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
WORDS = ("INVOICE 2024", "FILEFLOW")

GERMAN = (
    "Die Rechnung für den Monat März wurde gestern an die Buchhaltung geschickt.\n"
    "Bitte prüfen Sie die Beträge und geben Sie uns bis Freitag eine kurze Rückmeldung.\n"
    "Wir danken Ihnen für die gute Zusammenarbeit und wünschen Ihnen ein schönes Wochenende.\n"
    "Die Unterlagen liegen wie immer im gemeinsamen Ordner des Projekts.\n"
)
FRENCH = (
    "La réunion de lundi prochain aura lieu dans la grande salle du deuxième étage.\n"
    "Nous vous prions de bien vouloir apporter les documents signés et votre ordinateur.\n"
    "Le déjeuner sera servi après la présentation des résultats de l'année dernière.\n"
    "Merci de confirmer votre présence avant la fin de la semaine.\n"
)
RUSSIAN = (
    "Завтра утром мы отправим вам окончательную версию договора на подпись.\n"
    "Пожалуйста, проверьте все даты и суммы, указанные в приложении.\n"
    "Если у вас возникнут вопросы, позвоните нашему менеджеру в любое время.\n"
    "Спасибо за сотрудничество и хорошего вам дня.\n"
)
ENGLISH = (
    "The quarterly report was sent to the finance team yesterday afternoon.\n"
    "Please review the attached figures and let us know if anything looks wrong.\n"
    "We will publish the final version next Monday after the board meeting.\n"
)
LATIN1 = (
    "Sehr geehrte Frau Müller,\n"
    "anbei erhalten Sie die Übersicht der Gebühren für das Geschäftsjahr.\n"
    "Die Beträge sind in Euro angegeben; größere Änderungen gab es keine.\n"
    "Mit freundlichen Grüßen, Jürgen Weiß\n"
)
CSV_ROWS = (
    ("id", "name", "city", "amount"),
    ("1", "Anna Schmidt", "Berlin", "120.50"),
    ("2", "Jean Dupont", "Paris", "99.90"),
    ("3", "Olga Ivanova", "Moskau", "310.00"),
    ("4", "John Smith", "London", "42.00"),
    ("5", "Marta Nowak", "Warschau", "18.75"),
)


# --------------------------------------------------------------------------- pictures
def text_image(
    size: tuple[int, int] = (1200, 800),
    words: tuple[str, ...] = WORDS,
    mode: str = "RGB",
    font_size: int = 96,
    background: object = "white",
    ink: object = "black",
) -> Image.Image:
    """``words`` drawn one per line, large, black on white (upright)."""
    image = Image.new(mode, size, background)
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(FONT, font_size)
    y = max(20, size[1] // 8)
    for line in words:
        draw.text((max(20, size[0] // 12), y), line, font=font, fill=ink)
        y += int(font_size * 1.6)
    # a red block bottom-right and a blue one top-right: tests can tell that the picture
    # is upright, neither rotated nor mirrored
    if mode in ("RGB", "RGBA"):
        w, h = size
        draw.rectangle((w - w // 6, h - h // 6, w - 1, h - 1), fill=(220, 0, 0, 255))
        draw.rectangle((w - w // 6, 0, w - 1, h // 10), fill=(0, 0, 220, 255))
    return image


def _exif(orientation: int | None = None, gps: bool = False) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "FileflowCam"  # Make
    exif[0x0110] = "FF-1"  # Model
    exif[0x0132] = "2024:03:15 10:20:30"  # DateTime
    if orientation is not None:
        exif[0x0112] = orientation
    if gps:
        from PIL.TiffImagePlugin import IFDRational

        exif[0x8825] = {  # GPSInfo: 52°31'12" N, 13°24'36" E (Berlin)
            1: "N",
            2: (IFDRational(52), IFDRational(31), IFDRational(12)),
            3: "E",
            4: (IFDRational(13), IFDRational(24), IFDRational(36)),
        }
    return exif


# Orientation value -> how to store an upright picture so that applying the tag shows it upright
_STORE = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,  # tag 6 means "rotate 90 deg clockwise to display"
    8: Image.Transpose.ROTATE_270,
}


def jpeg_with_orientation(
    path: Path, orientation: int = 6, size: tuple[int, int] = (1200, 800), gps: bool = True,
    quality: int = 90,
) -> Path:
    """A JPEG that is ``size`` (landscape) and upright only once its EXIF orientation is applied."""
    upright = text_image(size)
    stored = upright.transpose(_STORE[orientation]) if orientation in _STORE else upright
    stored.save(path, "JPEG", quality=quality, exif=_exif(orientation, gps=gps))
    return path


def jpeg(path: Path, size: tuple[int, int] = (1200, 800), **kwargs) -> Path:
    text_image(size).save(path, "JPEG", quality=90, **kwargs)
    return path


def png_with_alpha(path: Path, size: tuple[int, int] = (800, 600)) -> Path:
    """Black words on a transparent background (the rest fully transparent)."""
    image = text_image(size, mode="RGBA", background=(0, 0, 0, 0), ink=(0, 0, 0, 255), font_size=80)
    image.save(path, "PNG")
    return path


def png_opaque_rgba(path: Path, size: tuple[int, int] = (640, 480)) -> Path:
    """An RGBA PNG whose alpha is 255 everywhere: no transparency in fact."""
    text_image(size, mode="RGBA", background=(255, 255, 255, 255), ink=(0, 0, 0, 255), font_size=64).save(path, "PNG")
    return path


def png_16bit(path: Path, size: tuple[int, int] = (300, 200)) -> Path:
    """A 16-bit greyscale PNG: a horizontal ramp from 0 to 65535."""
    image = Image.new("I;16", size)
    image.putdata([int(x * 65535 / (size[0] - 1)) for _ in range(size[1]) for x in range(size[0])])
    image.save(path, "PNG")
    return path


def gif_animated(path: Path, size: tuple[int, int] = (400, 300), frames: int = 3) -> Path:
    pictures = [text_image(size, words=(f"FRAME {i + 1}",), font_size=64).convert("P") for i in range(frames)]
    pictures[0].save(path, "GIF", save_all=True, append_images=pictures[1:], duration=200, loop=0)
    return path


def tiff(path: Path, size: tuple[int, int] = (1000, 700)) -> Path:
    text_image(size).save(path, "TIFF", compression="tiff_lzw")
    return path


def tiff_flavour(path: Path, flavour: str, size: tuple[int, int] = (1000, 700)) -> Path:
    """A TIFF as scanners and fax servers write them: ``rgb`` (uncompressed), ``grey`` (8-bit,
    Deflate), ``g4`` (1-bit CCITT Group 4 fax), ``g4-normal`` (the same at a normal-resolution
    fax's 204x98 dpi, half the lines), ``lzw`` (RGB, LZW) or ``multipage`` (three LZW
    pages, "PAGE 1".."PAGE 3", the first also carrying the usual words)."""
    if flavour == "multipage":
        pages = [text_image(size, words=(*WORDS, "PAGE 1"))] + [
            text_image(size, words=(f"PAGE {n}", f"SECTION {n}")) for n in (2, 3)
        ]
        pages[0].save(path, "TIFF", compression="tiff_lzw", save_all=True, append_images=pages[1:])
        return path
    picture = text_image(size)
    if flavour == "rgb":
        picture.save(path, "TIFF")
    elif flavour == "grey":
        picture.convert("L").save(path, "TIFF", compression="tiff_adobe_deflate")
    elif flavour == "g4":
        picture.convert("L").point(lambda v: 255 if v > 128 else 0).convert("1").save(
            path, "TIFF", compression="group4", dpi=(200, 200))
    elif flavour == "g4-normal":  # a "normal resolution" fax: 204x98 dpi, every other line kept
        squashed = picture.convert("L").resize((size[0], size[1] // 2), Image.Resampling.LANCZOS)
        squashed.point(lambda v: 255 if v > 128 else 0).convert("1").save(
            path, "TIFF", compression="group4", dpi=(204, 98))
    elif flavour == "lzw":
        picture.save(path, "TIFF", compression="tiff_lzw")
    else:
        raise ValueError(f"unknown TIFF flavour {flavour!r}")
    return path


def panorama(path: Path, size: tuple[int, int] = (20000, 1500)) -> Path:
    """A panorama: grey, with a black band in the middle third and a red one at the far left,
    so a test can tell which part a preview shows."""
    w, h = size
    picture = Image.new("RGB", size, (200, 200, 200))
    draw = ImageDraw.Draw(picture)
    if w >= h:
        draw.rectangle((w // 2 - w // 20, 0, w // 2 + w // 20, h - 1), fill=(0, 0, 0))
        draw.rectangle((0, 0, w // 20, h - 1), fill=(220, 0, 0))
    else:
        draw.rectangle((0, h // 2 - h // 20, w - 1, h // 2 + h // 20), fill=(0, 0, 0))
        draw.rectangle((0, 0, w - 1, h // 20), fill=(220, 0, 0))
    picture.save(path, quality=90)
    return path


def bmp(path: Path, size: tuple[int, int] = (640, 400)) -> Path:
    text_image(size, font_size=64).save(path, "BMP")
    return path


def webp(path: Path, size: tuple[int, int] = (900, 600)) -> Path:
    text_image(size, font_size=80).save(path, "WEBP", quality=90)
    return path


def heic(path: Path, size: tuple[int, int] = (1024, 768)) -> Path:
    import pillow_heif

    pillow_heif.register_heif_opener()
    text_image(size).save(path, "HEIF", quality=90, exif=_exif())
    return path


def cmyk_jpeg(path: Path, size: tuple[int, int] = (600, 400)) -> Path:
    text_image(size, font_size=64).convert("CMYK").save(path, "JPEG", quality=90)
    return path


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header declares ``width`` x ``height`` (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    idat = zlib.compress(b"\x00" * 1024)
    body = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    path.write_bytes(body)
    return path


def truncated_jpeg(path: Path) -> Path:
    buffer = io.BytesIO()
    text_image((1200, 800)).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    path.write_bytes(data[: len(data) // 2])
    return path


def garbage(path: Path, size: int = 4096, seed: int = 7) -> Path:
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def ico(path: Path) -> Path:
    """A real image in a format the pipeline does not decode (Pillow can identify ICO)."""
    text_image((64, 64), words=("X",), font_size=40).save(path, "ICO")
    return path


# --------------------------------------------------------------------------- texts
def text_file(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def german_text(path: Path) -> Path:
    return text_file(path, GERMAN)


def french_text(path: Path) -> Path:
    return text_file(path, FRENCH)


def russian_text(path: Path) -> Path:
    return text_file(path, RUSSIAN)


def english_text(path: Path) -> Path:
    return text_file(path, ENGLISH)


def latin1_text(path: Path) -> Path:
    return text_file(path, LATIN1, "latin-1")


def utf8_bom_crlf_text(path: Path) -> Path:
    return text_file(path, "\ufeff" + FRENCH.replace("\n", "\r\n"))


def utf16_text(path: Path) -> Path:
    return text_file(path, RUSSIAN, "utf-16")  # with BOM


def csv_file(path: Path, delimiter: str = ",") -> Path:
    lines = [delimiter.join(row) for row in CSV_ROWS]
    return text_file(path, "\n".join(lines) + "\n")


def markdown_file(path: Path) -> Path:
    return text_file(path, "# Projekt\n\n" + GERMAN + "\n* Punkt eins\n* Punkt zwei\n")


def binary_as_text(path: Path) -> Path:
    """Compressed/random bytes posing as a .txt file."""
    data = random.Random(11).randbytes(3000)
    path.write_bytes(zlib.compress(data) + data)
    return path


def write_committed_samples(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [
        jpeg_with_orientation(folder / "photo.jpg", orientation=6, size=(900, 600), quality=80),
        german_text(folder / "notes-de.txt"),
        csv_file(folder / "table.csv"),
    ]


if __name__ == "__main__":
    from fileflow.testing.samplegen import SAMPLES

    for written in write_committed_samples(SAMPLES):
        print(written, written.stat().st_size)


# --------------------------------------------------------------------------- scans per language
#: a paragraph per language, rich in the letters an English model misreads (umlauts, accents,
#: ß, ł, ñ, Cyrillic); keys are ISO 639-1, as the language step reports them
SCAN_TEXTS = {
    "en": "The quarterly report was sent to the finance team yesterday afternoon. Please review the "
          "attached figures and let us know if anything looks wrong before the board meeting.",
    "de": "Der Prüfungsbericht über die Straßenbauarbeiten im Frühjahr wurde gestern übergeben. Die "
          "Größe der Fläche beträgt 1.250 Quadratmeter; für die Übergabe müssen alle Unterlagen geprüft werden.",
    "fr": "La réunion de lundi aura lieu dans la grande salle du deuxième étage. Nous vous prions "
          "d'apporter les documents signés; le déjeuner sera servi après la présentation des résultats.",
    "es": "La señora Núñez envió el informe del año pasado a la dirección. Según la cláusula sexta, "
          "el pago se realizará después de la revisión técnica y la aprobación del comité.",
    "it": "La riunione di lunedì si terrà nella sala grande al secondo piano. Però è necessario che "
          "ciascuno porti i documenti firmati e la relazione sull'attività dell'ultimo trimestre.",
    "nl": "De vergadering van maandag vindt plaats in de grote zaal op de tweede verdieping. Wij "
          "verzoeken u vriendelijk de ondertekende stukken mee te nemen; na afloop is er koffie.",
    "pt": "A reunião de segunda-feira será na sala grande do segundo andar. Pedimos que tragam os "
          "contratos assinados; a apresentação dos resultados começará às nove horas em ponto.",
    "pl": "Spotkanie w poniedziałek odbędzie się w dużej sali na drugim piętrze. Prosimy o "
          "zabranie podpisanych umów; po prezentacji wyników będzie można zadać pytania zarządowi.",
    "ru": "Завтра утром мы отправим вам окончательную версию договора на подпись. Пожалуйста, "
          "проверьте все даты и суммы, указанные в приложении, и сообщите нам о любых ошибках.",
}


def scan(language: str, size: tuple[int, int] = (1700, 900), font_size: int = 30) -> Image.Image:
    """A page of ``SCAN_TEXTS[language]`` as a 200 dpi scanner gives it: greyscale, body-text
    size, wrapped to the page, slightly soft."""
    from PIL import ImageFilter

    font = ImageFont.truetype(FONT, font_size)
    page = Image.new("L", size, 255)
    draw = ImageDraw.Draw(page)
    lines, line = [], ""
    for word in SCAN_TEXTS[language].split():
        candidate = f"{line} {word}".strip()
        if draw.textlength(candidate, font=font) > size[0] - 160:
            lines.append(line)
            line = word
        else:
            line = candidate
    lines.append(line)
    draw.multiline_text((80, 80), "\n".join(lines), font=font, fill=0, spacing=int(font_size * 0.6))
    return page.filter(ImageFilter.GaussianBlur(0.6))
