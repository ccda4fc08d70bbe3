"""Version 2 of a converter that counts its executions (to prove what a re-run skips)."""

from pathlib import Path
from typing import Any, Mapping

from converters.base import ConversionResult, ConverterSpec

SPEC = ConverterSpec(name="counter", version="2.0.0", kinds=frozenset({"*"}), timeout_s=30, description="counts runs")


def convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult:
    with open(options["counter"], "a") as fh:
        fh.write("2\n")
    return ConversionResult(metadata={"version": 2})
