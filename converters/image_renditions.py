"""Images: a web rendition, JPEG previews and the picture's metadata (EXIF included).

Reads JPEG, PNG, GIF (first frame), TIFF (first page; a fax's unequal resolutions such as
204x98 dpi made square, see :func:`display_size`), BMP, WebP, AVIF and HEIC/HEIF (through
pillow-heif). Outputs, all with the EXIF orientation applied:

* ``web.jpg`` - or ``web.png`` when the picture really has transparency - at most ``web_max``
  pixels (default 2048) on the long side (pictures longer than ``preview_max_aspect``:1 get up
  to 4x that, so that their short side keeps ``web_max / 4`` pixels), in sRGB, without EXIF
  (no GPS leaks, no second rotation by the browser);
* ``preview-<size>.jpg`` for every size in ``preview_sizes`` (default 160, 480, 1280): long side
  exactly ``size``, never upscaled, transparency flattened onto white. A picture more than
  ``preview_max_aspect`` (default 4) times longer than wide, or wider than long, is previewed
  by its middle part of exactly that shape (a 20000x1500 panorama: 1280x320, not 1280x96);
  ``web`` always shows the whole picture.

The pixel count is checked from the header before anything is decoded (option ``max_pixels``,
default 100 megapixels): a decompression bomb fails with :class:`LimitExceeded` without
allocating its pixels. Broken, truncated or foreign bytes fail with :class:`CorruptInput`;
truncated images are never "completed" with grey (``LOAD_TRUNCATED_IMAGES`` stays off).

JPEGs are decoded with ``draft()`` at the smallest scale that still covers the largest output
and every output is resized *before* it is rotated: cheap, and the rotation is applied
explicitly from the orientation read beforehand, so the result is upright.

:func:`open_image` and :func:`display_image` are shared with the OCR converter.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

from converters.base import ConversionResult, ConverterSpec, Rendition, require
from converters.geometry import aspect_crop, fit_long_side
from converters.options import int_option, max_aspect, preview_sizes
from fileflow.errors import CorruptInput, LimitExceeded, UnsupportedInput

SPEC = ConverterSpec(
    name="image_renditions",
    version="1.2.0",
    kinds=frozenset({"image"}),
    timeout_s=120,
    memory_mb=3072,
    retries=1,
    description="Web rendition (JPEG/PNG, oriented, <= 2048 px), JPEG previews, size/format/EXIF metadata",
    reads=frozenset({"preview_sizes"}),
)

DEFAULT_WEB_MAX = 2048
DEFAULT_MAX_PIXELS = 100_000_000
DEFAULT_JPEG_QUALITY = 85

#: the Pillow formats this pipeline decodes (MPO opens through JPEG); the rest is refused unread
FORMATS = ("JPEG", "PNG", "GIF", "TIFF", "BMP", "DIB", "WEBP", "HEIF", "AVIF")

#: EXIF orientation -> the transpose that shows the picture upright (as ImageOps.exif_transpose)
_TRANSPOSE = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE",
              6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}

# EXIF tags that describe the file's layout or embed other blobs, not the picture
_SKIP_TAGS = {
    0x0100, 0x0101, 0x0102, 0x0103, 0x0106, 0x0111, 0x0115, 0x0116, 0x0117, 0x011C,
    0x0140, 0x0142, 0x0143, 0x0144, 0x0145, 0x0152, 0x0153, 0x0201, 0x0202, 0x02BC,
    0x83BB, 0x8649, 0x8769, 0x8825, 0x8773, 0x927C, 0xA005,
}
_MAX_STR = 512
_MAX_SEQ = 64


# --------------------------------------------------------------------------- opening
def _import_pillow():
    Image = require("PIL.Image", "pillow")
    heif = require("pillow_heif", "pillow-heif")
    heif.register_heif_opener()  # idempotent; registers HEIF/HEIC with Pillow
    return Image


def open_image(src: Path, max_pixels: int = DEFAULT_MAX_PIXELS):
    """Open ``src`` lazily (header only) and refuse it before decoding if it is too large.

    Returns the Pillow image positioned on its first frame; nothing has been decoded yet.
    """
    Image = _import_pillow()
    if src.stat().st_size == 0:
        raise CorruptInput("the image file is empty (0 bytes)")
    previous = Image.MAX_IMAGE_PIXELS
    # Pillow's own bomb check runs inside open(); align it with our limit so a header that
    # declares more than 2x max_pixels is refused there, the rest right below.
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                im = Image.open(src, formats=FORMATS)
            except Image.DecompressionBombError:
                raise LimitExceeded(
                    f"the image header declares more than twice the limit of {max_pixels:,} pixels "
                    "(a decompression bomb?); it was refused before decoding"
                ) from None
            except Image.UnidentifiedImageError:
                raise _unidentified(Image, src) from None
            except (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError,
                    ZeroDivisionError, OverflowError) as exc:
                raise CorruptInput(f"the image header is broken: {exc}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    width, height = im.size
    if width <= 0 or height <= 0:
        raise CorruptInput(f"the image header declares an empty size ({width}x{height})")
    if width * height > max_pixels:
        im.close()
        raise LimitExceeded(
            f"the image is {width}x{height} = {width * height:,} pixels, more than the limit of "
            f"{max_pixels:,}; it was refused before decoding"
        )
    return im


def _unidentified(Image, src: Path) -> Exception:
    """Corrupt bytes, or a real image in a format this pipeline does not decode?"""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(src) as other:  # header only, nothing is decoded
                fmt = other.format
    except Exception:  # noqa: BLE001 - any failure means: not an image we can name
        return CorruptInput("the file is not a readable image (unknown or damaged format)")
    return UnsupportedInput(
        f"{fmt} images are not supported; convert the picture to JPEG, PNG, TIFF or WebP and upload it again"
    )


def orientation_of(im) -> int:
    try:
        value = int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the picture
        return 1
    return value if value in _TRANSPOSE else 1


def _load(im) -> None:
    try:
        im.load()
    except MemoryError:
        raise LimitExceeded("decoding the image needs more memory than this step may use") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError,
            ZeroDivisionError, OverflowError) as exc:
        raise CorruptInput(f"the image data is damaged or truncated: {exc}") from None


# --------------------------------------------------------------------------- pixels
def _prepare_mode(im):
    """A mode that resizes well: RGB, RGBA, L, LA or CMYK."""
    mode = im.mode
    if mode in ("RGB", "RGBA", "L", "LA", "CMYK"):
        return im
    if mode in ("P", "PA"):
        return im.convert("RGBA" if (mode == "PA" or "transparency" in im.info) else "RGB")
    if mode == "1":
        return im.convert("L")
    if mode.startswith("I;16"):
        return im.convert("I").point(lambda v: v * (1 / 257)).convert("L")
    if mode in ("I", "F"):
        low, high = im.getextrema()
        if high is None or low is None or high <= low:
            return im.convert("L")
        scale = 255.0 / (high - low)
        return im.point(lambda v: (v - low) * scale).convert("L")
    if mode in ("RGBa", "La"):
        return im.convert("RGBA" if mode == "RGBa" else "LA")
    try:
        return im.convert("RGB")
    except ValueError:
        raise UnsupportedInput(f"images in colour mode {mode} are not supported; save it as RGB") from None


def _to_srgb(im, icc: bytes | None):
    """RGB or RGBA in sRGB, applying an embedded ICC profile when there is one."""
    alpha = None
    if im.mode in ("RGBA", "LA"):
        alpha = im.getchannel("A")
        im = im.convert("RGB" if im.mode == "RGBA" else "L")
    if icc and im.mode in ("RGB", "CMYK"):
        try:
            ImageCms = require("PIL.ImageCms", "pillow")
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            im = ImageCms.profileToProfile(im, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except Exception:  # noqa: BLE001 - a bad profile: fall back to the plain conversion
            pass
    if im.mode != "RGB":
        im = im.convert("RGB")
    if alpha is not None:
        lowest = alpha.getextrema()[0]
        if lowest < 255:  # transparency actually used
            im.putalpha(alpha)
    return im


def display_size(im) -> tuple[int, int]:
    """The stored picture's size with square pixels: a TIFF whose horizontal and vertical
    resolutions differ (a fax at 204x98 dpi has pixels twice as tall as wide) is stretched
    along its coarser side, so that it is not shown squashed. Other formats: ``im.size``."""
    width, height = im.size
    if im.format != "TIFF":
        return width, height
    try:
        x_dpi, y_dpi = (float(v) for v in im.info.get("dpi") or (0, 0))
    except (TypeError, ValueError):
        return width, height
    if not (x_dpi > 0 and y_dpi > 0) or abs(x_dpi / y_dpi - 1) < 0.05 or not 0.1 <= x_dpi / y_dpi <= 10:
        return width, height
    if x_dpi > y_dpi:
        return width, max(1, round(height * x_dpi / y_dpi))
    return max(1, round(width * y_dpi / x_dpi)), height


def display_image(im, long_side: int | None, orientation: int | None = None):
    """Decode ``im`` (from :func:`open_image`) into an upright sRGB RGB/RGBA image.

    The long side is at most ``long_side`` (None: full size). JPEGs are drafted at the
    smallest scale that covers it; the resize happens before the rotation.
    """
    Image = require("PIL.Image", "pillow")
    if orientation is None:
        orientation = orientation_of(im)
    icc = im.info.get("icc_profile")
    shown = display_size(im)
    target = fit_long_side(*shown, long_side) if long_side else shown
    if im.format in ("JPEG", "MPO") and target != im.size:
        try:
            im.draft(None, target)  # decodes at 1/2, 1/4 or 1/8 while still >= target
        except (OSError, ValueError):
            pass
    _load(im)
    try:
        work = _prepare_mode(im)
        if work.size != target:
            work = work.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
        work = _to_srgb(work, icc)
        if orientation in _TRANSPOSE:
            work = work.transpose(getattr(Image.Transpose, _TRANSPOSE[orientation]))
    except MemoryError:
        raise LimitExceeded("processing the image needs more memory than this step may use") from None
    except (OSError, SyntaxError, EOFError) as exc:
        raise CorruptInput(f"the image data is damaged or truncated: {exc}") from None
    if work is im:  # an RGB picture that needed nothing: detach it from the open file
        work = im.copy()
    return work


def _flatten(im):
    """RGB for JPEG: transparency composited onto white."""
    if im.mode == "RGB":
        return im
    Image = require("PIL.Image", "pillow")
    background = Image.new("RGB", im.size, (255, 255, 255))
    background.paste(im, mask=im.getchannel("A"))
    return background


# --------------------------------------------------------------------------- metadata
def _json_value(value: Any, depth: int = 0) -> Any:
    if depth > 3:
        return None
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.replace("\x00", "").strip()
        return text[:_MAX_STR]
    if isinstance(value, (bytes, bytearray)):
        if len(value) <= 16:
            return bytes(value).hex()
        return None  # long binary blobs (maker notes, thumbnails) are dropped
    numerator = getattr(value, "numerator", None)
    denominator = getattr(value, "denominator", None)
    if numerator is not None and denominator is not None:  # IFDRational, Fraction
        try:
            if not denominator:
                return None
            result = float(numerator) / float(denominator)
        except (TypeError, ValueError, ZeroDivisionError, OverflowError):
            return None
        return round(result, 6) if math.isfinite(result) else None
    if isinstance(value, (tuple, list)):
        if len(value) > _MAX_SEQ:
            return None
        return [_json_value(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v, depth + 1) for k, v in list(value.items())[:_MAX_SEQ]}
    return None


def _user_comment(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)) and len(value) >= 8:
        head, body = bytes(value[:8]), bytes(value[8:])
        if head.startswith(b"ASCII"):
            return body.decode("ascii", "replace")
        if head.startswith(b"UNICODE"):
            try:
                return body.decode("utf-16-be" if body[:1] == b"\x00" else "utf-16-le", "replace")
            except Exception:  # noqa: BLE001
                return None
    return value


def _tags(items: Iterable[tuple[int, Any]], names: Mapping[int, str], skip: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tag, raw in items:
        if skip and tag in _SKIP_TAGS:
            continue
        if tag == 0x9286:  # UserComment: 8 bytes of charset, then text
            raw = _user_comment(raw)
        value = _json_value(raw)
        if value is None or value == "" or value == []:
            continue
        out[names.get(tag, f"0x{tag:04x}")] = value
    return out


def _gps_decimal(gps: Mapping[str, Any]) -> dict[str, float] | None:
    def degrees(key: str, ref_key: str, negative: str) -> float | None:
        parts = gps.get(key)
        if not isinstance(parts, list) or len(parts) != 3 or any(p is None for p in parts):
            return None
        value = parts[0] + parts[1] / 60 + parts[2] / 3600
        if str(gps.get(ref_key, "")).upper().startswith(negative):
            value = -value
        return round(value, 7)

    lat = degrees("GPSLatitude", "GPSLatitudeRef", "S")
    lon = degrees("GPSLongitude", "GPSLongitudeRef", "W")
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    result = {"latitude": lat, "longitude": lon}
    altitude = gps.get("GPSAltitude")
    if isinstance(altitude, (int, float)):
        below = gps.get("GPSAltitudeRef") in ("01", 1)
        result["altitude"] = round(-altitude if below else altitude, 2)
    return result


def exif_dict(im) -> dict[str, Any]:
    """Readable EXIF: base IFD and Exif sub-IFD tags by name, GPS tags under ``GPSInfo``."""
    ExifTags = require("PIL.ExifTags", "pillow")
    try:
        exif = im.getexif()
    except Exception:  # noqa: BLE001 - unreadable EXIF is simply absent
        return {}
    if not exif:
        return {}
    out: dict[str, Any] = {}
    try:
        out.update(_tags(exif.items(), ExifTags.TAGS))
        out.update(_tags(exif.get_ifd(ExifTags.IFD.Exif).items(), ExifTags.TAGS))
        gps = _tags(exif.get_ifd(ExifTags.IFD.GPSInfo).items(), ExifTags.GPSTAGS, skip=False)
    except Exception:  # noqa: BLE001 - keep what was readable
        return out
    if gps:
        out["GPSInfo"] = gps
    return out


def frame_count(im) -> int:
    try:
        return max(1, int(getattr(im, "n_frames", 1)))
    except Exception:  # noqa: BLE001 - a broken later frame does not change the first one
        return 1


# --------------------------------------------------------------------------- convert
def web_long_side(width: int, height: int, web_max: int, aspect: float) -> int:
    """``web_max``, stretched for pictures longer than ``aspect``:1 so that their short side
    keeps ``web_max / aspect`` pixels where it has them (a panorama's web rendition is not a
    stripe), up to four times ``web_max``."""
    long, short = max(width, height), min(width, height)
    if long <= aspect * short:
        return web_max
    return min(4 * web_max, max(web_max, round(web_max * long / (aspect * short))))


def convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult:
    max_pixels = int_option(options, "max_pixels", DEFAULT_MAX_PIXELS, minimum=1)
    web_max = int_option(options, "web_max", DEFAULT_WEB_MAX, minimum=1)
    quality = min(95, int_option(options, "jpeg_quality", DEFAULT_JPEG_QUALITY, minimum=1))
    # without the option the default is kept smallest first, as this converter always had it
    sizes = preview_sizes(options, accept_single=False)  # largest first
    aspect = max_aspect(options)
    out_dir.mkdir(parents=True, exist_ok=True)

    im = open_image(src, max_pixels)
    with im:
        fmt = im.format
        mode = im.mode
        raw_w, raw_h = display_size(im)
        orientation = orientation_of(im)
        swap = orientation in (5, 6, 7, 8)
        width, height = (raw_h, raw_w) if swap else (raw_w, raw_h)
        # previews show at most a 4:1 part of the picture (geometry.aspect_crop): decoded large
        # enough that the part still covers the largest preview
        left, top, right, bottom = aspect_crop(width, height, aspect)
        shown_w, shown_h = right - left, bottom - top
        zoom = max(width, height) / max(shown_w, shown_h)
        web_long = web_long_side(width, height, web_max, aspect)
        largest = max([min(web_long, max(width, height))]
                      + [min(round(s * zoom), max(width, height)) for s in sizes])
        # counting frames seeks through them (TIFF pages): done before the first one is decoded,
        # or Pillow would reload it from the file after ``with`` has closed it
        frames = frame_count(im)
        exif = exif_dict(im)
        work = display_image(im, largest, orientation)

    renditions: list[Rendition] = []
    transparent = work.mode == "RGBA"
    web_size = fit_long_side(width, height, web_long)
    web = work if work.size == web_size else work.resize(web_size, _resample(), reducing_gap=3.0)
    if transparent:
        web.save(out_dir / "web.png", "PNG", optimize=False, compress_level=6)
        renditions.append(Rendition("web", "web.png", "image/png", web.width, web.height))
    else:
        web.save(out_dir / "web.jpg", "JPEG", quality=quality, optimize=True, progressive=True)
        renditions.append(Rendition("web", "web.jpg", "image/jpeg", web.width, web.height))

    flat = _flatten(work)
    factor = work.width / width
    source = flat if (shown_w, shown_h) == (width, height) else flat.crop(
        (round(left * factor), round(top * factor), round(right * factor), round(bottom * factor)))
    for size in sizes:  # largest first: each preview is made from the previous, larger one
        target = fit_long_side(shown_w, shown_h, size)
        preview = source if source.size == target else source.resize(target, _resample(), reducing_gap=3.0)
        name = f"preview-{size}.jpg"
        preview.save(out_dir / name, "JPEG", quality=quality, optimize=True)
        renditions.append(Rendition("preview", name, "image/jpeg", preview.width, preview.height))
        source = preview

    metadata: dict[str, Any] = {
        "width": width,
        "height": height,
        "format": fmt,
        "mode": mode,
        "frames": frames,
        "animated": frames > 1 and fmt in ("GIF", "PNG", "WEBP", "AVIF"),  # TIFF pages, MPO views
        "orientation": orientation,
        "has_alpha": transparent,
        "preview_crop": None if (shown_w, shown_h) == (width, height) else [round(left), round(top), round(right), round(bottom)],
        "exif": exif,
    }
    gps = _gps_decimal(exif.get("GPSInfo", {})) if exif.get("GPSInfo") else None
    if gps:
        metadata["gps"] = gps
    return ConversionResult(renditions=renditions, metadata=metadata)


def _resample():
    return require("PIL.Image", "pillow").Resampling.LANCZOS
