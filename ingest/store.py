"""The store: the only module that speaks SQL.

Every committed batch sends ``NOTIFY ingest_actions`` with a JSON payload per fixture
(``fixture_id``, ``max_seq``, ``inserted``, ``finished``).

Writes are idempotent: each action packet is inserted keyed by ``(fixture_id, seq)`` with
``ON CONFLICT DO NOTHING``; a replayed seq with a different payload is recorded in
``action_conflicts``. One batch is one statement and one transaction, with the rows passed as
arrays (``unnest``), so a batch costs one round trip whatever its size.

Known limit: when two workers write the same fixture at the same moment (a lease handover),
a replay whose first copy is committed by the other worker during this statement is absorbed but
not compared (the statement's snapshot predates it), so a differing payload would go unrecorded.
Nothing is lost: the stored row stays. Outside such an overlap, every conflict is recorded.

Driver errors are translated here into :mod:`ingest.errors`, so nothing else imports a driver.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy.exc as sa_exc
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ingest.config import POOLER_PARAM, DatabaseTarget, parse_database_url
from ingest.errors import ConfigError, DatabaseUnavailable, IngestError, SchemaError
from ingest.packet import Action, Rejected
from ingest.ports import FixtureRow, FixtureState, WriteResult

log = logging.getLogger(__name__)

_MIGRATION_LOCK = 0x736E6B72  # pg_advisory_xact_lock key: one migration at a time

_INSERT_ACTIONS_SQL = """
    WITH input AS (
        SELECT * FROM unnest(
            CAST(:fixture_id AS uuid[]), CAST(:seq AS bigint[]), CAST(:payload AS text[]),
            CAST(:received_at AS timestamptz[]), CAST(:finished AS boolean[]),
            CAST(:action_id AS uuid[]), CAST(:fixture_seq_num AS bigint[]),
            CAST(:action_type_id AS integer[]), CAST(:action_type AS text[]),
            CAST(:action_subtype_id AS integer[]), CAST(:action_subtype AS text[]),
            CAST(:send_type_id AS smallint[]), CAST(:send_type AS text[]),
            CAST(:period AS integer[]), CAST(:provider_ts AS timestamptz[]),
            CAST(:timeline_sequence AS double precision[]),
            CAST(:team_id AS uuid[]), CAST(:player_id AS uuid[]), CAST(:side AS text[])
        ) AS t(fixture_id, seq, payload, received_at, finished, action_id, fixture_seq_num,
               action_type_id, action_type, action_subtype_id, action_subtype, send_type_id,
               send_type, period, provider_ts, timeline_sequence, team_id, player_id, side)
    ),
    inserted AS (
        INSERT INTO actions (fixture_id, seq, payload, received_at, finished, action_id,
                             fixture_seq_num, action_type_id, action_type, action_subtype_id,
                             action_subtype, send_type_id, send_type, period, provider_ts,
                             timeline_sequence, team_id, player_id, side)
        SELECT fixture_id, seq, payload::jsonb, received_at, finished, action_id,
               fixture_seq_num, action_type_id, action_type, action_subtype_id,
               action_subtype, send_type_id, send_type, period, provider_ts,
               timeline_sequence, team_id, player_id, side
        FROM input
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
        ON CONFLICT (fixture_id) DO UPDATE SET
            last_seq = GREATEST(f.last_seq, EXCLUDED.last_seq),
            packets = f.packets + EXCLUDED.packets,
            finished = f.finished OR EXCLUDED.finished,
            last_packet_at = GREATEST(f.last_packet_at, EXCLUDED.last_packet_at),
            finished_at = COALESCE(f.finished_at, EXCLUDED.finished_at)
    ),
    notified AS (
        -- delivered on commit: downstream settlement LISTENs instead of polling
        SELECT pg_notify('ingest_actions', json_build_object(
                   'fixture_id', fixture_id, 'max_seq', max(seq), 'inserted', count(*),
                   'finished', bool_or(finished))::text)
        FROM inserted GROUP BY fixture_id
    )
    SELECT (SELECT count(*) FROM notified) AS notified,
           ARRAY(SELECT fixture_id FROM inserted GROUP BY fixture_id ORDER BY 1) AS fixtures,
           ARRAY(SELECT count(*) FROM inserted GROUP BY fixture_id ORDER BY fixture_id) AS counts,
           ARRAY(SELECT seq FROM conflicts) AS conflict_seqs,
           ARRAY(SELECT fixture_id FROM conflicts) AS conflict_fixtures
    """


def _positional(sql: str, names: Sequence[str]) -> str:
    """``:name`` placeholders to asyncpg's ``$n``, in the order of ``names``."""
    for number, name in enumerate(names, 1):
        sql = sql.replace(f":{name} ", f"${number} ")
    return sql


_ACTION_COLUMNS = (
    "seq", "payload", "received_at", "finished", "action_id", "fixture_seq_num", "type_id",
    "type_name", "subtype_id", "subtype_name", "send_type_id", "send_type", "period",
    "provider_ts", "timeline_sequence", "team_id", "player_id", "side",
)  # fmt: skip
_PARAM_NAMES = (
    "seq", "payload", "received_at", "finished", "action_id", "fixture_seq_num",
    "action_type_id", "action_type", "action_subtype_id", "action_subtype", "send_type_id",
    "send_type", "period", "provider_ts", "timeline_sequence", "team_id", "player_id", "side",
)  # fmt: skip

_LATEST_LINEUPS = """
    SELECT DISTINCT ON (fixture_id) fixture_id,
           payload #>> '{fixtureAction,metadata,home,teamId}',
           payload #>> '{fixtureAction,metadata,away,teamId}'
    FROM actions WHERE fixture_id = ANY(CAST($1 AS uuid[])) AND action_type_id = 3
    ORDER BY fixture_id, seq DESC
    """

_INSERT_ACTIONS = _positional(_INSERT_ACTIONS_SQL, ("fixture_id", *_PARAM_NAMES))

_INSERT_REJECTED_SQL = """
    INSERT INTO rejected_messages (fixture_id, received_at, raw, reason, length, sha256)
    SELECT * FROM unnest(CAST($1 AS uuid[]), CAST($2 AS timestamptz[]),
                         CAST($3 AS bytea[]), CAST($4 AS text[]), CAST($5 AS bigint[]),
                         CAST($6 AS bytea[]))
"""
_REASON_CHARS = 500

# Errors the server reports about one packet's content (22: data exception, such as \u0000 or a
# lone surrogate in a jsonb string; 54: a program limit, such as nesting too deep for jsonb):
# that packet is kept as rejected, the others are stored.
_BAD_DATA = (asyncpg.DataError, asyncpg.ProgramLimitExceededError)


def migrations_dir() -> Path:
    here = Path(__file__).resolve().parent
    packaged = here / "_migrations"  # where the wheel puts them
    return packaged if packaged.is_dir() else here.parent / "migrations"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    return cfg


def _sqlstate(exc: BaseException) -> str:
    """The SQLSTATE of a driver error, raw (asyncpg) or wrapped (SQLAlchemy)."""
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else None
    for candidate in (exc, orig, getattr(orig, "__cause__", None)):
        state = getattr(candidate, "sqlstate", None)
        if isinstance(state, str):
            return state
    return ""


def _misconfigured(exc: BaseException) -> bool:
    """asyncpg found the URL unusable (a TLS file it cannot read, a bad host list, ...)."""
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else None
    chain = (exc, orig, getattr(orig, "__cause__", None), exc.__cause__)
    return any(isinstance(e, asyncpg.ClientConfigurationError) for e in chain)


# 25006: a read-only transaction (a standby, or default_transaction_read_only): the writable
# server is elsewhere (a failover); 57P: the server is shutting down or not accepting yet
_DISCARD_CONNECTION = frozenset({"25006", "57P01", "57P02", "57P03"})
# a named prepared statement went missing or exists twice: a transaction-pooling proxy
_POOLER_STATES = frozenset({"26000", "42P05"})


def is_unavailable(exc: BaseException) -> bool:
    """Is this driver error one where the database is (temporarily) out of reach?"""
    if _misconfigured(exc):
        return False  # the URL asks for something impossible: retrying will not help
    if isinstance(
        exc,
        OSError
        | TimeoutError
        | ConnectionError
        | asyncpg.InterfaceError
        | asyncpg.InternalClientError  # a connection left mid-operation: a fresh one will do
        | sa_exc.TimeoutError,
    ):
        return True  # sa_exc.TimeoutError: no pooled connection in time (the server is slow)
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    state = _sqlstate(exc)
    if state:
        # 08 connection exception, 57P admin shutdown / cannot connect now, 53 resources,
        # 40 deadlock / serialization failure, 57014 statement timeout or cancelled, 25006 a
        # read-only server (a standby reached during a failover): retry
        return state.startswith(("08", "57P", "53", "40")) or state in ("57014", "25006")
    return isinstance(exc, sa_exc.InterfaceError | sa_exc.OperationalError)


def translate(exc: BaseException, what: str) -> IngestError:
    """A driver error as one of ours, with a message for a person."""
    if isinstance(exc, IngestError):
        return exc
    state = _sqlstate(exc)
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig else exc
    detail = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    if _misconfigured(exc):
        return ConfigError(f"the database URL cannot be used ({what}): {detail}")
    if state in ("28P01", "28000"):
        return ConfigError(f"the database refused the credentials while {what}: {detail}")
    if state == "3D000":
        return ConfigError(f"the database does not exist ({what}): {detail}")
    if state in ("42P01", "42703"):
        return SchemaError(
            f"the schema is not as expected ({what}): {detail}; run `ingest migrate`"
        )
    if state in _POOLER_STATES:
        return ConfigError(
            f"database error while {what}: {detail}; behind a transaction-pooling proxy "
            f"(PgBouncer) add ?{POOLER_PARAM}=0 to the database URL"
        )
    if is_unavailable(exc):
        if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
            detail = f"cannot connect ({detail})"
        return DatabaseUnavailable(f"database unavailable while {what}: {detail}")
    return IngestError(f"database error while {what}: {detail}")


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


_WORKER_HEARTBEAT = """
INSERT INTO workers (worker_id, fixtures) VALUES (:owner, :held)
ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = now(), fixtures = EXCLUDED.fixtures
"""

_FAIR_SHARE = """
SELECT ceil(
    (SELECT count(*) FROM fixtures WHERE enabled AND NOT finished)::numeric
    / greatest(1, (SELECT count(*) FROM workers
                   WHERE heartbeat_at > now() - make_interval(secs => :ttl)
                      OR worker_id = :owner)))::integer
"""

_CLAIM = f"""
WITH share AS ({_FAIR_SHARE}),
candidates AS (
    SELECT fixture_id FROM fixtures
    WHERE enabled AND NOT finished
      AND (owner IS NULL OR lease_expires_at IS NULL OR lease_expires_at < now())
    ORDER BY lease_expires_at NULLS FIRST, added_at, fixture_id
    LIMIT greatest(0, least(:cap, (SELECT * FROM share)) - :held)
    FOR UPDATE SKIP LOCKED
)
UPDATE fixtures f SET owner = :owner,
       lease_expires_at = now() + make_interval(secs => :ttl),
       lease_version = f.lease_version + 1
FROM candidates c WHERE f.fixture_id = c.fixture_id
RETURNING f.fixture_id
"""


_WRITE_RECYCLE = 1800.0  # seconds a pooled (or kept write-path) connection is used


def _unnamed() -> str:
    return ""  # asyncpg's name for the unnamed statement: it lives until the next one


def create_engine(
    target: DatabaseTarget, *, pool_size: int = 4, command_timeout: float | None = 60.0
) -> AsyncEngine:
    """An engine whose connections asyncpg makes from the URL as the user wrote it.

    asyncpg reads libpq's URL syntax itself (multi-host lists, ``target_session_attrs``, TLS
    files, unix sockets, ``passfile`` and the ``PG*`` variables), so the URL is handed over as
    it is rather than rebuilt by SQLAlchemy (whose URL parser cannot hold a host list).

    Behind a transaction-pooling proxy (``target.pooler``) a session lasts one transaction:
    nothing is prepared under a name (SQLAlchemy's statements are unnamed and run inside its
    transactions, asyncpg's statement cache is off) and the write path runs in a transaction.
    """
    kwargs: dict[str, Any] = {"server_settings": {"application_name": "snooker-ingest"}}
    if command_timeout is not None:
        kwargs["command_timeout"] = command_timeout
    if target.connect_timeout is not None:
        kwargs["timeout"] = target.connect_timeout
    adapter: dict[str, Any] = {}
    if target.pooler:
        kwargs["statement_cache_size"] = 0
        adapter = {"prepared_statement_cache_size": 0, "prepared_statement_name_func": _unnamed}

    def connect() -> asyncpg.Connection:
        return asyncpg.connect(target.dsn, **kwargs)

    def creator() -> Any:  # what create_async_engine(async_creator=) does, plus `adapter`
        dbapi: Any = engine.sync_engine.dialect.dbapi
        return dbapi.connect(async_creator_fn=connect, **adapter)

    engine = create_async_engine(
        "postgresql+asyncpg://",
        creator=creator,
        pool_size=pool_size,
        max_overflow=2,
        pool_pre_ping=False,  # a ping per checkout is a round trip per batch; see write()
        pool_recycle=_WRITE_RECYCLE,
    )

    @event.listens_for(engine.sync_engine, "handle_error")
    def _discard_suspect(context: Any) -> None:
        # A server that turned read-only (a standby, after a failover) or is shutting down:
        # this connection will never write again, so the pool must not hand it out again.
        if _sqlstate(context.original_exception) in _DISCARD_CONNECTION:
            context.is_disconnect = True

    return engine


class Store:
    """PostgreSQL access for the whole product."""

    @classmethod
    def connect(
        cls, url: str, *, pool_size: int = 4, command_timeout: float | None = 60.0
    ) -> Store:
        """``command_timeout``: a statement that takes longer fails (and is retried) instead of
        hanging on a connection whose server vanished; None for migrations."""
        target = parse_database_url(url)
        return cls(create_engine(target, pool_size=pool_size, command_timeout=command_timeout),
                   target)  # fmt: skip

    def __init__(self, engine: AsyncEngine, target: DatabaseTarget | None = None) -> None:
        self._engine = engine
        self._target = target
        self._pooler = target is not None and target.pooler
        # fixture -> {team id: "home"/"away"}, from its Lineups packet, to fill actions.side
        self._sides: dict[uuid.UUID, dict[str, str]] = {}
        # Write-path connections stay checked out between batches (at most one per concurrent
        # write, so no more than before): a SQLAlchemy checkout and return costs more client
        # CPU than a one-packet batch statement itself. (connection, driver connection, since)
        self._writing: list[tuple[AsyncConnection, asyncpg.Connection, float]] = []

    def __repr__(self) -> str:
        shown = self._target.display if self._target is not None else "engine"
        return f"Store({shown!r})"

    async def close(self) -> None:
        held, self._writing = self._writing, []
        for conn, _, _ in held:
            with contextlib.suppress(Exception):
                await conn.close()
        await self._engine.dispose()

    # -- schema -------------------------------------------------------------------------

    async def migrate(self, revision: str = "head", *, downgrade: bool = False) -> None:
        def run(sync_conn: Connection) -> None:
            sync_conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            cfg = alembic_config()
            cfg.attributes["connection"] = sync_conn
            if downgrade:
                command.downgrade(cfg, revision)
            else:
                command.upgrade(cfg, revision)

        try:
            async with self._engine.begin() as conn:
                await conn.run_sync(run)
        except (sa_exc.SQLAlchemyError, OSError) as exc:
            raise translate(exc, "migrating the schema") from exc

    async def schema_revision(self) -> str | None:
        def current(sync_conn: Connection) -> str | None:
            return MigrationContext.configure(sync_conn).get_current_revision()

        try:
            async with self._engine.connect() as conn:
                return await conn.run_sync(current)
        except (sa_exc.SQLAlchemyError, OSError) as exc:
            raise translate(exc, "reading the schema version") from exc

    @staticmethod
    def head_revision() -> str:
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert head is not None
        return head

    async def check_schema(self) -> None:
        """Raise :class:`SchemaError` unless the schema is at the head revision."""
        current, head = await self.schema_revision(), self.head_revision()
        if current != head:
            state = "empty" if current is None else f"at revision {current}"
            raise SchemaError(
                f"the database schema is {state}, this version needs {head}: run `ingest migrate`"
            )

    # -- writing ------------------------------------------------------------------------

    async def write(
        self,
        actions: Sequence[tuple[uuid.UUID, Action]],
        rejected: Sequence[tuple[uuid.UUID, Rejected]] = (),
    ) -> WriteResult:
        """Store a batch atomically; duplicates are absorbed, conflicts recorded.

        The hot path is one statement on the driver connection in autocommit, that is one round
        trip and one transaction per batch, with no BEGIN / COMMIT / SAVEPOINT around it. Behind
        a transaction-pooling proxy it runs inside BEGIN / COMMIT instead: an unnamed statement
        is parsed and executed in two steps, which must reach the same server connection.
        """
        try:
            conn, raw, since = await self._write_connection()
            try:
                if not self._pooler:
                    result = await self._write(raw, actions, list(rejected))
                else:
                    async with raw.transaction():
                        result = await self._write(raw, actions, list(rejected))
            except BaseException as exc:
                # An error the server reported leaves the connection usable; anything else
                # (a network error, a cancellation mid-statement, a confused protocol state)
                # leaves it suspect: never hand it out again.
                suspect = not isinstance(exc, asyncpg.PostgresError) or is_unavailable(exc)
                if suspect or raw.is_in_transaction():
                    raw.terminate()  # at once: a graceful close could wait on a dead peer
                    await conn.invalidate()
                    await conn.close()
                else:
                    self._writing.append((conn, raw, since))
                raise
            self._writing.append((conn, raw, since))  # kept for the next batch
            return result
        except (
            sa_exc.SQLAlchemyError,
            OSError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,
        ) as exc:
            raise translate(exc, "writing a batch") from exc

    async def _write_connection(self) -> tuple[AsyncConnection, asyncpg.Connection, float]:
        """A write-path connection: one kept from an earlier batch, else one from the pool.

        A kept connection older than the pool's recycle time is returned and replaced, as the
        pool would have done.
        """
        while self._writing:
            conn, raw, since = self._writing.pop()
            if time.monotonic() - since < _WRITE_RECYCLE and not raw.is_closed():
                return conn, raw, since
            with contextlib.suppress(Exception):
                if raw.is_closed():  # the server went away while it was idle
                    await conn.invalidate()
                await conn.close()
        conn = await self._engine.connect()
        try:
            raw = (await conn.get_raw_connection()).driver_connection
        except BaseException:
            await conn.close()
            raise
        assert raw is not None
        return conn, raw, time.monotonic()

    async def _write(
        self,
        raw: asyncpg.Connection,
        actions: Sequence[tuple[uuid.UUID, Action]],
        rejected: list[tuple[uuid.UUID, Rejected]],
    ) -> WriteResult:
        await self._assign_sides(raw, actions)
        rounds = _rounds(actions)
        if len(rounds) <= 1 and not rejected:
            result = WriteResult()
            try:
                # a savepoint when in a transaction already (pooler), so a failure leaves it usable
                async with raw.transaction() if raw.is_in_transaction() else _no_transaction():
                    await self._insert_round(raw, rounds[0] if rounds else [], result)
                return result
            except _BAD_DATA:
                pass  # a packet the database cannot hold: the careful path below finds it
        result = WriteResult()
        async with raw.transaction():
            for round_ in rounds:
                try:
                    async with raw.transaction():  # a savepoint
                        await self._insert_round(raw, round_, result)
                except _BAD_DATA:
                    # e.g. \u0000 in a jsonb string: store the others, keep its bytes as rejected
                    for item in round_:
                        try:
                            async with raw.transaction():
                                await self._insert_round(raw, [item], result)
                        except _BAD_DATA as exc:
                            fixture_id, action = item
                            result.unstorable[fixture_id] = result.unstorable.get(fixture_id, 0) + 1
                            reason = f"seq {action.seq} cannot be stored: {exc}"
                            bad = Rejected.of(action.payload.encode(), reason, action.received_at)
                            rejected.append((fixture_id, bad))
            if rejected:
                await raw.execute(
                    _INSERT_REJECTED_SQL,
                    [f for f, _ in rejected],
                    [r.received_at for _, r in rejected],
                    [r.raw for _, r in rejected],  # at most REJECTED_KEEP_BYTES
                    [_safe_reason(r.reason) for _, r in rejected],
                    [r.length for _, r in rejected],
                    [r.sha256 for _, r in rejected],
                )
                result.rejected = len(rejected)
        return result

    async def _assign_sides(
        self, raw: asyncpg.Connection, actions: Sequence[tuple[uuid.UUID, Action]]
    ) -> None:
        """Fill ``Action.side`` from the fixture's Lineups (seen in this batch or stored)."""
        unknown = {
            f for f, a in actions if f not in self._sides and a.team_id is not None and not a.lineup
        }
        if unknown:
            rows = await raw.fetch(_LATEST_LINEUPS, list(unknown))
            for fixture_id, home, away in rows:
                self._sides[fixture_id] = _side_map(_uuid_text(home), _uuid_text(away))
            for fixture_id in unknown - self._sides.keys():
                self._sides[fixture_id] = {}  # no Lineups yet: sides stay NULL until one comes
        for fixture_id, action in actions:
            if action.lineup is not None:
                self._sides[fixture_id] = _side_map(*action.lineup)
            elif action.team_id is not None:
                action.side = self._sides.get(fixture_id, {}).get(action.team_id)

    async def _insert_round(
        self,
        raw: asyncpg.Connection,
        items: Sequence[tuple[uuid.UUID, Action]],
        result: WriteResult,
    ) -> None:
        if not items:
            return
        columns = [[f for f, _ in items]]
        columns += [[getattr(a, attr) for _, a in items] for attr in _ACTION_COLUMNS]
        row = await raw.fetchrow(_INSERT_ACTIONS, *columns)
        for fixture_id, count in zip(row["fixtures"], row["counts"], strict=True):
            result.inserted[fixture_id] = result.inserted.get(fixture_id, 0) + count
        result.conflicts.extend(zip(row["conflict_fixtures"], row["conflict_seqs"], strict=True))

    # -- reading ------------------------------------------------------------------------

    async def _fetch(self, what: str, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        try:
            async with self._engine.connect() as conn:
                return list((await conn.execute(text(sql), params or {})).all())
        except (sa_exc.SQLAlchemyError, OSError) as exc:
            raise translate(exc, what) from exc

    async def _execute(self, what: str, sql: str, params: dict[str, Any] | None = None) -> int:
        try:
            async with self._engine.begin() as conn:
                return (await conn.execute(text(sql), params or {})).rowcount
        except (sa_exc.SQLAlchemyError, OSError) as exc:
            raise translate(exc, what) from exc

    async def ping(self) -> None:
        await self._fetch("connecting to the database", "SELECT 1")

    async def max_seq(self, fixture_id: uuid.UUID) -> int:
        """The resume point: ``MAX(seq)`` of the fixture, 0 when nothing is stored."""
        rows = await self._fetch(
            "reading the resume position",
            "SELECT coalesce(max(seq), 0) FROM actions WHERE fixture_id = :f",
            {"f": fixture_id},
        )
        return int(rows[0][0])

    async def max_seqs(self, fixture_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        """``MAX(seq)`` of several fixtures at once (0 for a fixture with nothing stored)."""
        rows = await self._fetch(
            "reading the stored positions",
            "SELECT f, coalesce((SELECT max(seq) FROM actions WHERE fixture_id = f), 0) "
            "FROM unnest(CAST(:ids AS uuid[])) AS f",
            {"ids": list(fixture_ids)},
        )
        return {row[0]: int(row[1]) for row in rows}

    async def payload_at(self, fixture_id: uuid.UUID, seq: int) -> str | None:
        """The stored packet at ``seq`` as JSON text (not decoded here: a hostile packet may be
        nested deeper than Python's recursion limit), or None."""
        rows = await self._fetch(
            "reading a stored packet",
            "SELECT payload::text FROM actions WHERE fixture_id = :f AND seq = :s",
            {"f": fixture_id, "s": seq},
        )
        return str(rows[0][0]) if rows else None

    async def is_numbered(self, fixture_id: uuid.UUID) -> bool | None:
        """Does the fixture's latest stored packet carry the provider's ``fixtureSeqNum``?
        None when nothing is stored."""
        rows = await self._fetch(
            "reading the resume position",
            "SELECT fixture_seq_num IS NOT NULL FROM actions WHERE fixture_id = :f "
            "ORDER BY seq DESC LIMIT 1",
            {"f": fixture_id},
        )
        return bool(rows[0][0]) if rows else None

    async def register(self, fixture_ids: Iterable[uuid.UUID], *, enable: bool = False) -> int:
        """Add fixtures to the registry; with ``enable``, re-enable ones that were disabled."""
        ids = list(fixture_ids)
        conflict = "UPDATE SET enabled = true" if enable else "NOTHING"
        return await self._execute(
            "registering fixtures",
            "INSERT INTO fixtures (fixture_id) SELECT DISTINCT * FROM unnest(CAST(:ids AS uuid[])) "
            f"ON CONFLICT (fixture_id) DO {conflict}",
            {"ids": ids},
        )

    async def set_enabled(self, fixture_id: uuid.UUID, enabled: bool) -> bool:
        count = await self._execute(
            "updating the fixture registry",
            "UPDATE fixtures SET enabled = :e WHERE fixture_id = :f",
            {"e": enabled, "f": fixture_id},
        )
        return count > 0

    async def fixtures(self, fixture_ids: Sequence[uuid.UUID] | None = None) -> list[FixtureRow]:
        where = "WHERE fixture_id = ANY(CAST(:ids AS uuid[]))" if fixture_ids is not None else ""
        rows = await self._fetch(
            "reading the fixture registry",
            "SELECT fixture_id, enabled, finished, last_seq, packets, last_packet_at, state, "
            "state_changed_at, connects, last_error, owner, lease_expires_at "
            f"FROM fixtures {where} "
            "ORDER BY added_at, fixture_id",
            {"ids": list(fixture_ids)} if fixture_ids is not None else None,
        )
        return [FixtureRow(*row) for row in rows]

    async def save_states(self, states: Sequence[FixtureState]) -> None:
        if not states:
            return
        await self._execute(
            "saving fixture states",
            """
            UPDATE fixtures f SET state = s.state, state_changed_at = s.since,
                   connects = s.connects, last_error = s.last_error,
                   rejected_unstored = f.rejected_unstored + s.unstored
            FROM unnest(CAST(:ids AS uuid[]), CAST(:states AS text[]),
                        CAST(:since AS timestamptz[]), CAST(:connects AS integer[]),
                        CAST(:errors AS text[]), CAST(:unstored AS bigint[]))
                 AS s(fixture_id, state, since, connects, last_error, unstored)
            WHERE f.fixture_id = s.fixture_id
            """,
            {
                "ids": [s.fixture_id for s in states],
                "states": [s.state for s in states],
                "since": [s.since for s in states],
                "connects": [s.connects for s in states],
                "errors": [_safe_reason(s.last_error) if s.last_error else None for s in states],
                "unstored": [s.rejected_unstored for s in states],
            },
        )

    # -- leases (several workers, one database) ------------------------------------------

    async def claim_fixtures(
        self, owner: str, ttl: float, max_fixtures: int | None, held: int
    ) -> list[uuid.UUID]:
        """Heartbeat, then claim unowned or expired fixtures up to this worker's fair share.

        The share is the runnable fixtures divided by the live workers (rounded up), capped by
        ``max_fixtures``; ``FOR UPDATE SKIP LOCKED`` lets workers claim at the same moment
        without waiting on each other or taking the same fixture.
        """
        rows = await self._fetch_in_transaction(
            "claiming fixtures",
            [
                (_WORKER_HEARTBEAT, {"owner": owner, "held": held}),
                (_CLAIM, {"owner": owner, "ttl": ttl, "held": held,
                          "cap": max_fixtures if max_fixtures is not None else 2**31 - 1}),
            ],
        )  # fmt: skip
        return [row[0] for row in rows]

    async def fair_share(self, owner: str, ttl: float) -> int:
        rows = await self._fetch(
            "reading the fair share", _FAIR_SHARE, {"owner": owner, "ttl": ttl}
        )
        return int(rows[0][0])

    async def renew_leases(
        self, owner: str, ttl: float, fixture_ids: Sequence[uuid.UUID]
    ) -> list[uuid.UUID]:
        """Extend this worker's leases; the fixtures not returned are no longer ours."""
        rows = await self._fetch_in_transaction(
            "renewing leases",
            [
                (_WORKER_HEARTBEAT, {"owner": owner, "held": len(fixture_ids)}),
                (
                    """
                    UPDATE fixtures SET lease_expires_at = now() + make_interval(secs => :ttl)
                    WHERE owner = :owner AND fixture_id = ANY(CAST(:ids AS uuid[]))
                    RETURNING fixture_id
                    """,
                    {"owner": owner, "ttl": ttl, "ids": list(fixture_ids)},
                ),
            ],
        )
        return [row[0] for row in rows]

    async def release_leases(
        self, owner: str, fixture_ids: Sequence[uuid.UUID] | None = None
    ) -> None:
        """Give fixtures back (all of this worker's when ``fixture_ids`` is None)."""
        await self._execute(
            "releasing leases",
            "UPDATE fixtures SET owner = NULL, lease_expires_at = NULL WHERE owner = :owner "
            "AND (CAST(:ids AS uuid[]) IS NULL OR fixture_id = ANY(CAST(:ids AS uuid[])))",
            {"owner": owner, "ids": list(fixture_ids) if fixture_ids is not None else None},
        )
        if fixture_ids is None:
            await self._execute(
                "leaving the worker list", "DELETE FROM workers WHERE worker_id = :owner",
                {"owner": owner},
            )  # fmt: skip

    async def _fetch_in_transaction(
        self, what: str, statements: Sequence[tuple[str, dict[str, Any]]]
    ) -> list[Any]:
        try:
            async with self._engine.begin() as conn:
                rows: list[Any] = []
                for sql, params in statements:
                    result = await conn.execute(text(sql), params)
                    rows = list(result.all()) if result.returns_rows else []
                return rows
        except (sa_exc.SQLAlchemyError, OSError) as exc:
            raise translate(exc, what) from exc

    async def runnable_fixtures(self) -> list[uuid.UUID]:
        rows = await self._fetch(
            "reading the fixture registry",
            "SELECT fixture_id FROM fixtures WHERE enabled AND NOT finished "
            "ORDER BY added_at, fixture_id",
        )
        return [row[0] for row in rows]

    async def integrity(self, fixture_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
        """Per fixture: packets, seq gaps (as "first-last" ranges), conflicts, rejected frames."""
        rows = await self._fetch("checking integrity", _INTEGRITY, {"f": fixture_id})
        return [dict(row._mapping) for row in rows]

    async def summary_mismatches(
        self, fixture_ids: Sequence[uuid.UUID] | None = None
    ) -> list[dict[str, Any]]:
        """Rows of the ``summary_mismatches`` view (all fixtures when ``fixture_ids`` is None):
        ``fixture_id``, ``seq``, ``field``, ``ours``, ``provider``, in fixture and field order."""
        where = "WHERE fixture_id = ANY(CAST(:ids AS uuid[]))" if fixture_ids is not None else ""
        rows = await self._fetch_in_transaction(
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
        return [dict(row._mapping) for row in rows]

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
        rows = await self._fetch_in_transaction(
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
        return {row[0]: dict(row._mapping) for row in rows}

    async def finished_fixtures(self) -> list[uuid.UUID]:
        """The fixtures whose finished packet is stored, in fixture id order."""
        rows = await self._fetch(
            "reading the finished fixtures",
            "SELECT DISTINCT fixture_id FROM actions WHERE finished ORDER BY fixture_id",
        )
        return [row[0] for row in rows]

    async def stored_packets(self, fixture_id: uuid.UUID) -> list[str]:
        """Every stored packet of a fixture as JSON text, in seq order: the payload received
        (jsonb: the same JSON value, with its keys and whitespace normalised by PostgreSQL)."""
        rows = await self._fetch(
            "reading the stored packets",
            "SELECT payload::text FROM actions WHERE fixture_id = :f ORDER BY seq",
            {"f": fixture_id},
        )
        return [str(row[0]) for row in rows]

    async def match_report(self, fixture_id: uuid.UUID) -> dict[str, Any] | None:
        """Everything ``ingest report`` shows, read from the settlement views."""
        params = {"f": fixture_id}
        match = await self._fetch(
            "reading the match", "SELECT * FROM match_results WHERE fixture_id = :f", params
        )
        if not match:
            return None
        frames = await self._fetch(
            "reading the frames",
            "SELECT * FROM frame_results WHERE fixture_id = :f ORDER BY frame_number",
            params,
        )
        breaks = await self._fetch(
            "reading the breaks",
            "SELECT * FROM breaks WHERE fixture_id = :f ORDER BY first_seq",
            params,
        )
        players = await self._fetch(
            "reading the player statistics",
            "SELECT * FROM player_match_stats WHERE fixture_id = :f ORDER BY side DESC",
            params,
        )
        mismatches = await self.summary_mismatches([fixture_id])
        return {
            "mismatches": mismatches,
            "match": dict(match[0]._mapping),
            "frames": [dict(r._mapping) for r in frames],
            "breaks": [dict(r._mapping) for r in breaks],
            "players": [dict(r._mapping) for r in players],
        }


@contextlib.asynccontextmanager
async def _no_transaction() -> AsyncIterator[None]:
    yield


def _rounds(
    actions: Sequence[tuple[uuid.UUID, Action]],
) -> list[list[tuple[uuid.UUID, Action]]]:
    """Split a batch so no key appears twice in one statement (later copies go in later rounds)."""
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


def _safe_reason(reason: str) -> str:
    """A reason PostgreSQL's text type can hold, of bounded length."""
    text = reason.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."


def _side_map(home: str | None, away: str | None) -> dict[str, str]:
    sides = {}
    if home is not None:
        sides[home] = "home"
    if away is not None:
        sides[away] = "away"
    return sides


def _uuid_text(value: object) -> str | None:
    try:
        return str(uuid.UUID(str(value))) if value else None
    except ValueError:
        return None
