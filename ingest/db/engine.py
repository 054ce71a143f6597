"""The connection pool, and the three ways a query runs on it (with its errors translated).

One asyncpg pool per process, made from the URL as the user wrote it: a :class:`Database`, which
every repository of :mod:`ingest.db` (registry, leases, read models, migrations, settlement, the
write path) holds and shares. A query runs through :meth:`Database.fetch`,
:meth:`Database.execute` or :meth:`Database.fetch_in_transaction`, which translate driver errors
(:mod:`ingest.db.translate`); the write path and settlement's transaction hold a connection
of their own (:meth:`Database.connection`, :meth:`Database.acquire`) and translate their errors
themselves. Queries are written with ``:name`` parameters (the notation psql's variables use);
:func:`positional` turns them into the driver's ``$n`` once per statement.

The worker speaks to asyncpg directly: SQLAlchemy and alembic, which the schema's definition and
``ingest migrate`` use, cost a fifth of a second and 25 MB to import, more than the rest of a
running worker. They are imported only by :mod:`ingest.db.migrations` and :mod:`ingest.db.schema`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg

from ingest.db.translate import (
    DRIVER_ERRORS,
    is_unavailable,
    translate,
)
from ingest.settings import COMMAND_TIMEOUT, POOL_SIZE, DatabaseTarget

RECYCLE = 1800.0  # seconds a kept connection (write path, fetch_kept) is used, then replaced
ACQUIRE_TIMEOUT = 30.0  # seconds to wait for a free pooled connection: then "unavailable"
CLOSE_TIMEOUT = 0.5  # seconds for a graceful close of the connections, then they are cut
_OVERFLOW = 2  # connections beyond pool_size when every pooled one is busy
T = TypeVar("T")

_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@functools.lru_cache(maxsize=256)
def positional(sql: str) -> tuple[str, tuple[str, ...]]:
    """``:name`` parameters as ``$n`` (the same name, the same number), and the names in order.

    ``::type`` casts are left alone. The statements are ours: none has a ``:word`` inside a
    string literal.
    """
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _NAMED.sub(number, sql), tuple(names)


def _arguments(sql: str, params: dict[str, Any] | None) -> tuple[str, list[Any]]:
    text, names = positional(sql)
    values = params or {}
    return text, [values[n] for n in names]


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _jsonb_bytes(value: Any) -> bytes:
    return b"\x01" + _json_text(value).encode()  # jsonb's binary form: version 1, then text


def _jsonb_value(data: bytes) -> Any:
    return json.loads(data[1:])


async def _setup(conn: asyncpg.Connection) -> None:
    # json and jsonb read as Python values, as SQLAlchemy's asyncpg dialect does; a str is sent
    # as it is (JSON text). jsonb in binary, which COPY (the write path's) needs.
    await conn.set_type_codec(
        "json", encoder=_json_text, decoder=json.loads, schema="pg_catalog", format="text"
    )
    await conn.set_type_codec(
        "jsonb", encoder=_jsonb_bytes, decoder=_jsonb_value, schema="pg_catalog", format="binary"
    )


def connect_arguments(target: DatabaseTarget, command_timeout: float | None) -> dict[str, Any]:
    """What ``asyncpg.connect`` gets besides the URL.

    asyncpg reads libpq's URL syntax itself (multi-host lists, ``target_session_attrs``, TLS
    files, unix sockets, ``passfile`` and the ``PG*`` variables), so the URL is handed over as it
    is. Behind a transaction-pooling proxy (``target.pooler``) a session lasts one transaction:
    nothing is prepared under a name (the statement cache is off) and every query runs inside a
    transaction, so that its parse and its execution reach the same server connection.
    """
    settings = {"application_name": "snooker-ingest"}
    if not target.pooler:
        # The settlement views' cost estimates are high enough for PostgreSQL to JIT-compile a
        # one-fixture lookup: about a second instead of milliseconds. Behind a pooler, which
        # refuses unknown startup parameters, the queries over views SET LOCAL jit = off.
        settings["jit"] = "off"
    kwargs: dict[str, Any] = {"server_settings": settings, "timeout": target.connect_timeout}
    if command_timeout is not None:
        kwargs["command_timeout"] = command_timeout
    if target.pooler:
        kwargs["statement_cache_size"] = 0
    return kwargs


# what makes a new connection try the URL's next host (as asyncpg does between its hosts, and a
# server starting up or shutting down, as libpq does)
_NEXT_HOST = (OSError, TimeoutError, asyncpg.TargetServerAttributeNotMatched,
              asyncpg.CannotConnectNowError)  # fmt: skip


def connector(target: DatabaseTarget) -> Callable[..., Awaitable[asyncpg.Connection]]:
    """``asyncpg.connect`` for the pool and for migrations, giving each host of a multi-host
    URL the whole ``connect_timeout`` (libpq's meaning of it) instead of one for all of them.

    asyncpg tries the hosts in order within one timeout: a first host that accepts and never
    answers (a hung server), or whose packets go nowhere (a dead machine), used all of it, and
    the promoted standby behind it was never tried. Here each host is a connection attempt of
    its own; the last one's error is raised when none will do."""

    async def connect(_dsn: str, **kwargs: Any) -> asyncpg.Connection:
        *others, last = target.attempts
        for dsn in others:
            try:
                return await asyncpg.connect(dsn, **kwargs)
            except _NEXT_HOST:
                continue
        return await asyncpg.connect(last, **kwargs)

    return connect


class Database:
    """A pool over a database target (shown without its password), shared by the repositories.

    The pool is made on first use, so that constructing a store needs no event loop.
    """

    def __init__(
        self,
        target: DatabaseTarget,
        *,
        pool_size: int = POOL_SIZE,
        command_timeout: float | None = COMMAND_TIMEOUT,
    ) -> None:
        self._target = target
        self._pooler = target.pooler
        self._pool_size = pool_size
        self._command_timeout = command_timeout
        self._pool: asyncpg.Pool | None = None
        self._opening: asyncio.Lock | None = None
        self._kept: tuple[asyncpg.Connection, float] | None = None  # fetch_kept's (conn, since)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._target.display!r})"

    @property
    def target(self) -> DatabaseTarget:
        return self._target

    @property
    def pooler(self) -> bool:
        """Behind a transaction-pooling proxy: every statement runs inside a transaction."""
        return self._pooler

    async def close(self) -> None:
        """Close the connections (gracefully: :meth:`terminate` where that cannot wait)."""
        kept, self._kept = self._kept, None
        if kept is not None:  # before the pool closes, which waits for its connections
            await self.discard(kept[0])  # not released: that resets the session, a round trip
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await pool.close()
            except DRIVER_ERRORS:
                pool.terminate()
            except asyncio.CancelledError:  # a caller's time limit: what is left is cut
                pool.terminate()
                raise

    def terminate(self) -> None:
        """Cut every connection at once, in use or not: for a server that has stopped
        answering, where a graceful close would wait on it."""
        kept, self._kept = self._kept, None
        pool, self._pool = self._pool, None
        try:
            if kept is not None:
                with contextlib.suppress(*DRIVER_ERRORS):  # lost: detached by the driver already
                    kept[0].terminate()
        finally:
            if pool is not None:
                pool.terminate()

    async def ping(self) -> None:
        await self.fetch("connecting to the database", "SELECT 1")

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is None:
                pool = asyncpg.create_pool(
                    self._target.dsn,
                    min_size=0,
                    max_size=self._pool_size + _OVERFLOW,
                    init=_setup,
                    connect=connector(self._target),
                    **connect_arguments(self._target, self._command_timeout),
                )
                await pool  # min_size=0: no connection is made here
                self._pool = pool
        return self._pool

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection. One that failed in a way that leaves it suspect (a network
        error, a cancellation mid-query, a server that turned read-only or is shutting down) is
        closed rather than handed out again."""
        pool = await self._get_pool()
        conn = await pool.acquire(timeout=ACQUIRE_TIMEOUT)
        try:
            yield conn
        except BaseException as exc:
            if suspect(exc):
                conn.terminate()
            raise
        finally:
            await pool.release(conn)

    async def acquire(self) -> asyncpg.Connection:
        """A connection held by the caller (the write path, a LISTEN) until :meth:`release`."""
        pool = await self._get_pool()
        return await pool.acquire(timeout=ACQUIRE_TIMEOUT)

    async def discard(self, conn: asyncpg.Connection) -> None:
        """Close a held connection for good and give its slot back: one the caller will not use
        again (unfit after an error, or kept too long: the pool makes a new one, to whichever
        server the URL names then, where a released one would be handed out again). At once:
        a graceful close could wait on a dead peer."""
        with contextlib.suppress(*DRIVER_ERRORS):  # already closed, or detached by the driver
            if not conn.is_closed():
                conn.terminate()
        await self.release(conn)

    async def release(self, conn: asyncpg.Connection) -> None:
        """Give a held connection back (a closed or terminated one is replaced by the pool)."""
        if self._pool is not None:
            with contextlib.suppress(TimeoutError, *DRIVER_ERRORS):
                await self._pool.release(conn, timeout=5)

    async def _alone(self, conn: asyncpg.Connection, statement: Callable[[], Awaitable[T]]) -> T:
        """One statement on its own (atomic as it is), except behind a pooler: there in a
        transaction, so that its parse and its execution reach the same server connection."""
        if not self._pooler:
            return await statement()
        async with conn.transaction():
            return await statement()

    async def fetch(self, what: str, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        """The rows of one statement (``what``: what it was doing, for the error message)."""
        text, args = _arguments(sql, params)
        try:
            async with self.connection() as conn:
                return list(await self._alone(conn, lambda: conn.fetch(text, *args)))
        except DRIVER_ERRORS as exc:
            raise translate(exc, what) from exc

    async def fetch_kept(
        self, what: str, sql: str, params: dict[str, Any] | None = None
    ) -> list[Any]:
        """:meth:`fetch`, on a connection kept between calls: for a statement sent every second
        (the betting watch's renewal), which would otherwise pay a checkout and the pool's
        reset of the session (a round trip of its own) each time. The statement must leave no
        session state behind. The connection is replaced after :data:`RECYCLE` seconds (a new
        one goes to whichever server the URL names then) and dropped on a suspect error."""
        text, args = _arguments(sql, params)
        kept, self._kept = self._kept, None  # a concurrent call takes a connection of its own
        try:
            if kept is not None and (time.monotonic() - kept[1] >= RECYCLE or kept[0].is_closed()):
                await self.discard(kept[0])
                kept = None
            if kept is None:
                kept = (await self.acquire(), time.monotonic())
            conn = kept[0]
            try:
                rows = list(await self._alone(conn, lambda: conn.fetch(text, *args)))
            except BaseException as exc:
                if suspect(exc) or conn.is_in_transaction():
                    await self.discard(conn)
                    kept = None
                raise
            finally:
                if kept is not None:
                    await self._keep(kept)
        except DRIVER_ERRORS as exc:
            raise translate(exc, what) from exc
        return rows

    async def _keep(self, kept: tuple[asyncpg.Connection, float]) -> None:
        pool = self._pool
        # kept only while the pool has others to spare (a pool sized below its users, say
        # --pool-size under --writers, must not starve the rest for a second's renewal)
        if (
            self._kept is None
            and pool is not None
            and (pool.get_size() < pool.get_max_size() or pool.get_idle_size() > 0)
        ):
            self._kept = kept
        else:  # another call kept one meanwhile, or none is to spare: given back
            await self.release(kept[0])

    async def execute(self, what: str, sql: str, params: dict[str, Any] | None = None) -> int:
        """Run one statement (:meth:`_alone`: no BEGIN and COMMIT round trips); the rows it
        changed."""
        text, args = _arguments(sql, params)
        try:
            async with self.connection() as conn:
                status = await self._alone(conn, lambda: conn.execute(text, *args))
        except DRIVER_ERRORS as exc:
            raise translate(exc, what) from exc
        return _rowcount(status)

    async def fetch_in_transaction(
        self, what: str, statements: Sequence[tuple[str, dict[str, Any]]]
    ) -> list[Any]:
        """Run statements in one transaction; the rows of the last one."""
        try:
            async with self.connection() as conn, conn.transaction():
                rows: list[Any] = []
                for sql, params in statements:
                    text, args = _arguments(sql, params)
                    rows = list(await conn.fetch(text, *args))
                return rows
        except DRIVER_ERRORS as exc:
            raise translate(exc, what) from exc


def suspect(exc: BaseException) -> bool:
    """Does this error leave the connection it happened on unfit for another query? Anything
    but a server's answer does (a network error, a cancellation mid-query: the protocol state is
    unknown), and so does a server's answer that it is going away or turned read-only."""
    if not isinstance(exc, asyncpg.PostgresError):
        return True
    return is_unavailable(exc)  # 25006 read-only (a standby), 57P shutting down, network ...


def _rowcount(status: str) -> int:
    """The row count of a command tag ("UPDATE 3", "INSERT 0 5"), 0 when it has none."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0
