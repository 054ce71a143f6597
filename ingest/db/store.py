"""The store: the only object that speaks SQL for the worker and the commands.

One class over one connection pool, put together from one module per concern (each a
:class:`Database` over the same pool): :mod:`~ingest.db.migrations` (the schema's version),
:mod:`~ingest.db.actions` (the write path), :mod:`~ingest.db.registry` (fixtures, positions,
states), :mod:`~ingest.db.leases` (several workers) and :mod:`~ingest.db.reads` (read models).
Driver errors are translated into :mod:`ingest.errors` at each query (:mod:`ingest.db.translate`),
so nothing outside :mod:`ingest.db` imports a driver.
"""

from __future__ import annotations

from ingest.db.actions import Writes
from ingest.db.leases import LeaseTable
from ingest.db.migrations import Migrations
from ingest.db.reads import ReadModels
from ingest.db.registry import Registry
from ingest.settings import parse_database_url


class Store(Migrations, Writes, Registry, LeaseTable, ReadModels):
    """PostgreSQL access for the whole product."""

    @classmethod
    def connect(
        cls, url: str, *, pool_size: int = 4, command_timeout: float | None = 60.0
    ) -> Store:
        """``command_timeout``: a statement that takes longer fails (and is retried) instead of
        hanging on a connection whose server vanished; None for migrations."""
        return cls(parse_database_url(url), pool_size=pool_size, command_timeout=command_timeout)
