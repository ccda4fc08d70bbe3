"""``reprocess``: files already in storage through the pipeline again, at a lower priority than uploads.

Deployed as ``reprocess/reprocess`` on the ``reprocess`` queue of the mediator pool (served after
uploads). Its selection, what it redoes and how it resumes are in :mod:`fileflow.ops.reprocess`; a
crashed run retried (or started again with the same ``job``) carries on where it stopped.
"""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from fileflow.ops.reprocess import Selection, run_job, with_prefix
from fileflow.names import REPROCESS_FLOW
from fileflow.settings import PipelineSettings, StorageSettings


def _name() -> str:
    params = flow_run.parameters
    return f"reprocess:{params.get('job') or 'run'}" + (" (dry run)" if params.get("dry_run") else "")


@flow(name=REPROCESS_FLOW, flow_run_name=_name, persist_result=False)
async def reprocess(
    selection: Selection = Selection(),
    job: str | None = None,
    workers: int = 2,
    dry_run: bool = False,
    storage_prefix: str | None = None,
) -> dict:
    """Reprocess the files ``selection`` picks (by default: those with outdated or failed steps).

    ``job`` names the persisted plan and progress; without one, the flow run's id does, so a
    retry of the same run resumes it. ``workers`` bounds files in flight in this run; the
    ``fileflow-reprocess`` limit bounds them across all runs.
    """
    report = await run_job(
        selection,
        job or str(flow_run.id),
        storage=with_prefix(StorageSettings().config(), storage_prefix),
        pipeline=PipelineSettings(),
        workers=workers,
        dry_run=dry_run,
    )
    return report.model_dump()
