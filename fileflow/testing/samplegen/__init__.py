"""Deterministic sample files for the tests and the benchmarks, made on the fly (nothing is
downloaded); :data:`SAMPLES` is the folder of the small committed ones (``tests/samples``)."""

from pathlib import Path

#: the committed samples, in the source tree (a checkout, not an installed wheel)
SAMPLES = Path(__file__).resolve().parents[3] / "tests" / "samples"
