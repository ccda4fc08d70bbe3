"""A converter that never returns."""

from pathlib import Path
from typing import Any, Mapping

from converters.base import ConversionResult, ConverterSpec
from tests.crashers import hang

SPEC = ConverterSpec(name="hang", version="1.0.0", kinds=frozenset({"*"}), timeout_s=1.5, retries=1)


def convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult:
    hang(None)
    return ConversionResult()
