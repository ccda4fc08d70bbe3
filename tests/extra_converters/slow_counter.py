"""A converter that counts its executions and takes a second and a half: two runs of the same
file started together are surely in it at the same time unless something makes one wait."""

import time
from pathlib import Path
from typing import Any, Mapping

from converters.base import ConversionResult, ConverterSpec

SPEC = ConverterSpec(name="slow_counter", version="1.0.0", kinds=frozenset({"*"}), timeout_s=30,
                     description="counts runs, slowly")


def convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult:
    time.sleep(1.5)
    with open(options["counter"], "a") as fh:
        fh.write("1\n")
    return ConversionResult(metadata={"counted": True})
