"""The write path: a batch of packets (and rejected frames) stored in one statement, or from
:attr:`Writes.copy_at` packets on with COPY.

Every committed batch sends ``NOTIFY ingest_actions`` with a JSON payload per fixture
(``fixture_id``, ``max_seq``, ``inserted``, ``finished``).

Writes are idempotent: each action packet is inserted keyed by ``(fixture_id, seq)`` with
``ON CONFLICT DO NOTHING``; a replayed seq with a different payload is recorded in
``action_conflicts``. One batch is one statement and one transaction, with the rows passed as
arrays (``unnest``), so a batch costs one round trip whatever its size; a big batch goes by COPY
first, in one transaction with its progress and notifications (:meth:`Writes._copy`). The
column lists of both are built at import from :data:`ingest.db.columns.ACTIONS`, the list of
the table's columns that :mod:`ingest.db.schema` builds the table from.

Known limit: when two workers write the same fixture at the same moment (a lease handover),
a replay whose first copy is committed by the other worker during this statement is absorbed but
not compared (the statement's snapshot predates it), so a differing payload would go unrecorded.
Nothing is lost: the stored row stays. Outside such an overlap, every conflict is recorded.
"""

from __future__ import annotations

import operator
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from ingest.db.columns import ACTIONS
from ingest.db.engine import RECYCLE, Database, suspect
from ingest.db.translate import BAD_DATA, DRIVER_ERRORS, translate
from ingest.errors import ServerChanged
from ingest.feed.packet import Action, Rejected
from ingest.feed.vocabulary import (
    LINEUP_TEAM_PATHS,
    LINEUPS,
    LineupPacket,
    Lineups,
    action_key,
)
from ingest.worker.ports import WriteResult

# a fixture's progress row, merged with what a batch inserted (the batch statement and a COPY's)
_PROGRESS_MERGE = """ON CONFLICT (fixture_id) DO UPDATE SET
            last_seq = GREATEST(f.last_seq, EXCLUDED.last_seq),
            packets = f.packets + EXCLUDED.packets,
            finished = f.finished OR EXCLUDED.finished,
            last_packet_at = GREATEST(f.last_packet_at, EXCLUDED.last_packet_at),
            finished_at = COALESCE(f.finished_at, EXCLUDED.finished_at)"""

_INSERT_ACTIONS_TEMPLATE = """
    WITH input AS (
        {input}
    ),
    inserted AS (
        INSERT INTO actions ({names})
        SELECT {selected}
        FROM input
        WHERE {guard}  -- nothing is written on a server other than the one the writer knows
        ON CONFLICT (fixture_id, seq) DO NOTHING
        RETURNING fixture_id, seq, finished, received_at
    ),
    duplicates AS MATERIALIZED (
        -- only rows that were not inserted can be duplicates: probing the table for every row
        -- would cost as much as the insert, and a hash join could even scan the whole table
        SELECT * FROM input i
        WHERE NOT EXISTS (SELECT 1 FROM inserted n
                          WHERE n.fixture_id = i.fixture_id AND n.seq = i.seq)
    ),
    conflicts AS (
        -- the outer snapshot does not see `inserted`: a hit here is a pre-existing row
        INSERT INTO action_conflicts (fixture_id, seq, payload, received_at)
        SELECT d.fixture_id, d.seq, d.payload::jsonb, d.received_at
        FROM duplicates d JOIN actions a ON a.fixture_id = d.fixture_id AND a.seq = d.seq
        WHERE a.payload <> d.payload::jsonb
        ON CONFLICT DO NOTHING  -- the same differing replay is recorded once
        RETURNING fixture_id, seq
    ),
    progress AS (
        INSERT INTO fixtures AS f (fixture_id, last_seq, packets, finished, last_packet_at,
                                   finished_at)
        SELECT fixture_id, max(seq), count(*), bool_or(finished), max(received_at),
               CASE WHEN bool_or(finished) THEN now() END
        FROM inserted GROUP BY fixture_id ORDER BY fixture_id  -- one lock order for every writer
        {merge}
    ),
    notified AS (
        -- delivered on commit: downstream settlement LISTENs instead of polling
        SELECT pg_notify('ingest_actions', json_build_object(
                   'fixture_id', fixture_id, 'max_seq', max(seq), 'inserted', count(*),
                   'finished', bool_or(finished))::text)
        FROM inserted GROUP BY fixture_id
    )
    {answer}
    """
# what a batch statement answers: per fixture the packets inserted, the conflicts, the server
_BATCH_ANSWER = """SELECT (SELECT count(*) FROM notified) AS notified,
           ARRAY(SELECT fixture_id FROM inserted GROUP BY fixture_id ORDER BY 1) AS fixtures,
           ARRAY(SELECT count(*) FROM inserted GROUP BY fixture_id ORDER BY fixture_id) AS counts,
           ARRAY(SELECT seq FROM conflicts) AS conflict_seqs,
           ARRAY(SELECT fixture_id FROM conflicts) AS conflict_fixtures,
           {server} AS server"""
# ... and a one-packet statement, in scalars (no arrays to decode for the live feed's usual batch):
# whether the packet was inserted, whether it conflicted, the server
_ROW_ANSWER = """SELECT (SELECT count(*) FROM notified) AS notified,
           EXISTS (SELECT FROM inserted) AS inserted,
           EXISTS (SELECT FROM conflicts) AS conflicted,
           {server} AS server"""


# Every stored Lineups action of the fixtures in its latest packet (of any type: a Lineups Updated
# to another type no longer counts), for ingest.feed.vocabulary.Lineups; a packet without an
# actionId is an action of its own (vocabulary.action_key)
_LINEUP_PACKETS = f"""
    SELECT DISTINCT ON (fixture_id, key) fixture_id, key, seq, action_type_id, send_type_id,
           home, away
    FROM (
        SELECT a.fixture_id, coalesce(a.action_id::text, 'seq:' || a.seq) AS key, a.seq,
               a.action_type_id, a.send_type_id,
               a.payload #>> '{LINEUP_TEAM_PATHS["home"]}' AS home,
               a.payload #>> '{LINEUP_TEAM_PATHS["away"]}' AS away
        FROM actions a
        WHERE a.fixture_id = ANY(CAST($1 AS uuid[]))
          AND (a.action_type_id = $2
               OR a.action_id IN (SELECT l.action_id FROM actions l
                                  WHERE l.fixture_id = a.fixture_id AND l.action_type_id = $2))
    ) p
    ORDER BY fixture_id, key, seq DESC
    """

# After a COPY (see Writes._copy): the same progress and notifications as the batch statement's,
# from per-fixture figures computed by the client (every copied row was inserted)
_COPIED_PROGRESS = f"""
    WITH input AS (
        SELECT * FROM unnest(CAST($1 AS uuid[]), CAST($2 AS bigint[]), CAST($3 AS bigint[]),
                             CAST($4 AS boolean[]), CAST($5 AS timestamptz[]))
            AS t(fixture_id, last_seq, packets, finished, last_packet_at)
    ),
    progress AS (
        INSERT INTO fixtures AS f (fixture_id, last_seq, packets, finished, last_packet_at,
                                   finished_at)
        SELECT fixture_id, last_seq, packets, finished, last_packet_at,
               CASE WHEN finished THEN now() END
        FROM input ORDER BY fixture_id  -- one lock order for every writer
        {_PROGRESS_MERGE}
    )
    SELECT count(pg_notify('ingest_actions', json_build_object(
               'fixture_id', fixture_id, 'max_seq', last_seq, 'inserted', packets,
               'finished', finished)::text))
    FROM input
    """

# The rejected frames of a batch, stored and counted exactly once: the batch's token goes into
# fixtures.rejected_batch, and a retry of the same batch (its commit's reply lost) finds it there,
# so neither counts (fixtures.rejected_unstored, the frames over the rate) nor stores again.
_INSERT_REJECTED_SQL = """
    WITH counted AS (
        INSERT INTO fixtures AS f (fixture_id, rejected_unstored, rejected_batch)
        SELECT c.fixture_id, c.n, CAST($7 AS uuid)
        FROM unnest(CAST($8 AS uuid[]), CAST($9 AS bigint[])) AS c(fixture_id, n)
        ORDER BY c.fixture_id
        ON CONFLICT (fixture_id) DO UPDATE SET
            rejected_unstored = f.rejected_unstored + EXCLUDED.rejected_unstored,
            rejected_batch = EXCLUDED.rejected_batch
        WHERE f.rejected_batch IS DISTINCT FROM EXCLUDED.rejected_batch
        RETURNING f.fixture_id
    ),
    stored AS (
        INSERT INTO rejected_messages (fixture_id, received_at, raw, reason, length, sha256)
        SELECT r.* FROM unnest(CAST($1 AS uuid[]), CAST($2 AS timestamptz[]),
                               CAST($3 AS bytea[]), CAST($4 AS text[]), CAST($5 AS bigint[]),
                               CAST($6 AS bytea[]))
                        AS r(fixture_id, received_at, raw, reason, length, sha256)
        WHERE r.fixture_id IN (SELECT fixture_id FROM counted)
        RETURNING 1
    )
    SELECT count(*) FROM stored
"""
_REASON_CHARS = 500

# --async-commit: a commit returns once its WAL is written, not flushed to disk. A database crash
# may then lose the last commits (up to three wal_writer_delay, 0.6 s by default); the writer
# finds that out as after a failover (Writer._check_rewind: the server's identity, the stored
# MAX(seq)) and the fixtures fetch the lost packets again from the feed.
_ASYNC_COMMIT = "SET synchronous_commit TO off"
_ASYNC_COMMIT_LOCAL = "SET LOCAL synchronous_commit TO off"


# Every column of `actions` but `stored_at`, which the server stamps, with the array type it
# travels as (ingest.db.columns, the list ingest.db.schema builds the table from); jsonb travels
# as text and is cast to jsonb by the insert (so PostgreSQL, not the driver, parses it).
_STAMPED_BY_SERVER = frozenset({"stored_at"})
_JSONB = frozenset(c.name for c in ACTIONS if c.type == "jsonb")
WRITTEN: tuple[tuple[str, str], ...] = tuple(
    (c.name, f"{'text' if c.name in _JSONB else c.type}[]")
    for c in ACTIONS
    if c.name not in _STAMPED_BY_SERVER
)
# the Action attribute that fills a column, where its name differs from the column's
_RENAMED = {"action_type_id": "type_id", "action_type": "type_name",
            "action_subtype_id": "subtype_id", "action_subtype": "subtype_name"}  # fmt: skip
# every column after the first (fixture_id, the batch's own) is filled from the action
_ATTRIBUTES = tuple(_RENAMED.get(name, name) for name, _ in WRITTEN[1:])
COLUMNS = [name for name, _ in WRITTEN]  # in the order of a row: the COPY's column list
_values = operator.attrgetter(*_ATTRIBUTES)  # an action's values for those columns, as a tuple

_NAMES = ", ".join(name for name, _ in WRITTEN)
_SELECTED = ", ".join(f"{name}::jsonb" if name in _JSONB else name for name, _ in WRITTEN)
_UNNEST = ", ".join(f"CAST(${n} AS {kind})" for n, (_, kind) in enumerate(WRITTEN, 1))
# Which server answered: its postmaster's start time. Behind a pooler a failover can raise no
# error on our side (the client connection to the bouncer survives), so every batch names the
# server it expects (the last parameter; NULL: any), is written only there, and says which one
# answered: a promoted standby, or a restarted server, is a different one (see Writes.write).
SERVER = "pg_postmaster_start_time()"
_EXPECTED = f"${len(WRITTEN) + 1}::timestamptz"
_GUARD = f"({_EXPECTED} IS NULL OR {_EXPECTED} = {SERVER})"
# a batch: one array per column
_INSERT_ACTIONS = _INSERT_ACTIONS_TEMPLATE.format(
    input=f"SELECT * FROM unnest({_UNNEST}) AS t({_NAMES})",
    names=_NAMES,
    selected=_SELECTED,
    merge=_PROGRESS_MERGE,
    guard=_GUARD,
    answer=_BATCH_ANSWER.format(server=SERVER),
)
# one packet (a live feed's usual batch): the same statement over one row of scalars, which the
# driver encodes in a third of the time it takes for nineteen one-element arrays
_ROW = ", ".join(
    f"CAST(${n} AS {kind.removesuffix('[]')}) AS {name}"
    for n, (name, kind) in enumerate(WRITTEN, 1)
)
_INSERT_ACTION = _INSERT_ACTIONS_TEMPLATE.format(
    input=f"SELECT {_ROW}", names=_NAMES, selected=_SELECTED, merge=_PROGRESS_MERGE,
    guard=_GUARD, answer=_ROW_ANSWER.format(server=SERVER),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Rejects:
    """What a batch holds besides packets: rejected frames to store, and per fixture how many
    to count only (over the rate), under the batch's token (see _INSERT_REJECTED_SQL)."""

    rejected: Sequence[tuple[uuid.UUID, Rejected]]
    unstored: Mapping[uuid.UUID, int]
    batch: uuid.UUID | None  # None: a token of its own (made only when there is something)

    def __bool__(self) -> bool:
        return bool(self.rejected or self.unstored)


_NO_REJECTS = _Rejects((), {}, None)


class Writes:
    """Store batches atomically; knows each fixture's home/away teams to fill ``actions.side``."""

    # A batch of at least this many packets (a backfill's, or a catch-up's) is first tried as a
    # COPY: PostgreSQL stores COPYed rows at about twice the rate of INSERT ... ON CONFLICT, and
    # the extra round trips (BEGIN, COPY, progress, COMMIT) are nothing against a batch this big.
    copy_at = 64

    def __init__(self, database: Database, *, async_commit: bool = False) -> None:
        self._db = database
        self._pooler = database.pooler  # fixed with the target: read once, not per batch
        # synchronous_commit off for the batches' transactions (RunOptions.async_commit): set
        # once on each write-path connection (the pool's RESET ALL undoes it on release), and
        # behind a pooler, where a session lasts one transaction, in each batch's transaction
        self._async_commit = async_commit
        # fixture -> its Lineups actions and the sides they give, to fill actions.side
        self._lineups: dict[uuid.UUID, Lineups] = {}
        # Write-path connections stay checked out between batches (at most one per concurrent
        # write, so no more than before): a checkout and return (with the pool's reset of the
        # session) costs more than a one-packet batch statement itself. (connection, since)
        self._writing: list[tuple[asyncpg.Connection, float]] = []

    async def close(self) -> None:
        """Give back the connections kept between batches (before the pool closes)."""
        held, self._writing = self._writing, []
        for conn, _ in held:
            await self._db.release(conn)

    async def write(
        self,
        actions: Sequence[tuple[uuid.UUID, Action]],
        rejected: Sequence[tuple[uuid.UUID, Rejected]] = (),
        *,
        unstored: Mapping[uuid.UUID, int] | None = None,
        batch: uuid.UUID | None = None,
        server: object = None,
    ) -> WriteResult:
        """Store a batch atomically; duplicates are absorbed, conflicts recorded.

        The hot path is one statement on the driver connection in autocommit, that is one round
        trip and one transaction per batch, with no BEGIN / COMMIT / SAVEPOINT around it. Behind
        a transaction-pooling proxy it runs inside BEGIN / COMMIT instead: an unnamed statement
        is parsed and executed in two steps, which must reach the same server connection.

        ``server``: the identity of the server the caller's earlier batches went to
        (:attr:`WriteResult.server`); None for any. A batch that reaches another server writes
        no packet and raises :class:`ServerChanged`, so that the caller checks what survived
        (a failover behind a pooler raises no error of its own).

        ``rejected`` frames are stored and ``unstored`` ones (per fixture, those over the rate)
        counted in the same transaction, exactly once per ``batch``: the same token again (a
        retry of a batch whose commit's reply was lost) stores and counts nothing more.
        """
        # nothing made for a batch of packets alone (a frozen dataclass is slow to make)
        extra = _Rejects(rejected, unstored or {}, batch) if rejected or unstored else _NO_REJECTS
        try:
            raw, since = await self._write_connection()
            try:
                if not self._pooler:
                    result = await self._write(raw, actions, extra, server)
                else:
                    async with raw.transaction():
                        if self._async_commit:
                            await raw.execute(_ASYNC_COMMIT_LOCAL)
                        result = await self._write(raw, actions, extra, server)
            except BaseException as exc:
                # never hand out again a connection the error left unfit, or mid-transaction
                if suspect(exc) or raw.is_in_transaction():
                    await self._db.discard(raw)
                else:
                    self._writing.append((raw, since))
                raise
            self._writing.append((raw, since))  # kept for the next batch
        except DRIVER_ERRORS as exc:
            raise translate(exc, "writing a batch") from exc
        if server is not None and result.server is not None and result.server != server:
            raise ServerChanged(
                "another database server answers than before (a failover behind a pooler, or "
                "a restart): checking what it holds before writing on",
                server=result.server,
            )
        return result

    async def _write_connection(self) -> tuple[asyncpg.Connection, float]:
        """A write-path connection: one kept from an earlier batch, else one from the pool.

        A kept connection older than :data:`RECYCLE` is closed and replaced (a new one goes to
        whichever server the URL names now, after a failover say).
        """
        while self._writing:
            # popped before it is looked at: a kept connection whose server went away may have
            # been detached by the driver, and then raises on is_closed() (a database crash):
            # left in the list, it would fail every batch after
            raw, since = self._writing.pop()
            if time.monotonic() - since < RECYCLE and not raw.is_closed():
                return raw, since
            await self._db.discard(raw)
        raw = await self._db.acquire()
        if self._async_commit and not self._pooler:
            try:
                await raw.execute(_ASYNC_COMMIT)
            except BaseException:
                await self._db.discard(raw)  # never back to the pool half set up
                raise
        return raw, time.monotonic()

    async def _write(
        self,
        raw: asyncpg.Connection,
        actions: Sequence[tuple[uuid.UUID, Action]],
        extra: _Rejects,
        server: object,
    ) -> WriteResult:
        unknown = self._unknown_lineups(actions)
        if unknown:  # a read, once per fixture: otherwise no await here
            await self._read_lineups(raw, unknown)
        self._assign_sides(actions)
        rejected = list(extra.rejected)  # the careful path adds the packets it cannot store
        if len(actions) >= self.copy_at and not extra:
            copied = await self._copy(raw, actions, server)
            if copied is not None:
                return copied
        rounds = _rounds(actions)
        if len(rounds) <= 1 and not extra:
            result, only = WriteResult(), rounds[0] if rounds else []
            try:
                if self._pooler:  # a savepoint in the transaction, so a failure leaves it usable
                    async with raw.transaction():
                        await self._insert_round(raw, only, result, server)
                else:
                    await self._insert_round(raw, only, result, server)
                return result
            except BAD_DATA:
                pass  # a packet the database cannot hold: the careful path below finds it
        result = WriteResult()
        async with raw.transaction():
            if not actions:  # rejected frames alone: still say which server took them
                result.server = await raw.fetchval(f"SELECT {SERVER}")
            for round_ in rounds:
                try:
                    async with raw.transaction():  # a savepoint
                        await self._insert_round(raw, round_, result, server)
                except BAD_DATA:
                    # e.g. \u0000 in a jsonb string: store the others, keep its bytes as rejected
                    for item in round_:
                        try:
                            async with raw.transaction():
                                await self._insert_round(raw, [item], result, server)
                        except BAD_DATA as exc:
                            fixture_id, action = item
                            result.unstorable[fixture_id] = result.unstorable.get(fixture_id, 0) + 1
                            reason = f"seq {action.seq} cannot be stored: {exc}"
                            bad = Rejected.of(action.payload.encode(), reason, action.received_at)
                            rejected.append((fixture_id, bad))
            if rejected or extra.unstored:
                counts = dict.fromkeys((f for f, _ in rejected), 0) | dict(extra.unstored)
                result.rejected = await raw.fetchval(
                    _INSERT_REJECTED_SQL,
                    [f for f, _ in rejected],
                    [r.received_at for _, r in rejected],
                    [r.raw for _, r in rejected],  # at most REJECTED_KEEP_BYTES
                    [safe_reason(r.reason) for _, r in rejected],
                    [r.length for _, r in rejected],
                    [r.sha256 for _, r in rejected],
                    extra.batch or uuid.uuid4(),
                    list(counts),
                    list(counts.values()),
                )
        return result

    async def _copy(
        self, raw: asyncpg.Connection, actions: Sequence[tuple[uuid.UUID, Action]], server: object
    ) -> WriteResult | None:
        """Store a batch with COPY, in one transaction with its progress and notifications.

        COPY has no ON CONFLICT: a batch that repeats a stored packet (a replay after a
        reconnect), or holds one the database refuses, fails as a whole and is rolled back; None
        then says "use the statement", which absorbs the duplicates, records the conflicts and
        keeps what cannot be stored as rejected. Nothing is stored twice or lost either way.
        """
        progress: dict[uuid.UUID, list[Any]] = {}  # last seq, packets, finished, last packet at
        records = []
        for fixture_id, action in actions:
            records.append((fixture_id, *_values(action)))
            known = progress.get(fixture_id)
            if known is None:
                progress[fixture_id] = [action.seq, 1, action.finished, action.received_at]
            else:
                known[0] = max(known[0], action.seq)
                known[1] += 1
                known[2] = known[2] or action.finished
                known[3] = max(known[3], action.received_at)
        fixtures = sorted(progress)
        try:
            async with raw.transaction():  # a savepoint behind a pooler
                answering = await raw.fetchval(f"SELECT {SERVER}")
                if server is not None and answering != server:
                    return WriteResult(server=answering)  # nothing written: see write()
                await raw.copy_records_to_table("actions", records=records, columns=COLUMNS)
                await raw.execute(
                    _COPIED_PROGRESS,
                    fixtures,
                    *([progress[f][i] for f in fixtures] for i in range(4)),
                )
        except (asyncpg.UniqueViolationError, *BAD_DATA):
            return None  # see above: the statement path sorts it out
        return WriteResult(inserted={f: progress[f][1] for f in fixtures}, server=answering)

    def _unknown_lineups(
        self, actions: Sequence[tuple[uuid.UUID, Action]]
    ) -> set[uuid.UUID] | None:
        """The batch's fixtures whose Lineups are to be read first (None: none)."""
        lineups, unknown = self._lineups, None
        for fixture_id, action in actions:
            if (action.team_id is not None or action.type_id == LINEUPS) and (
                fixture_id not in lineups
            ):
                if unknown is None:
                    unknown = set()
                unknown.add(fixture_id)
        return unknown

    async def _read_lineups(self, raw: asyncpg.Connection, unknown: set[uuid.UUID]) -> None:
        """Read the stored Lineups of these fixtures; remembered only once all are read (a read
        that fails, the database going away, must not leave a fixture half known)."""
        found = {f: Lineups() for f in unknown}  # none yet: sides stay NULL until one comes
        for fixture_id, key, seq, type_id, send, home, away in await raw.fetch(
            _LINEUP_PACKETS, list(unknown), LINEUPS
        ):
            packet = LineupPacket(seq, _uuid_text(home), _uuid_text(away), send, type_id)
            found[fixture_id].see(key, packet)
        self._lineups.update(found)

    def _assign_sides(self, actions: Sequence[tuple[uuid.UUID, Action]]) -> None:
        """Fill ``Action.side`` from the fixture's Lineups in effect (stored, or earlier in this
        batch), by the home/away rule of :class:`ingest.feed.vocabulary.Lineups`."""
        lineups = self._lineups
        for fixture_id, action in actions:
            known = lineups.get(fixture_id)
            if known is None:
                continue  # neither a team's packet nor a Lineups: nothing to know yet
            # known.concerns(...), inlined: this runs for every packet the worker stores
            if action.type_id == LINEUPS or action.action_id in known.actions:
                home, away = action.lineup or (None, None)
                packet = LineupPacket(action.seq, home, away, action.send_type_id, action.type_id)
                known.see(action_key(action.action_id, action.seq), packet)
            elif action.team_id is not None:
                action.side = known.sides.get(action.team_id)

    async def _insert_round(
        self,
        raw: asyncpg.Connection,
        items: Sequence[tuple[uuid.UUID, Action]],
        result: WriteResult,
        server: object,
    ) -> None:
        if not items:
            return
        if len(items) == 1:
            fixture_id, action = items[0]
            row = await raw.fetchrow(_INSERT_ACTION, fixture_id, *_values(action), server)
            result.server = row[3]
            if row[1]:
                result.inserted[fixture_id] = result.inserted.get(fixture_id, 0) + 1
            if row[2]:
                result.conflicts.append((fixture_id, action.seq))
            return
        columns: list[Any] = [[f for f, _ in items]]
        columns += [list(c) for c in zip(*(_values(a) for _, a in items), strict=True)]
        row = await raw.fetchrow(_INSERT_ACTIONS, *columns, server)
        result.server = row["server"]
        for fixture_id, count in zip(row["fixtures"], row["counts"], strict=True):
            result.inserted[fixture_id] = result.inserted.get(fixture_id, 0) + count
        result.conflicts.extend(zip(row["conflict_fixtures"], row["conflict_seqs"], strict=True))


def _rounds(
    actions: Sequence[tuple[uuid.UUID, Action]],
) -> list[list[tuple[uuid.UUID, Action]]]:
    """Split a batch so no key appears twice in one statement (later copies go in later rounds)."""
    if len(actions) <= 1:
        return [list(actions)] if actions else []
    rounds: list[list[tuple[uuid.UUID, Action]]] = []
    seen: list[set[tuple[uuid.UUID, int]]] = []
    for item in actions:
        key = (item[0], item[1].seq)
        for i, keys in enumerate(seen):
            if key not in keys:
                keys.add(key)
                rounds[i].append(item)
                break
        else:
            seen.append({key})
            rounds.append([item])
    return rounds


def safe_reason(reason: str) -> str:
    """A reason PostgreSQL's text type can hold, of bounded length."""
    text = reason.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."


def _uuid_text(value: object) -> str | None:
    try:
        return str(uuid.UUID(str(value))) if value else None
    except ValueError:
        return None
