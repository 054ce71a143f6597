"""The fixture registry: which fixtures exist and are enabled, where each one's stream stands
(the resume position ``MAX(seq)``), and the worker's view of each (its state, saved in batches).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

from asyncpg.pgproto.pgproto import UUID as DriverUUID

from ingest.db.actions import safe_reason
from ingest.db.engine import Database
from ingest.worker.ports import FixtureRow, SavedState

# Every statement that updates several fixtures rows locks them in fixture_id order first, the
# order in which the write path's progress update takes them: an UPDATE ... FROM unnest locks in
# whatever order its plan visits them, and two orders on the same rows deadlock (seen between
# the state saver and the writer at 1,000 live fixtures; PostgreSQL breaks the deadlock, the
# writer retries as after an outage).
LOCK_IN_ORDER = """
SELECT 1 FROM fixtures WHERE fixture_id = ANY(CAST(:ids AS uuid[])) ORDER BY fixture_id FOR UPDATE
"""


def fixture_keys(ids: Iterable[uuid.UUID]) -> list[uuid.UUID]:
    """The same ids as the driver's own UUIDs, the kind every id read from the database is.

    It is a :class:`uuid.UUID`, equal to and hashing like the standard one, but its hash is
    computed once, in C, and it is sent to the server as its 16 bytes: the worker keys its
    per-fixture dicts by id, and at 1,000 live fixtures the standard UUID's ``__hash__`` (a
    Python call each time) ran about 6,000 times a second, and ``.bytes`` 1,300.
    """
    return [DriverUUID(fixture_id.bytes) for fixture_id in ids]


def id_texts(ids: Iterable[uuid.UUID]) -> list[str]:
    """Fixture ids as a ``text[]`` parameter, cast to ``uuid[]`` in the statement, for the
    statements a start waits on before its first feed connection: asyncpg has a codec of its
    own for ``text[]``, but looks any other array type up on a connection's first use of it,
    which on a new server backend took 7 ms (it reads the catalogue for the first time)."""
    return [str(fixture_id) for fixture_id in ids]


class Registry:
    """Fixtures, their positions and their states."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def max_seq(self, fixture_id: uuid.UUID) -> int:
        """The resume point: ``MAX(seq)`` of the fixture, 0 when nothing is stored."""
        rows = await self._db.fetch(
            "reading the resume position",
            "SELECT coalesce(max(seq), 0) FROM actions WHERE fixture_id = :f",
            {"f": fixture_id},
        )
        return int(rows[0][0])

    async def max_seqs(self, fixture_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        """``MAX(seq)`` of several fixtures at once (0 for a fixture with nothing stored)."""
        rows = await self._db.fetch(
            "reading the stored positions",
            "SELECT f, coalesce((SELECT max(seq) FROM actions WHERE fixture_id = f), 0) "
            "FROM unnest(CAST(:ids AS uuid[])) AS f",
            {"ids": list(fixture_ids)},
        )
        return {row[0]: int(row[1]) for row in rows}

    async def payload_at(self, fixture_id: uuid.UUID, seq: int) -> str | None:
        """The stored packet at ``seq`` as JSON text (not decoded here: a hostile packet may be
        nested deeper than Python's recursion limit), or None."""
        rows = await self._db.fetch(
            "reading a stored packet",
            "SELECT payload::text FROM actions WHERE fixture_id = :f AND seq = :s",
            {"f": fixture_id, "s": seq},
        )
        return str(rows[0][0]) if rows else None

    async def is_numbered(self, fixture_id: uuid.UUID) -> bool | None:
        """Does the fixture's latest stored packet carry the provider's ``fixtureSeqNum``?
        None when nothing is stored."""
        rows = await self._db.fetch(
            "reading the resume position",
            "SELECT fixture_seq_num IS NOT NULL FROM actions WHERE fixture_id = :f "
            "ORDER BY seq DESC LIMIT 1",
            {"f": fixture_id},
        )
        return bool(rows[0][0]) if rows else None

    async def register(self, fixture_ids: Iterable[uuid.UUID], *, enable: bool = False) -> int:
        """Add fixtures to the registry; with ``enable``, re-enable ones that were disabled."""
        conflict = "UPDATE SET enabled = true" if enable else "NOTHING"
        return await self._db.execute(
            "registering fixtures",
            "INSERT INTO fixtures (fixture_id) "
            "SELECT DISTINCT CAST(f AS uuid) FROM unnest(CAST(:ids AS text[])) AS f "
            f"ON CONFLICT (fixture_id) DO {conflict}",
            {"ids": id_texts(fixture_ids)},
        )

    async def set_enabled(self, fixture_id: uuid.UUID, enabled: bool) -> bool:
        count = await self._db.execute(
            "updating the fixture registry",
            "UPDATE fixtures SET enabled = :e WHERE fixture_id = :f",
            {"e": enabled, "f": fixture_id},
        )
        return count > 0

    async def fixtures(self, fixture_ids: Sequence[uuid.UUID] | None = None) -> list[FixtureRow]:
        where = (
            "WHERE fixture_id = ANY(CAST(CAST(:ids AS text[]) AS uuid[]))"
            if fixture_ids is not None
            else ""
        )
        rows = await self._db.fetch(
            "reading the fixture registry",
            "SELECT fixture_id, enabled, finished, last_seq, packets, last_packet_at, state, "
            "state_changed_at, connects, last_error, owner, lease_expires_at "
            f"FROM fixtures {where} "
            "ORDER BY added_at, fixture_id",
            {"ids": id_texts(fixture_ids)} if fixture_ids is not None else None,
        )
        return [FixtureRow(*row) for row in rows]

    async def save_states(self, states: Sequence[SavedState]) -> None:
        if not states:
            return
        ids = [s.fixture_id for s in states]
        await self._db.fetch_in_transaction(
            "saving fixture states",
            [
                (LOCK_IN_ORDER, {"ids": ids}),
                (
                    """
                    UPDATE fixtures f SET state = s.state, state_changed_at = s.since,
                           connects = s.connects, last_error = s.last_error
                    FROM unnest(CAST(:ids AS uuid[]), CAST(:states AS text[]),
                                CAST(:since AS timestamptz[]), CAST(:connects AS integer[]),
                                CAST(:errors AS text[]))
                         AS s(fixture_id, state, since, connects, last_error)
                    WHERE f.fixture_id = s.fixture_id
                    """,
                    {
                        "ids": ids,
                        "states": [s.state for s in states],
                        "since": [s.since for s in states],
                        "connects": [s.connects for s in states],
                        "errors": [
                            safe_reason(s.last_error) if s.last_error else None for s in states
                        ],
                    },
                ),
            ],
        )

    async def runnable_fixtures(self) -> list[uuid.UUID]:
        rows = await self._db.fetch(
            "reading the fixture registry",
            "SELECT fixture_id FROM fixtures WHERE enabled AND NOT finished "
            "ORDER BY added_at, fixture_id",
        )
        return [row[0] for row in rows]
