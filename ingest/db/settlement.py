"""The database side of settlement: :class:`SettlementStore`, the PostgreSQL
:class:`~ingest.settlement.ports.Ledger` of the settler, on the pool of a :class:`Store`.

One fixture is settled in one transaction: lock its checkpoint row, read its relevant packets up
to the newest one (one statement, one snapshot), derive the events of the packets after the
checkpoint (:func:`ingest.settlement.markets.replay`), append them (each announced with
``NOTIFY settlement_events``) and move the checkpoint. A crash before the commit leaves nothing,
a crash after it leaves everything: no event is lost or written twice, and the unique index on
``(fixture_id, market, decided_by_seq, kind)`` would refuse a repeat anyway.

``LISTEN ingest_actions`` runs on a connection of its own taken from the pool (it needs a
session: not through a transaction-pooling PgBouncer).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from ingest.db.engine import Database, positional
from ingest.db.store import Store
from ingest.db.translate import DRIVER_ERRORS, translate
from ingest.feed.vocabulary import LINEUP_TEAM_PATHS, LINEUPS
from ingest.settlement.markets import RELEVANT_TYPES, Packet, Replay, replay
from ingest.settlement.ports import Progress, Settled

_TYPES = ", ".join(str(t) for t in RELEVANT_TYPES)

_PACKETS = f"""
WITH top AS (SELECT coalesce(max(seq), 0) AS last_seq FROM actions WHERE fixture_id = :f),
relevant_ids AS (
    SELECT DISTINCT action_id FROM actions
    WHERE fixture_id = :f AND action_type_id IN ({_TYPES}) AND action_id IS NOT NULL
)
SELECT top.last_seq, p.*
FROM top
LEFT JOIN LATERAL (  -- one statement, one snapshot: the packets and the checkpoint agree
    SELECT a.seq, a.action_id::text AS action_id, a.action_type_id, a.send_type_id, a.period,
           a.team_id::text AS team_id, a.side, a.finished,
           CASE WHEN a.action_type_id IN ({_TYPES}) OR a.finished
                THEN (a.payload -> 'fixtureAction' -> 'metadata')::text END AS metadata,
           a.payload #>> '{{fixtureSummary,collectionStatus}}' AS summary_collection,
           -- a Lineups packet's teams, read as the fixture_lineups view reads them
           CASE WHEN a.action_type_id = {LINEUPS}
                THEN ingest_uuid(a.payload #>> '{LINEUP_TEAM_PATHS["home"]}')::text END AS home,
           CASE WHEN a.action_type_id = {LINEUPS}
                THEN ingest_uuid(a.payload #>> '{LINEUP_TEAM_PATHS["away"]}')::text END AS away
    FROM actions a
    WHERE a.fixture_id = :f AND a.seq <= top.last_seq
      AND (a.action_type_id IN ({_TYPES}) OR a.finished
           OR a.action_id IN (SELECT action_id FROM relevant_ids))
) p ON true
ORDER BY p.seq
"""

_INSERT_EVENTS = """
WITH input AS (
    SELECT * FROM unnest(CAST(:markets AS text[]), CAST(:kinds AS text[]),
                         CAST(:outcomes AS text[]), CAST(:certainties AS text[]),
                         CAST(:seqs AS bigint[]), CAST(:ord AS integer[]))
        AS t(market, kind, outcome, certainty, decided_by_seq, ord)
),
inserted AS (
    INSERT INTO settlement_events (fixture_id, market, kind, outcome, certainty, decided_by_seq)
    SELECT CAST(:f AS uuid), market, kind, outcome, certainty, decided_by_seq
    FROM input ORDER BY ord
    RETURNING id, fixture_id, market, kind, outcome, certainty, decided_by_seq, created_at
)
SELECT count(pg_notify('settlement_events', json_build_object(
           'id', id, 'fixture_id', fixture_id, 'market', market, 'kind', kind,
           'outcome', outcome, 'certainty', certainty, 'decided_by_seq', decided_by_seq,
           'created_at', created_at)::text))
FROM (SELECT * FROM inserted ORDER BY id) i
"""

_INSERT_MARKETS = """
INSERT INTO settlement_markets (fixture_id, market, opened_by_seq)
SELECT CAST(:f AS uuid), * FROM unnest(CAST(:markets AS text[]), CAST(:seqs AS bigint[]))
ON CONFLICT (fixture_id, market) DO NOTHING
"""

_PROGRESS = """
SELECT k.fixture_id, coalesce(f.last_seq, 0) AS last_seq, coalesce(f.finished, false),
       coalesce(c.seq, 0) AS checkpoint
FROM unnest(CAST(:ids AS uuid[])) AS k(fixture_id)
LEFT JOIN fixtures f ON f.fixture_id = k.fixture_id
LEFT JOIN settlement_checkpoints c ON c.fixture_id = k.fixture_id
"""


class Listener:
    """A dedicated connection that LISTENs (a :class:`~ingest.settlement.ports.Subscription`);
    ``lost`` is set when it breaks."""

    def __init__(
        self,
        database: Database,
        raw: asyncpg.Connection,
        channel: str,
        on_payload: Callable[[str], None],
    ) -> None:
        self._database, self._raw, self._channel = database, raw, channel
        self._on_payload = on_payload
        self.lost = False
        self._closed = False

    def heard(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._on_payload(payload)

    async def ping(self) -> bool:
        """Is the connection still there? (a round trip; marks it lost if not)."""
        if self.lost:
            return False
        try:
            await self._raw.fetchval("SELECT 1", timeout=10)
        except (TimeoutError, *DRIVER_ERRORS):
            self.lost = True
        return not self.lost

    async def close(self) -> None:
        """Stop listening and give the connection back, once: a second call (a close that was
        cancelled, then the settler's own last close) does nothing, since a connection given
        back to the pool must not be used again."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self.lost and not self._raw.is_closed():
                await self._raw.remove_listener(self._channel, self.heard)  # and UNLISTEN
            else:
                self._raw.terminate()
        except (TimeoutError, *DRIVER_ERRORS):
            # a lost connection may be detached by the driver already: then it raises again
            with contextlib.suppress(*DRIVER_ERRORS):
                self._raw.terminate()
        finally:
            await self._database.release(self._raw)


class SettlementStore:
    """Settlement's reads and writes, on the pool of a :class:`Store`: the settler's
    :class:`~ingest.settlement.ports.Ledger`."""

    def __init__(self, store: Store) -> None:
        self._db = store.database  # one pool for the whole process
        self._reads = store.reads

    async def fixtures_on_hold(self, fixture_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
        """The fixtures that may not be settled now (their events wait, nothing is lost), each
        with why: those whose latest ``fixtureSummary`` disagrees with our views
        (``summary_mismatches``, docs/reconciliation.md)."""
        disagreeing = await self._reads.fixtures_in_disagreement(list(fixture_ids))
        held = {}
        for fixture_id, rows in disagreeing.items():
            fields = ", ".join(
                f"{r['field']} (ours {r['ours']}, provider {r['provider']})" for r in rows[:5]
            )
            held[fixture_id] = (
                f"its latest summary (seq {rows[0]['seq']}) disagrees with our views: {fields}"
            )
        return held

    async def followed(self, fixture_ids: Sequence[uuid.UUID], follow_all: bool) -> list[uuid.UUID]:
        """The given fixtures, plus with ``follow_all`` every enabled one in the registry."""
        ids = list(dict.fromkeys(fixture_ids))
        if follow_all:
            rows = await self._db.fetch(
                "reading the fixture registry",
                "SELECT fixture_id FROM fixtures WHERE enabled ORDER BY added_at, fixture_id",
            )
            ids += [r[0] for r in rows if r[0] not in ids]
        return ids

    async def progress(self, fixture_ids: Sequence[uuid.UUID]) -> list[Progress]:
        rows = await self._db.fetch(
            "reading settlement progress", _PROGRESS, {"ids": list(fixture_ids)}
        )
        return [Progress(*row) for row in rows]

    async def packets(self, fixture_id: uuid.UUID) -> list[Packet]:
        """The packets settlement reads of a fixture, in seq order, as a settlement pass reads
        them (for tools and tests: a pass reads them inside its own transaction)."""
        rows = await self._db.fetch("reading a fixture's packets", _PACKETS, {"f": fixture_id})
        return [_packet(r) for r in rows if r["seq"] is not None]

    async def settle(self, fixture_id: uuid.UUID) -> Settled:
        """Append the events of the packets stored since the checkpoint, in one transaction."""
        try:
            async with self._db.connection() as conn, conn.transaction():
                return await self._settle(conn, fixture_id)
        except DRIVER_ERRORS as exc:
            raise translate(exc, f"settling fixture {fixture_id}") from exc

    async def _settle(self, conn: asyncpg.Connection, fixture_id: uuid.UUID) -> Settled:
        f = {"f": fixture_id}
        await _run(
            conn,
            "INSERT INTO settlement_checkpoints (fixture_id) VALUES (:f) "
            "ON CONFLICT (fixture_id) DO NOTHING",
            f,
        )
        locked = await _rows(
            conn, "SELECT seq FROM settlement_checkpoints WHERE fixture_id = :f FOR UPDATE", f
        )
        checkpoint = int(locked[0]["seq"])
        rows = await _rows(conn, _PACKETS, f)
        last_seq = int(rows[0]["last_seq"])
        result: Replay = replay((_packet(r) for r in rows if r["seq"] is not None), checkpoint)
        if last_seq <= checkpoint:
            return Settled(fixture_id, [], checkpoint, checkpoint, result.ended)
        if result.markets:
            await _run(
                conn,
                _INSERT_MARKETS,
                {"f": fixture_id, "markets": list(result.markets),
                 "seqs": list(result.markets.values())},
            )  # fmt: skip
        if result.events:
            events = result.events
            await _run(
                conn,
                _INSERT_EVENTS,
                {
                    "f": fixture_id,
                    "markets": [e.market for e in events],
                    "kinds": [e.kind for e in events],
                    "outcomes": [e.outcome for e in events],
                    "certainties": [e.certainty for e in events],
                    "seqs": [e.decided_by_seq for e in events],
                    "ord": list(range(len(events))),
                },
            )
        await _run(
            conn,
            "UPDATE settlement_checkpoints SET seq = :s, updated_at = now() WHERE fixture_id = :f",
            {"f": fixture_id, "s": last_seq},
        )
        return Settled(fixture_id, result.events, last_seq, checkpoint, result.ended)

    async def listen(self, channel: str, on_payload: Callable[[str], None]) -> Listener:
        """LISTEN on a connection of its own; ``on_payload`` hears each notification."""
        try:
            raw = await self._db.acquire()
            try:
                listener = Listener(self._db, raw, channel, on_payload)

                def lost(_: Any) -> None:
                    listener.lost = True

                raw.add_termination_listener(lost)
                await raw.add_listener(channel, listener.heard)
                return listener
            except BaseException:
                raw.terminate()
                await self._db.release(raw)
                raise
        except DRIVER_ERRORS as exc:
            raise translate(exc, f"listening on {channel}") from exc


async def _rows(conn: asyncpg.Connection, sql: str, params: dict[str, Any]) -> list[Any]:
    text, names = positional(sql)
    return list(await conn.fetch(text, *(params[n] for n in names)))


async def _run(conn: asyncpg.Connection, sql: str, params: dict[str, Any]) -> None:
    text, names = positional(sql)
    await conn.execute(text, *(params[n] for n in names))


def _packet(row: Any) -> Packet:
    metadata = row["metadata"]
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except (ValueError, RecursionError):  # a hostile packet may nest deeper than Python
            metadata = None
    return Packet(
        seq=int(row["seq"]),
        action_id=row["action_id"],
        type_id=row["action_type_id"],
        send_type_id=row["send_type_id"],
        period=row["period"],
        side=row["side"],
        finished=bool(row["finished"]),
        metadata=metadata if isinstance(metadata, dict) else None,
        summary_collection=row["summary_collection"],
        team_id=row["team_id"],
        lineup=(row["home"], row["away"]) if row["action_type_id"] == LINEUPS else None,
    )
