"""A Prefect client call against one API URL from synchronous test code."""

from __future__ import annotations

import asyncio


def call_api(api_url: str, make):
    """``await make(client)`` with a client of the API at ``api_url``; its result."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def go():
        with temporary_settings({PREFECT_API_URL: api_url}):
            async with get_client() as client:
                return await make(client)

    return asyncio.run(go())
