"""A converter that records when each call ran, to count how many ran at the same time."""

import os
import time
from pathlib import Path
from typing import Any, Mapping

from converters.base import ConversionResult, ConverterSpec

SPEC = ConverterSpec(name="overlap", version="1.0.0", kinds=frozenset({"*"}), timeout_s=300, description="records its run interval")


def convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult:
    started = time.time()
    time.sleep(float(options.get("hold_s", 1.0)))
    with open(options["intervals"], "a") as fh:
        fh.write(f"{started} {time.time()} {os.getpid()}\n")
    return ConversionResult(metadata={"pid": os.getpid()})
