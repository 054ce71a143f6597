"""One exception hierarchy for the whole product.

Every error a user can meet is an :class:`IngestError`; its ``exit_code`` is what the CLI exits with
(docs/interface.md). Driver errors (asyncpg, aiohttp) are translated into these at the module that
talks to the driver, so that the rest of the code never imports a driver to handle its errors.
"""

from __future__ import annotations

EX_OK = 0
EX_USAGE = 2
EX_NOINPUT = 66  # the fixture asked about is not in the database
EX_TEMPFAIL = 75  # a temporary failure outlasted its retries: systemd may restart
EX_NOPERM = 77  # authentication refused
EX_CONFIG = 78  # bad configuration


class IngestError(Exception):
    """Base class: a failure with a message meant for a person and an exit code."""

    exit_code: int = 1


class ConfigError(IngestError):
    """The configuration is wrong: fixing it needs a person (exit 78)."""

    exit_code = EX_CONFIG


class FixtureNotFound(ConfigError):
    """The feed does not know a fixture (HTTP 404): that fixture stops, the others go on."""


class UnknownFixture(IngestError):
    """A command was asked about a fixture the database does not hold (exit 66), or about the
    start of an id that matches no fixture, or several."""

    exit_code = EX_NOINPUT


class SchemaError(ConfigError):
    """The database schema is not at the version this code needs."""


class AuthError(IngestError):
    """The feed refused the access token (exit 77)."""

    exit_code = EX_NOPERM


class TemporaryError(IngestError):
    """Something outside us is down (network, feed, database); retrying may help (exit 75)."""

    exit_code = EX_TEMPFAIL


class FeedUnavailable(TemporaryError):
    """The feed could not be reached, refused the connection, or dropped it."""

    def __init__(self, message: str, *, reason: str = "error") -> None:
        super().__init__(message)
        self.reason = reason  # a short label for metrics: closed, silent, http, network, ...


class FrameTooLarge(FeedUnavailable):
    """The feed sent a frame over the size limit: the fixture is blocked at that packet (every
    reconnect meets it again) until the provider fixes it; retried slowly, never in a hot loop."""


class DatabaseUnavailable(TemporaryError):
    """PostgreSQL could not be reached or went away."""


class ServerChanged(DatabaseUnavailable):
    """Another database server answers than the one the last batches went to (a failover
    behind a pooler, which raises no error of its own): nothing was written; what the new one
    holds must be checked first (retried as an outage, whose end runs that check)."""

    def __init__(self, message: str, *, server: object) -> None:
        super().__init__(message)
        self.server = server


# Exit code 0 also covers a stop by SIGTERM / SIGINT: that is a normal way to end a worker.
__all__ = [
    "EX_CONFIG",
    "EX_NOINPUT",
    "EX_NOPERM",
    "EX_OK",
    "EX_TEMPFAIL",
    "EX_USAGE",
    "AuthError",
    "ConfigError",
    "DatabaseUnavailable",
    "FeedUnavailable",
    "FixtureNotFound",
    "FrameTooLarge",
    "IngestError",
    "SchemaError",
    "ServerChanged",
    "TemporaryError",
    "UnknownFixture",
]
