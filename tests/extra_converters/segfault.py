"""A converter that dies of a real segmentation fault on every input."""

from pathlib import Path
from typing import Any, Mapping

from converters.base import ConversionResult, ConverterSpec
from tests.crashers import segfault

SPEC = ConverterSpec(name="segfault", version="1.0.0", kinds=frozenset({"*"}), timeout_s=30, retries=2)


def convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult:
    segfault(None)
    return ConversionResult()
