"""Typed settings, built once (in the CLI) from flags and the environment.

Flags win over the environment. The token is wrapped in :class:`Secret` so that it cannot reach a
log line, an error or a ``repr`` by accident; the database URL is only ever shown with its password
hidden.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from ingest.errors import ConfigError

DEFAULT_FEED_URL = "wss://dde-streams.data.srarena.io"
DEFAULT_API_URL = "https://dde-api.data.srarena.io"
LEGACY_FEED_HOST = "dde-streams.data.imgarena.com"
CREDENTIAL_NAME = "ingest-token"
APP_NAME = "snooker-ingest"


class Secret:
    """A string that never shows itself: ``repr`` and ``str`` are redacted."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[object, ...]:  # no pickling a secret into a file or a queue
        raise TypeError("a Secret cannot be pickled")


@dataclass(frozen=True)
class Settings:
    """Everything the product needs to know about its surroundings."""

    feed_url: str = DEFAULT_FEED_URL
    api_url: str = DEFAULT_API_URL
    database_url: str | None = field(default=None, repr=False)
    token: Secret | None = None
    data_dir: Path = field(default_factory=lambda: platformdirs.user_data_path(APP_NAME))

    @property
    def legacy_feed(self) -> bool:
        """The decommissioned IMG Arena host (2026-09-30) is configured."""
        return LEGACY_FEED_HOST in self.feed_url

    @property
    def database_url_display(self) -> str:
        if self.database_url is None:
            return f"embedded PostgreSQL in {self.embedded_pgdata}"
        return redact_url(self.database_url)

    @property
    def embedded_pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def require_token(self) -> Secret:
        if self.token is None:
            raise ConfigError(
                "no access token: set INGEST_TOKEN, INGEST_TOKEN_FILE or --token-file, "
                f"or provide the systemd credential {CREDENTIAL_NAME!r}"
            )
        return self.token

    def __repr__(self) -> str:
        return (
            f"Settings(feed_url={self.feed_url!r}, database={self.database_url_display!r}, "
            f"token={'set' if self.token else 'unset'}, data_dir={str(self.data_dir)!r})"
        )


def load_settings(
    env: Mapping[str, str] | None = None,
    *,
    database_url: str | None = None,
    feed_url: str | None = None,
    token_file: str | None = None,
    data_dir: str | None = None,
    api_url: str | None = None,
) -> Settings:
    """Build :class:`Settings` from flag values (which win) and the environment."""
    env = os.environ if env is None else env
    db = database_url or env.get("INGEST_DATABASE_URL") or env.get("DATABASE_URL") or None
    if db is not None:
        to_sqlalchemy_url(db)  # validate early: a bad URL is a configuration error, said once
    feed = (feed_url or env.get("INGEST_FEED_URL") or DEFAULT_FEED_URL).rstrip("/")
    if not feed.startswith(("ws://", "wss://", "http://", "https://")):
        raise ConfigError(f"INGEST_FEED_URL must start with wss:// or ws://, got {feed!r}")
    data = Path(data_dir or env.get("INGEST_DATA_DIR") or platformdirs.user_data_path(APP_NAME))
    api = (api_url or env.get("INGEST_API_URL") or DEFAULT_API_URL).rstrip("/")
    if not api.startswith(("http://", "https://")):
        raise ConfigError(f"INGEST_API_URL must start with https:// or http://, got {api!r}")
    return Settings(
        feed_url=feed,
        api_url=api,
        database_url=db,
        token=_load_token(env, token_file),
        data_dir=data.expanduser(),
    )


def _load_token(env: Mapping[str, str], token_file: str | None) -> Secret | None:
    if token_file:
        return _read_token_file(Path(token_file), "--token-file")
    if env.get("INGEST_TOKEN"):
        return Secret(env["INGEST_TOKEN"].strip())
    if env.get("INGEST_TOKEN_FILE"):
        return _read_token_file(Path(env["INGEST_TOKEN_FILE"]), "INGEST_TOKEN_FILE")
    creds = env.get("CREDENTIALS_DIRECTORY")
    if creds and (Path(creds) / CREDENTIAL_NAME).is_file():
        return _read_token_file(Path(creds) / CREDENTIAL_NAME, "$CREDENTIALS_DIRECTORY")
    return None


def _read_token_file(path: Path, source: str) -> Secret:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {path} ({source}): {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"the token file {path} ({source}) is not UTF-8 text") from None
    if not value:
        raise ConfigError(f"the token file {path} ({source}) is empty")
    return Secret(value)


def to_sqlalchemy_url(raw: str) -> URL:
    """Turn a URL as users write it into one for SQLAlchemy's asyncpg dialect.

    Accepts ``postgres://``, ``postgresql://`` and ``postgresql+asyncpg://``; keeps the unix socket
    form ``postgresql://user@/db?host=/run/postgresql``; maps libpq's ``sslmode`` to
    asyncpg's ``ssl``.
    """
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ConfigError(f"not a database URL: {redact_url(raw)!r}") from None
    backend, _, driver = url.drivername.partition("+")
    if backend not in ("postgres", "postgresql"):
        raise ConfigError(
            f"the database URL must be a PostgreSQL URL (postgresql://...), got {backend!r}"
        )
    if driver not in ("", "asyncpg", "psycopg", "psycopg2"):
        raise ConfigError(f"unsupported database driver {driver!r}: use postgresql://")
    query = dict(url.query)
    if "sslmode" in query:
        query["ssl"] = query.pop("sslmode")
    return url.set(drivername="postgresql+asyncpg", query=query)


def redact_url(raw: str) -> str:
    try:
        return make_url(raw).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"
