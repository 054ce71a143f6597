"""The store: the only object that speaks SQL for the worker and the commands.

One :class:`Store` over one connection pool (a :class:`~ingest.db.engine.Database`), composed
of one repository per concern, each an object over that same pool:
:attr:`~Store.migrations` (:mod:`~ingest.db.migrations`, the schema's version),
:attr:`~Store.writes` (:mod:`~ingest.db.actions`, the write path), :attr:`~Store.registry`
(:mod:`~ingest.db.registry`: fixtures, positions, states), :attr:`~Store.leases`
(:mod:`~ingest.db.leases`, several workers), :attr:`~Store.reads` (:mod:`~ingest.db.reads`,
read models) and :attr:`~Store.betting_table` (:mod:`~ingest.db.betting`, the betting
status). Their methods are also the store's own (``store.write`` is ``store.writes.write``),
which is what the worker's ports (:mod:`ingest.worker.ports`) and
the commands use. Driver errors are translated into :mod:`ingest.errors` at each query
(:mod:`ingest.db.translate`), so nothing outside :mod:`ingest.db` imports a driver.
"""

from __future__ import annotations

import asyncio

from ingest.db.actions import Writes
from ingest.db.betting import BettingTable
from ingest.db.engine import CLOSE_TIMEOUT, Database
from ingest.db.leases import LeaseTable
from ingest.db.migrations import Migrations, head_revision
from ingest.db.reads import ReadModels
from ingest.db.registry import Registry, fixture_keys
from ingest.db.translate import DRIVER_ERRORS
from ingest.settings import COMMAND_TIMEOUT, POOL_SIZE, DatabaseTarget, parse_database_url


class Store:
    """PostgreSQL access for the whole product: the repositories over one pool."""

    def __init__(
        self,
        target: DatabaseTarget,
        *,
        pool_size: int = POOL_SIZE,
        command_timeout: float | None = COMMAND_TIMEOUT,
        async_commit: bool = False,
    ) -> None:
        self.database = Database(target, pool_size=pool_size, command_timeout=command_timeout)
        self.migrations = Migrations(self.database)
        self.writes = Writes(self.database, async_commit=async_commit)
        self.registry = Registry(self.database)
        self.leases = LeaseTable(self.database)
        self.reads = ReadModels(self.database)
        self.betting_table = BettingTable(self.database)

        # Each repository's methods, as the store's: the bound methods themselves rather than
        # wrappers (a wrapper would add a coroutine to every batch the write path stores).
        self.migrate = self.migrations.migrate
        self.schema_revision = self.migrations.schema_revision
        self.check_schema = self.migrations.check_schema

        self.write = self.writes.write  # ingest.worker.ports.Sink

        self.fixture_keys = fixture_keys
        self.max_seq = self.registry.max_seq
        self.max_seqs = self.registry.max_seqs
        self.payload_at = self.registry.payload_at
        self.is_numbered = self.registry.is_numbered
        self.register = self.registry.register
        self.set_enabled = self.registry.set_enabled
        self.fixtures = self.registry.fixtures
        self.save_states = self.registry.save_states
        self.runnable_fixtures = self.registry.runnable_fixtures

        self.claim_fixtures = self.leases.claim_fixtures  # ingest.worker.ports.Leases
        self.fair_share = self.leases.fair_share
        self.renew_leases = self.leases.renew_leases
        self.release_leases = self.leases.release_leases

        self.integrity = self.reads.integrity
        self.summary_mismatches = self.reads.summary_mismatches
        self.fixtures_in_disagreement = self.reads.fixtures_in_disagreement  # ports.Reconciler
        self.scoreboards = self.reads.scoreboards
        self.finished_fixtures = self.reads.finished_fixtures
        self.stored_packets = self.reads.stored_packets
        self.match_report = self.reads.match_report

        self.report_betting = self.betting_table.report_betting  # ports.BettingBoard
        self.leave_betting = self.betting_table.leave_betting
        self.betting = self.betting_table.betting
        self.betting_events = self.betting_table.betting_events

        self.ping = self.database.ping

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        pool_size: int = POOL_SIZE,
        command_timeout: float | None = COMMAND_TIMEOUT,
        async_commit: bool = False,
    ) -> Store:
        """``command_timeout``: a statement that takes longer fails (and is retried) instead of
        hanging on a connection whose server vanished; None for migrations. ``async_commit``:
        the write path commits without waiting for the server's disk (:class:`Writes`)."""
        return cls(
            parse_database_url(url),
            pool_size=pool_size,
            command_timeout=command_timeout,
            async_commit=async_commit,
        )

    def __repr__(self) -> str:
        return f"Store({self.database.target.display!r})"

    @property
    def target(self) -> DatabaseTarget:
        return self.database.target

    @property
    def copy_at(self) -> int:
        """The batch size from which the write path tries COPY (:attr:`Writes.copy_at`)."""
        return self.writes.copy_at

    @staticmethod
    def head_revision() -> str:
        return head_revision()

    async def close(self) -> None:
        """Give back the write path's kept connections, then close the pool, all within
        :data:`CLOSE_TIMEOUT`; then cut what is left: a stop must not wait on a server that has
        stopped answering (SIGTERM exits within 5 s)."""
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.writes.close()
                await self.database.close()
        except (TimeoutError, *DRIVER_ERRORS):
            self.database.terminate()
