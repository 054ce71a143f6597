"""Read models: what reports, ``ingest status``, ``ingest verify`` and ``ingest export`` read
(the settlement views, integrity, the provider-summary comparison, stored packets).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from ingest.db.engine import Database

_INTEGRITY = """
WITH scope AS (
    SELECT fixture_id FROM fixtures WHERE CAST(:f AS uuid) IS NULL OR fixture_id = :f
),
holes AS (
    SELECT fixture_id, prev + 1 AS first_missing, seq - 1 AS last_missing
    FROM (
        SELECT fixture_id, seq, coalesce(lag(seq) OVER (PARTITION BY fixture_id ORDER BY seq), 0)
               AS prev
        FROM actions WHERE fixture_id IN (SELECT fixture_id FROM scope)
    ) s
    WHERE seq > prev + 1
)
SELECT s.fixture_id,
       (SELECT count(*) FROM actions a WHERE a.fixture_id = s.fixture_id) AS packets,
       ARRAY(SELECT first_missing || '-' || last_missing FROM holes h
             WHERE h.fixture_id = s.fixture_id ORDER BY first_missing) AS gaps,
       (SELECT count(*) FROM action_conflicts c WHERE c.fixture_id = s.fixture_id) AS conflicts,
       (SELECT count(*) FROM rejected_messages r WHERE r.fixture_id = s.fixture_id) AS rejected,
       (SELECT rejected_unstored FROM fixtures f WHERE f.fixture_id = s.fixture_id)
           AS rejected_unstored
FROM scope s ORDER BY s.fixture_id
"""


class ReadModels:
    """Queries over the views and tables for people and exports; nothing here writes."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def integrity(self, fixture_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
        """Per fixture: packets, seq gaps (as "first-last" ranges), conflicts, rejected frames."""
        rows = await self._db.fetch("checking integrity", _INTEGRITY, {"f": fixture_id})
        return [dict(row) for row in rows]

    async def summary_mismatches(
        self, fixture_ids: Sequence[uuid.UUID] | None = None
    ) -> list[dict[str, Any]]:
        """Rows of the ``summary_mismatches`` view (all fixtures when ``fixture_ids`` is None):
        ``fixture_id``, ``seq``, ``field``, ``ours``, ``provider``, in fixture and field order."""
        where = "WHERE fixture_id = ANY(CAST(:ids AS uuid[]))" if fixture_ids is not None else ""
        rows = await self._db.fetch_in_transaction(
            "comparing with the provider's summary",
            [
                # the views' cost estimates are high enough to trigger JIT compilation, which
                # costs about a second per query and saves nothing on one fixture's rows
                ("SET LOCAL jit = off", {}),
                (
                    "SELECT fixture_id, seq, field, ours, provider FROM summary_mismatches "
                    f"{where} ORDER BY fixture_id, field",
                    {"ids": list(fixture_ids) if fixture_ids is not None else None},
                ),
            ],
        )
        return [dict(row) for row in rows]

    async def fixtures_in_disagreement(
        self, fixture_ids: Sequence[uuid.UUID] | None = None
    ) -> dict[uuid.UUID, list[dict[str, Any]]]:
        """The fixtures whose latest ``fixtureSummary`` disagrees with our views, with their
        ``summary_mismatches`` rows. Settlement must not settle these fixtures' markets."""
        found: dict[uuid.UUID, list[dict[str, Any]]] = {}
        for row in await self.summary_mismatches(fixture_ids):
            found.setdefault(row["fixture_id"], []).append(row)
        return found

    async def scoreboards(
        self, fixture_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, dict[str, Any]]:
        """Per fixture, what a person watching the match wants next to its connection state:
        ``home_player``, ``away_player``, ``home_frames``, ``away_frames``, ``status``,
        ``current_frame`` and that frame's ``home_points`` / ``away_points`` (from the
        ``match_results`` and ``frame_results`` views)."""
        if not fixture_ids:
            return {}
        rows = await self._db.fetch_in_transaction(
            "reading the scores",
            [
                ("SET LOCAL jit = off", {}),  # see summary_mismatches
                (
                    """
                    SELECT m.fixture_id, m.home_player, m.away_player, m.home_frames,
                           m.away_frames, m.status, m.best_of, m.current_frame,
                           f.home_points, f.away_points, f.finished AS frame_finished
                    FROM match_results m
                    LEFT JOIN frame_results f
                      ON f.fixture_id = m.fixture_id AND f.frame_number = m.current_frame
                    WHERE m.fixture_id = ANY(CAST(:ids AS uuid[]))
                    """,
                    {"ids": list(fixture_ids)},
                ),
            ],
        )
        return {row[0]: dict(row) for row in rows}

    async def finished_fixtures(self) -> list[uuid.UUID]:
        """The fixtures whose finished packet is stored, in fixture id order."""
        rows = await self._db.fetch(
            "reading the finished fixtures",
            "SELECT DISTINCT fixture_id FROM actions WHERE finished ORDER BY fixture_id",
        )
        return [row[0] for row in rows]

    async def stored_packets(self, fixture_id: uuid.UUID) -> list[str]:
        """Every stored packet of a fixture as JSON text, in seq order: the payload received
        (jsonb: the same JSON value, with its keys and whitespace normalised by PostgreSQL)."""
        rows = await self._db.fetch(
            "reading the stored packets",
            "SELECT payload::text FROM actions WHERE fixture_id = :f ORDER BY seq",
            {"f": fixture_id},
        )
        return [str(row[0]) for row in rows]

    async def match_report(self, fixture_id: uuid.UUID) -> dict[str, Any] | None:
        """Everything ``ingest report`` shows, read from the settlement views."""
        params = {"f": fixture_id}
        match = await self._db.fetch(
            "reading the match", "SELECT * FROM match_results WHERE fixture_id = :f", params
        )
        if not match:
            return None
        frames = await self._db.fetch(
            "reading the frames",
            "SELECT * FROM frame_results WHERE fixture_id = :f ORDER BY frame_number",
            params,
        )
        breaks = await self._db.fetch(
            "reading the breaks",
            "SELECT * FROM breaks WHERE fixture_id = :f ORDER BY first_seq",
            params,
        )
        players = await self._db.fetch(
            "reading the player statistics",
            "SELECT * FROM player_match_stats WHERE fixture_id = :f ORDER BY side DESC",
            params,
        )
        mismatches = await self.summary_mismatches([fixture_id])
        return {
            "mismatches": mismatches,
            "match": dict(match[0]),
            "frames": [dict(r) for r in frames],
            "breaks": [dict(r) for r in breaks],
            "players": [dict(r) for r in players],
        }
