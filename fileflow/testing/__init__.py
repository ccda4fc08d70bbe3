"""What the tests and the benchmarks share (as Prefect keeps its own in ``prefect.testing``).

:mod:`fileflow.testing.samplegen` makes the inputs both feed the pipeline: deterministic samples
of every kind, test-sized and realistic, and the hostile cases. It lives in the package, not
under ``tests/``, so that ``bench/`` never imports ``tests/``. Nothing in fileflow's product
imports it (``tests/test_architecture.py``: it is the top layer).
"""
