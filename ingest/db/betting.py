"""The betting status of each fixture: the worker's one statement a second, and the reads.

What the packets themselves say (a provider suspension, a finished or dropped match) is written
by a trigger on ``actions`` in the transaction that stores them; the worker writes the rest, and
its proof of life, through the database function ``betting_report`` (one round trip however
many fixtures); exactly once per change and the order of precedence are the database's (a
trigger on ``betting_events``). All of it is migration 0010 (``migrations/versions/
0010_betting_status.py``); people read the ``fixture_betting`` view, which is right even when
no worker runs, and ``LISTEN betting_status``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from ingest.db.engine import Database
from ingest.worker.ports import Betting

_REPORT = """
SELECT fixture_id, status, reason
FROM betting_report(:worker, CAST(:ids AS uuid[]), CAST(:statuses AS text[]),
                    CAST(:reasons AS text[]), CAST(:alive AS uuid[]), :stale_after, :sweep,
                    CAST(:own AS uuid[]))
"""


class BettingTable:
    """``betting_events``, ``betting_fixtures`` and the ``fixture_betting`` view."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def report_betting(
        self,
        worker: str,
        changes: dict[uuid.UUID, Betting],
        alive: Sequence[uuid.UUID],
        stale_after: float,
        *,
        sweep: bool = False,
        own: Sequence[uuid.UUID] = (),
    ) -> dict[uuid.UUID, Betting | None]:
        """See :class:`ingest.worker.ports.BettingBoard` (one statement, one transaction)."""
        ids = list(changes)
        rows = await self._db.fetch_kept(
            "writing the betting status",
            _REPORT,
            {
                "worker": worker,
                "ids": ids,
                "statuses": [changes[f].status for f in ids],
                "reasons": [changes[f].reason for f in ids],
                "alive": list(alive),
                "stale_after": float(stale_after),
                "sweep": sweep,
                "own": list(own),
            },
        )
        return {row[0]: Betting(row[1], row[2]) if row[1] is not None else None for row in rows}

    async def leave_betting(self, worker: str, fixture_ids: Sequence[uuid.UUID]) -> None:
        if not fixture_ids:
            return
        await self._db.fetch(
            "writing the betting status",
            "SELECT betting_leave(:worker, CAST(:ids AS uuid[]))",
            {"worker": worker, "ids": list(fixture_ids)},
        )

    async def betting(
        self, fixture_ids: Sequence[uuid.UUID] | None = None
    ) -> dict[uuid.UUID, dict[str, Any]]:
        """The ``fixture_betting`` view: per fixture its ``status``, ``reason``, ``since``,
        ``alive_at``, ``seq`` and ``event_id`` (every fixture when ``fixture_ids`` is None)."""
        where = "WHERE fixture_id = ANY(CAST(:ids AS uuid[]))" if fixture_ids is not None else ""
        rows = await self._db.fetch(
            "reading the betting status",
            "SELECT fixture_id, status, reason, since, alive_at, seq, event_id "
            f"FROM fixture_betting {where}",
            {"ids": list(fixture_ids)} if fixture_ids is not None else None,
        )
        return {row[0]: dict(row) for row in rows}

    async def betting_events(self, fixture_id: uuid.UUID) -> list[dict[str, Any]]:
        """A fixture's betting events, oldest first."""
        rows = await self._db.fetch(
            "reading the betting events",
            "SELECT id, fixture_id, status, reason, seq, at FROM betting_events "
            "WHERE fixture_id = :f ORDER BY id",
            {"f": fixture_id},
        )
        return [dict(row) for row in rows]
