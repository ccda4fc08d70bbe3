"""Prepare the Prefect server's database once, before several API processes start on it.

Each API process of ``prefect server start --workers N`` migrates the database and registers
Prefect's block types as it starts; on a new database two processes doing it at once collide
(duplicate tables, duplicate block types). ``fileflow up --server-workers N`` runs this first,
with the server's environment, then starts the API processes with both steps switched off.
It does what one server process does at start-up (Prefect's lifespan), nothing more.

Usage: ``python -m fileflow.server.serverdb`` (the database from ``PREFECT_API_DATABASE_CONNECTION_URL``).
"""

from __future__ import annotations

import asyncio


async def prepare() -> None:
    from prefect.server.database import provide_database_interface
    from prefect.server.models.block_registration import run_block_auto_registration

    db = provide_database_interface()
    await db.create_db()  # Alembic's upgrade to Prefect's head revision
    session = await db.session()
    async with session:
        await run_block_auto_registration(session=session)


if __name__ == "__main__":
    asyncio.run(prepare())
