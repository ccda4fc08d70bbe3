"""Every private name of Prefect that fileflow uses, fenced in this one module.

The warm worker (:mod:`fileflow.server.worker`) is a Prefect ``BaseWorker`` that changes what
Prefect offers no public hook for: how a poll asks for runs (a batch, not 200), what a pool's
snapshot does (no warning about its ``process`` type), what a claim writes (the claiming process
named in the ``Pending`` state), waiting until a claimed batch has started. That takes Prefect's
private names. Each is used here and nowhere else, through one
accessor of a name of our own:

====================================  ==============================================
Prefect (``BaseWorker``)              here (:class:`HookedWorker`)
====================================  ==============================================
``_record_work_pool_snapshot`` hook   :meth:`HookedWorker.on_work_pool`
``_get_scheduled_flow_runs`` hook     :meth:`HookedWorker.scheduled_flow_runs`
``_propose_pending_state`` hook       :meth:`HookedWorker.claim`
``_sync_and_initialize()``            :meth:`HookedWorker.sync`
``_work_pool_name``                   :attr:`HookedWorker.pool_name`
``_work_queues``                      :attr:`HookedWorker.queue_names`
``_work_pool``                        :attr:`HookedWorker.synced_work_pool`, :meth:`~HookedWorker.keep_work_pool`
``_limiter``                          :attr:`HookedWorker.capacity`
``_submitting_flow_run_ids``          :attr:`HookedWorker.submitting`
``_description`` (class)              :func:`described`
====================================  ==============================================

``tests/test_prefect_private.py`` checks on the installed Prefect that each still exists with
the kind and signature used here and that Prefect still calls the hooks, and that no other
module of fileflow uses a private Prefect name: an upgrade that renames or removes one fails
there, not in a worker that silently stops claiming runs.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, TypeVar
from uuid import UUID

import anyio
from prefect.workers.base import BaseJobConfiguration, BaseVariables, BaseWorker, BaseWorkerResult

W = TypeVar("W", bound=type)
C = TypeVar("C", bound=BaseJobConfiguration)
V = TypeVar("V", bound=BaseVariables)
R = TypeVar("R", bound=BaseWorkerResult)

#: each private name and what it is on ``BaseWorker``: "hook" (a method Prefect calls, overridden
#: here), "method" (called here), "attribute" (set by ``BaseWorker.__init__``), "class attribute"
PRIVATE_NAMES: dict[str, str] = {
    "_record_work_pool_snapshot": "hook",
    "_get_scheduled_flow_runs": "hook",
    "_propose_pending_state": "hook",
    "_sync_and_initialize": "method",
    "_work_pool_name": "attribute",
    "_work_queues": "attribute",
    "_work_pool": "attribute",
    "_limiter": "attribute",
    "_submitting_flow_run_ids": "attribute",
    "_description": "class attribute",
}


def described(text: str) -> Callable[[W], W]:
    """Class decorator: the worker type's description, as ``prefect worker`` lists it."""

    def describe(cls: W) -> W:
        cls._description = text
        return cls

    return describe


class HookedWorker(BaseWorker[C, V, R], abc.ABC):
    """``BaseWorker`` whose private hooks call methods of our own names, with accessors for the
    private state the warm worker reads. (``abc.ABC`` among its bases keeps Prefect from
    registering it as a worker type: it has none.)"""

    # -- hooks: Prefect calls these; subclasses override the methods they call -----------------
    def _record_work_pool_snapshot(self, work_pool: Any) -> None:
        self.on_work_pool(work_pool)

    async def _get_scheduled_flow_runs(self) -> list[Any]:
        return await self.scheduled_flow_runs()

    async def _propose_pending_state(self, flow_run: Any) -> bool:
        return await self.claim(flow_run)

    def on_work_pool(self, work_pool: Any) -> None:
        """The pool as the server sent it at a sync (default: Prefect's own handling)."""
        BaseWorker._record_work_pool_snapshot(self, work_pool)

    async def scheduled_flow_runs(self) -> list[Any]:
        """The runs one poll claims from (default: Prefect's own query)."""
        return await BaseWorker._get_scheduled_flow_runs(self)

    async def claim(self, flow_run: Any) -> bool:
        """Propose ``Pending`` for a run this worker takes; whether it won (default: Prefect's own)."""
        return await BaseWorker._propose_pending_state(self, flow_run)

    # -- accessors -----------------------------------------------------------------------------
    async def sync(self) -> None:
        """One heartbeat: the pool and its queues read, the worker registered (Prefect's sync)."""
        await self._sync_and_initialize()

    @property
    def pool_name(self) -> str:
        return self._work_pool_name

    @property
    def queue_names(self) -> set[str]:
        """The work queues the worker was started on (empty: all of the pool's)."""
        return self._work_queues

    @property
    def synced_work_pool(self) -> Any | None:
        """The pool as of the last sync; None before the first (Prefect's ``work_pool`` raises then)."""
        return self._work_pool

    def keep_work_pool(self, work_pool: Any) -> None:
        self._work_pool = work_pool

    @property
    def capacity(self) -> anyio.CapacityLimiter | None:
        """The limiter of runs in flight; None before ``setup`` or without a limit (``limiter`` raises then)."""
        return self._limiter

    @property
    def submitting(self) -> set[UUID]:
        """Runs claimed by the last poll and not yet handed to ``run``."""
        return self._submitting_flow_run_ids
