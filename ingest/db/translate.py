"""Driver errors as :mod:`ingest.errors`: the only place that knows asyncpg's exceptions (and
SQLAlchemy's wrappers of them, which ``ingest migrate`` meets through alembic), so nothing outside
:mod:`ingest.db` imports a driver. SQLAlchemy's are recognised by their ``orig`` attribute, not
imported: importing SQLAlchemy costs the worker a fifth of a second at start.

A database out of reach (a network error, a server shutting down or read-only after a failover,
a deadlock) is :class:`DatabaseUnavailable` and retried by the caller; credentials, a missing
database or an unusable URL are :class:`ConfigError`; a schema behind the code is
:class:`SchemaError`.
"""

from __future__ import annotations

import asyncpg

from ingest.errors import ConfigError, DatabaseUnavailable, IngestError, SchemaError
from ingest.settings import POOLER_PARAM

# Errors the server reports about one packet's content (22: data exception, such as \u0000 or a
# lone surrogate in a jsonb string; 54: a program limit, such as nesting too deep for jsonb):
# that packet is kept as rejected, the others are stored.
BAD_DATA = (asyncpg.DataError, asyncpg.ProgramLimitExceededError)

# every error a statement can raise: caught at the edge of each query and translated
DRIVER_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                 asyncpg.InternalClientError)  # fmt: skip


def _orig(exc: BaseException) -> BaseException | None:
    """The driver's error inside a SQLAlchemy ``DBAPIError`` (None for any other error)."""
    orig = getattr(exc, "orig", None)
    return orig if isinstance(orig, BaseException) else None


def sqlstate(exc: BaseException) -> str:
    """The SQLSTATE of a driver error, raw (asyncpg) or wrapped (SQLAlchemy)."""
    orig = _orig(exc)
    for candidate in (exc, orig, getattr(orig, "__cause__", None)):
        state = getattr(candidate, "sqlstate", None)
        if isinstance(state, str):
            return state
    return ""


def _misconfigured(exc: BaseException) -> bool:
    """asyncpg found the URL unusable (a TLS file it cannot read, a bad host list, ...)."""
    orig = _orig(exc)
    chain = (exc, orig, getattr(orig, "__cause__", None), exc.__cause__)
    return any(isinstance(e, asyncpg.ClientConfigurationError) for e in chain)


# a named prepared statement went missing or exists twice: a transaction-pooling proxy
_POOLER_STATES = frozenset({"26000", "42P05"})


def _pooler_refused_startup(exc: BaseException) -> bool:
    """A connection pooler (PgBouncer) refused a startup parameter we send to PostgreSQL (jit):
    a protocol violation (08P01) that no retry will get past."""
    orig = _orig(exc) or exc
    return sqlstate(exc) == "08P01" and "unsupported startup parameter" in str(orig)


def is_unavailable(exc: BaseException) -> bool:
    """Is this driver error one where the database is (temporarily) out of reach?"""
    if _misconfigured(exc) or _pooler_refused_startup(exc):
        return False  # the URL asks for something impossible: retrying will not help
    if isinstance(
        exc,
        OSError
        | TimeoutError
        | ConnectionError
        | asyncpg.InterfaceError
        | asyncpg.InternalClientError,  # a connection left mid-operation: a fresh one will do
    ):
        return True  # TimeoutError includes no pooled connection in time (the server is slow)
    if getattr(exc, "connection_invalidated", False) is True:
        return True  # SQLAlchemy (migrations): the driver lost the connection
    state = sqlstate(exc)
    if state:
        # 08 connection exception, 57P admin shutdown / cannot connect now, 53 resources,
        # 40 deadlock / serialization failure, 57014 statement timeout or cancelled, 25006 a
        # read-only server (a standby reached during a failover): retry
        return state.startswith(("08", "57P", "53", "40")) or state in ("57014", "25006")
    orig = _orig(exc)
    if orig is not None and orig is not exc:
        return is_unavailable(orig)
    # SQLAlchemy's own: its pool's timeout, or an interface / operational error with no code
    return type(exc).__name__ in ("TimeoutError", "InterfaceError", "OperationalError") and (
        type(exc).__module__.startswith("sqlalchemy")
    )


def translate(exc: BaseException, what: str) -> IngestError:
    """A driver error as one of ours, with a message for a person."""
    if isinstance(exc, IngestError):
        return exc
    state = sqlstate(exc)
    orig = _orig(exc) or exc
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
    if _pooler_refused_startup(exc):
        return ConfigError(
            f"the database refused a connection parameter while {what}: {detail}; behind a "
            f"transaction-pooling proxy (PgBouncer) add ?{POOLER_PARAM}=0 to the database URL "
            "(or, for a session pool, add the parameter to its ignore_startup_parameters)"
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
