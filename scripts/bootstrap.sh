#!/usr/bin/env bash
# Set up a fresh machine for fileflow: the Debian packages the converters use (when missing),
# then the project's virtual environment at .venv/ from the lock file. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui python3-uno  # office -> PDF
  tesseract-ocr tesseract-ocr-osd  # OCR, with script detection for choosing the language
  tesseract-ocr-eng tesseract-ocr-deu tesseract-ocr-fra tesseract-ocr-spa tesseract-ocr-ita  # the default
  tesseract-ocr-nld tesseract-ocr-por tesseract-ocr-pol tesseract-ocr-rus                    # FILEFLOW_OCR_ALLOWED_LANGUAGES
  libmagic1       # file type by content
  ffmpeg          # video and audio transcode
  librsvg2-bin    # SVG previews (rsvg-convert)
  libarchive13    # 7z, RAR, tar archives (libarchive-c)
  fonts-dejavu-core  # Latin, Greek, Cyrillic, Hebrew
  fonts-noto-cjk fonts-hosny-amiri fonts-lohit-deva fonts-tlwg-garuda  # CJK, Arabic, Devanagari, Thai for office -> PDF
  chromium        # headless browser for the Prefect UI test (tests/test_browser.py), driven by Playwright
)
UV_VERSION=0.13.8

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "bootstrap: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    SUDO="sudo"
  fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -m uv --version 2>/dev/null | grep -q "uv $UV_VERSION"; then
  echo "bootstrap: installing uv $UV_VERSION"
  "$PYTHON" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
fi
UV_PYTHON_DOWNLOADS=never "$PYTHON" -m uv sync --frozen --compile-bytecode --python "$PYTHON" -q
echo "bootstrap: ready (.venv/bin/fileflow)"
