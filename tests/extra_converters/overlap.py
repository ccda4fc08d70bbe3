"""A converter that records when each call ran, to count how many ran at the same time.

Options: ``intervals`` (the file each call appends ``start end pid`` to), ``hold_s`` (how long a
call lasts), and ``peers``: with it, a call lasts until that many calls have started (each
leaves a marker beside ``intervals``) or ``hold_s`` passed. That makes "these steps can run at
once" independent of how far apart a busy machine starts them; a mediator that ran them one at
a time still shows a peak of 1 (each call waits ``hold_s`` for peers that never come)."""

import os
import time
from pathlib import Path
from typing import Any, Mapping

from converters.base import ConversionResult, ConverterSpec

SPEC = ConverterSpec(name="overlap", version="1.0.0", kinds=frozenset({"*"}), timeout_s=300, description="records its run interval")


def convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult:
    started = time.time()
    deadline = started + float(options.get("hold_s", 1.0))
    peers = int(options.get("peers", 0))
    markers = Path(options["intervals"]).with_name(Path(options["intervals"]).name + ".started")
    markers.mkdir(exist_ok=True)
    (markers / f"{os.getpid()}-{started}").touch()
    while time.time() < deadline and not (peers and len(list(markers.iterdir())) >= peers):
        time.sleep(0.05)
    with open(options["intervals"], "a") as fh:
        fh.write(f"{started} {time.time()} {os.getpid()}\n")
    return ConversionResult(metadata={"pid": os.getpid()})
