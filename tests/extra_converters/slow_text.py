"""``text_extract`` that takes ``SLOW_S`` seconds on inputs carrying a marker, and is the real
converter otherwise: a step that is surely in progress when a test stops its worker.

``FILEFLOW_CONVERTER_MODULES='{"text_extract": "tests.extra_converters.slow_text"}'``.
"""

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from converters import text_extract
from converters.base import ConversionResult

SLOW_MARKER = b"FILEFLOW-TEST-SLOW"
SLOW_S = 8.0

SPEC = replace(text_extract.SPEC, version=f"{text_extract.SPEC.version}+slow", timeout_s=60.0)


def convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult:
    with open(src, "rb") as fh:
        if SLOW_MARKER in fh.read(4096):
            time.sleep(SLOW_S)
    return text_extract.convert(src, out_dir, options)
