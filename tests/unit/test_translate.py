"""Driver errors as ours: what is retried, what stops the worker with a message for a person."""

from __future__ import annotations

import asyncpg
import pytest

from ingest.db.translate import is_unavailable, translate
from ingest.errors import ConfigError, DatabaseUnavailable

POOLER_HINT = "add ?prepared_statement_cache_size=0 to the database URL"


@pytest.mark.parametrize(
    "exc",
    [
        # a stock PgBouncer refuses the jit setting we send PostgreSQL when connecting
        asyncpg.ProtocolViolationError("unsupported startup parameter: jit"),
        # one that lets it by mixes up named prepared statements across server connections
        asyncpg.InvalidSQLStatementNameError('prepared statement "__asyncpg_stmt_6__" missing'),
        asyncpg.DuplicatePreparedStatementError('prepared statement "__asyncpg_stmt_1__" exists'),
    ],
)  # fmt: skip
def test_a_pooler_without_the_pooler_parameter_is_a_configuration_error(
    exc: asyncpg.PostgresError,
) -> None:
    """README, High availability: exit 78 with a message that names the parameter, not an
    outage retried for 10 minutes (an acceptance test runs the first through a real pgbouncer;
    when the others come depends on which server connection each statement meets)."""
    assert not is_unavailable(exc)
    error = translate(exc, "reading the schema version")
    assert isinstance(error, ConfigError) and error.exit_code == 78
    assert POOLER_HINT in str(error) and str(exc) in str(error)


def test_another_protocol_violation_is_retried() -> None:
    error = translate(asyncpg.ProtocolViolationError("server closed the connection"), "writing")
    assert isinstance(error, DatabaseUnavailable)
