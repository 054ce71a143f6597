"""Alembic environment.

``ingest migrate`` runs alembic inside its own event loop and hands over an open connection in
``config.attributes["connection"]``. Run by hand (``alembic upgrade head``), this file connects by
itself to INGEST_DATABASE_URL or DATABASE_URL.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

config = context.config


def run_with_connection(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_standalone() -> None:
    from ingest.config import parse_database_url
    from ingest.db.engine import create_engine

    raw = os.environ.get("INGEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if not raw:
        raise SystemExit(
            "set INGEST_DATABASE_URL (or use `ingest migrate`, which knows the embedded DB)"
        )
    engine = create_engine(parse_database_url(raw), command_timeout=None)
    async with engine.connect() as connection:
        await connection.run_sync(run_with_connection)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported")

shared = config.attributes.get("connection")
if shared is not None:
    run_with_connection(shared)
else:
    asyncio.run(run_standalone())
