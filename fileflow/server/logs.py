"""The log setup every fileflow process's ``main`` calls first.

``logging.basicConfig`` alone does nothing once Prefect is imported: Prefect's own logging setup
has already given the root logger its console handler and the level WARNING, so the INFO lines of
fileflow's loggers (a worker serving its pools, a step re-attached to its earlier run, a bucket
prepared) were dropped from every process's log while WARNING lines showed. fileflow's packages
get the level themselves; Prefect's loggers keep Prefect's settings.
"""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: the top-level packages whose loggers are fileflow's
OWN = ("fileflow", "flows", "converters", "blocks", "deployments")


def setup_logging(level: int | str = logging.INFO) -> None:
    """Log fileflow's own lines at ``level`` (a name such as ``"INFO"`` or a number)."""
    level = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    logging.basicConfig(level=level, format=FORMAT)  # a handler when Prefect has not set one up
    for name in OWN:
        logging.getLogger(name).setLevel(level)
