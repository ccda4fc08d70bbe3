"""``text_extract`` that segfaults or hangs on inputs carrying a marker, and works on the rest.

It replaces the built-in through the documented setting, as an operator would try a fixed
build: ``FILEFLOW_CONVERTER_MODULES='{"text_extract": "tests.extra_converters.faulty_text"}'``.
So one file of a batch can crash or hang its step on the distributed stack while every other
file goes through the real converter. Its timeout is short, to keep the hang test quick, with room
for a loaded machine: a 6 s timeout once failed a good file whose step took 6.6 s in a replacement
child, which then paid its converter's import inside the step (now outside: the step's prepare).
"""

from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from converters import text_extract
from converters.base import ConversionResult
from tests.crashers import hang, segfault

SEGFAULT_MARKER = b"FILEFLOW-TEST-SEGFAULT"
HANG_MARKER = b"FILEFLOW-TEST-HANG"

SPEC = replace(text_extract.SPEC, version=f"{text_extract.SPEC.version}+faulty", timeout_s=12.0, retries=2)


def convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult:
    with open(src, "rb") as fh:
        head = fh.read(4096)
    if SEGFAULT_MARKER in head:
        segfault(None)
    if HANG_MARKER in head:
        hang(None)
    return text_extract.convert(src, out_dir, options)
