"""A converter that takes ``options["seconds"]`` to finish and records that it did."""

import time
from pathlib import Path
from typing import Any, Mapping

from converters.base import ConversionResult, ConverterSpec

SPEC = ConverterSpec(name="sleepy", version="1.0.0", kinds=frozenset({"*"}), timeout_s=60, description="sleeps")


def convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult:
    time.sleep(float(options["seconds"]))
    with open(options["done"], "a") as fh:
        fh.write("done\n")
    return ConversionResult(metadata={"slept": float(options["seconds"])})
