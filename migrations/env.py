"""Alembic environment.

``ingest migrate`` runs alembic inside its own event loop and hands over an open connection in
``config.attributes["connection"]``. Run by hand (``alembic upgrade head``, ``alembic downgrade
-1``), this file connects by itself to INGEST_DATABASE_URL or DATABASE_URL, the same way and
under the same advisory lock as ``ingest migrate``.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

config = context.config


def run_with_connection(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=None, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


def run_standalone() -> None:
    from ingest.db.migrations import lock, run_on_alembic_connection
    from ingest.errors import IngestError
    from ingest.settings import parse_database_url

    if config.config_file_name is not None:  # alembic.ini's logging: what alembic does
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    raw = os.environ.get("INGEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if not raw:
        raise SystemExit(
            "set INGEST_DATABASE_URL (or use `ingest migrate`, which knows the embedded DB)"
        )

    def run(connection: Connection) -> None:
        lock(connection)
        run_with_connection(connection)

    try:
        asyncio.run(run_on_alembic_connection(parse_database_url(raw), run))
    except IngestError as exc:
        raise SystemExit(f"alembic: {exc}") from None


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported")

shared = config.attributes.get("connection")
if shared is not None:
    run_with_connection(shared)
else:
    run_standalone()
