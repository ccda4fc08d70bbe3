"""Every Prefect object fileflow creates or looks for, named once.

Work pools, deployments, flows, global concurrency limits, work queues, automations and blocks
are found by name across processes (the mediator, the workers, the exporter, the CLI, the Helm
chart's hooks), so each name lives here and nowhere else. The Helm chart and ``prefect.yaml``
spell the same names; ``tests/test_names.py`` holds them to this module.
"""

from __future__ import annotations

# -- work pools -----------------------------------------------------------------------------
MEDIATOR_POOL = "fileflow-mediator"
"""Where every file's run (the ``process-file`` flow) and ``reprocess`` runs wait for a mediator."""

K8S_POOLS: tuple[str, ...] = ("converter-video-k8s",)
"""Kubernetes work pools (a Job per run, served by prefect-kubernetes' worker in a cluster);
their job templates are in ``deployments/`` (``deployments.setup.K8S_POOL_TEMPLATES``)."""


def pool_name(converter: str) -> str:
    """The work pool of a converter's ``pool`` placement."""
    return f"converter-{converter}"


# -- flows and deployments ------------------------------------------------------------------
ROUTER_FLOW = "process-file"
"""One run of it per file: the router and the steps of the file's kind."""
ROUTER_DEPLOYMENT = f"{ROUTER_FLOW}/{ROUTER_FLOW}"
STEP_FLOW = "converter-step"
"""One step on a converter's work pool (``flows/step.py``)."""
REPROCESS_FLOW = "reprocess"
REPROCESS_DEPLOYMENT = f"{REPROCESS_FLOW}/{REPROCESS_FLOW}"


def step_deployment(converter: str) -> str:
    """The deployment that runs ``converter``'s steps on its pool."""
    return f"{STEP_FLOW}/{converter}"


STEP_TASK_NAME = "step"
"""The one task every step runs as (its run is named after the converter)."""

# -- operators' limits (global concurrency limits) and queues -------------------------------
ACTIVE_FILES = "fileflow-active-files"
REPROCESS_FILES = "fileflow-reprocess"
REPROCESS_RATE = "fileflow-reprocess-rate"
REPROCESS_QUEUE = "reprocess"
"""The low-priority work queue on every pool that reprocessing's runs wait in."""


def converter_limit(converter: str) -> str:
    """The global concurrency limit on steps of ``converter`` at once."""
    return f"fileflow-converter-{converter}"


# -- automations ----------------------------------------------------------------------------
CRASH_AUTOMATION = "fileflow-crash-silent-runs"
PENDING_AUTOMATION = "fileflow-crash-stranded-pending"
RESUME_AUTOMATION = "fileflow-resume-crashed-router"
NOTIFY_AUTOMATION = "fileflow-notify-webhook"
"""Retired (the webhook goes through the callback outbox): paused by ``deployments.notify.ensure``."""

# -- blocks ---------------------------------------------------------------------------------
RESULTS_BLOCK_PREFIX = "fileflow-results-"
"""Followed by a digest of the storage location the results are kept in."""

# -- events ---------------------------------------------------------------------------------
FILE_COMPLETED = "fileflow.file.completed"
FILE_FAILED = "fileflow.file.failed"
FILE_RESOURCE_PREFIX = "fileflow.file."
