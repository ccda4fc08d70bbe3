"""One Prefect API client and one default result storage for every flow run of a process."""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fileflow.engine.mediator import Runtime


@asynccontextmanager
async def prefect_session(rt: Runtime | None) -> AsyncIterator[None]:
    """What every flow run of one process shares with the others, instead of building it per run
    (a ``fileflow process`` batch, a warm worker).

    - One Prefect API client (Prefect's ``AsyncClientContext``): every flow run without a
      client in its context builds one (an HTTP client, an SSL context, a version check).
    - The results block as Prefect's default result storage: without one, every flow run's
      engine asks the server which default it has, through a synchronous client of its own.
      Only the steps persist results, and they name this block themselves. Without a runtime
      (a worker of converter pools only, whose runs persist nothing) there is none to set.
    - Against a plain-HTTP API (Prefect's embedded server, or a ``PREFECT_API_URL`` of
      ``http://``), the one-certificate CA bundle of ``fileflow up`` (:mod:`fileflow.home`): an SSL
      context with the system's bundle costs 15 ms to build, and Prefect builds one per client.
    """
    from prefect.context import AsyncClientContext
    from prefect.settings import (
        PREFECT_API_SSL_CERT_FILE,
        PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK,
        get_current_settings,
        temporary_settings,
    )

    from fileflow.home import client_tls_env

    tls = client_tls_env(get_current_settings().api.url or "http://127.0.0.1 (embedded)", dict(os.environ))
    with temporary_settings(updates={PREFECT_API_SSL_CERT_FILE: tls["PREFECT_API_SSL_CERT_FILE"]} if tls else {}):
        async with AsyncClientContext.get_or_create():
            if rt is None:
                yield
                return
            await rt.results_block()
            with temporary_settings(updates={PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK: rt.results_slug}):
                yield
