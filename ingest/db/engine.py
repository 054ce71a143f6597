"""The connection pool, and the three ways a query runs on it (with its errors translated).

One engine per process, made from the URL as the user wrote it (see :func:`create_engine`);
every query goes through ``_fetch``, ``_execute`` or ``_fetch_in_transaction`` of
:class:`Database`, which translate driver errors (:mod:`ingest.db.translate`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ingest.config import DatabaseTarget
from ingest.db.translate import DISCARD_CONNECTION, DRIVER_ERRORS, sqlstate, translate


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
        pool_recycle=RECYCLE,
    )

    @event.listens_for(engine.sync_engine, "handle_error")
    def _discard_suspect(context: Any) -> None:
        # A server that turned read-only (a standby, after a failover) or is shutting down:
        # this connection will never write again, so the pool must not hand it out again.
        if sqlstate(context.original_exception) in DISCARD_CONNECTION:
            context.is_disconnect = True

    return engine


RECYCLE = 1800.0  # seconds a pooled (or kept write-path) connection is used


class Database:
    """An engine and the database target it was made from (shown without its password)."""

    def __init__(self, engine: AsyncEngine, target: DatabaseTarget | None = None) -> None:
        self._engine = engine
        self._target = target
        self._pooler = target is not None and target.pooler

    def __repr__(self) -> str:
        shown = self._target.display if self._target is not None else "engine"
        return f"{type(self).__name__}({shown!r})"

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def close(self) -> None:
        await self._engine.dispose()

    async def ping(self) -> None:
        await self._fetch("connecting to the database", "SELECT 1")

    async def _fetch(self, what: str, sql: str, params: dict[str, Any] | None = None) -> list[Any]:
        try:
            async with self._engine.connect() as conn:
                return list((await conn.execute(text(sql), params or {})).all())
        except DRIVER_ERRORS as exc:
            raise translate(exc, what) from exc

    async def _execute(self, what: str, sql: str, params: dict[str, Any] | None = None) -> int:
        try:
            async with self._engine.begin() as conn:
                return (await conn.execute(text(sql), params or {})).rowcount
        except DRIVER_ERRORS as exc:
            raise translate(exc, what) from exc

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
        except DRIVER_ERRORS as exc:
            raise translate(exc, what) from exc
