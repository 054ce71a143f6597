"""Typed settings, built once (in the CLI) from flags and the environment.

Flags win over the environment. The token is wrapped in :class:`Secret` so that it cannot reach a
log line, an error or a ``repr`` by accident; the database URL is only ever shown with its password
hidden.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

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
        parse_database_url(db)  # validate early: a bad URL is a configuration error, said once
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


# libpq connection parameters the driver (asyncpg) honours as libpq does: passed through as given
_DRIVER_PARAMS = frozenset({
    "host", "port", "dbname", "user", "password", "passfile", "service", "sslmode", "sslcert",
    "sslkey", "sslrootcert", "sslcrl", "sslpassword", "sslnegotiation", "ssl_min_protocol_version",
    "ssl_max_protocol_version", "target_session_attrs", "krbsrvname", "gsslib",
    "application_name", "options",
})  # fmt: skip
# libpq parameters whose effect the driver has anyway (or that only tune libpq itself)
_HARMLESS = {
    "fallback_application_name": None,  # we name ourselves: application_name=snooker-ingest
    "client_encoding": {"utf8", "UTF8", "utf-8", "UTF-8"},  # asyncpg always speaks UTF-8
    "gssencmode": {"disable", "prefer"},  # asyncpg does not encrypt with GSSAPI
    "channel_binding": {"disable", "prefer"},
    "load_balance_hosts": {"disable"},  # hosts are tried in the order given, as libpq does
}
_CHOICES = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "target_session_attrs": (
        "any", "primary", "standby", "prefer-standby", "read-write", "read-only",
    ),
}  # fmt: skip
POOLER_PARAM = "prepared_statement_cache_size"  # SQLAlchemy's asyncpg dialect: 0 for poolers


@dataclass(frozen=True)
class DatabaseTarget:
    """A database URL as the driver gets it: libpq's own syntax, with what is ours taken out.

    ``dsn`` holds the password (if the URL has one): it is never shown; ``display`` is.
    """

    dsn: str = field(repr=False)
    display: str
    pooler: bool = False  # ?prepared_statement_cache_size=0: nothing that needs a session
    connect_timeout: float | None = None


def parse_database_url(raw: str) -> DatabaseTarget:
    """Check a URL as libpq accepts it, and keep it for the driver.

    Everything libpq accepts and the driver honours is passed through untouched: multi-host lists
    (``h1:5432,h2:5432``) with ``target_session_attrs``, ``sslmode`` / ``sslrootcert`` / client
    certificates, unix sockets (``?host=/run/postgresql`` or a percent-encoded path as the host),
    ``passfile`` and the ``PG*`` environment variables (``PGPASSFILE``, ``PGPASSWORD``, ...), a
    ``service``. ``connect_timeout`` is applied by us; ``prepared_statement_cache_size``
    (SQLAlchemy's asyncpg parameter) set to 0 says a transaction-pooling proxy is in between. A
    parameter we cannot honour is a :class:`ConfigError` naming it, never a traceback.
    """
    display = redact_url(raw)
    try:
        parts = urllib.parse.urlsplit(raw.strip())
        pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False)
    except ValueError as exc:
        raise ConfigError(f"not a database URL: {display!r} ({exc})") from None
    backend, _, driver = parts.scheme.partition("+")
    if backend not in ("postgres", "postgresql"):
        raise ConfigError(
            f"the database URL must be a PostgreSQL URL (postgresql://...), got {display!r}"
        )
    if driver not in ("", "asyncpg", "psycopg", "psycopg2"):
        raise ConfigError(f"unsupported database driver {driver!r}: use postgresql://")
    _check_hosts(parts.netloc.rpartition("@")[2], display)
    kept: list[tuple[str, str]] = []
    pooler = False
    timeout: float | None = None
    for key, value in pairs:
        if key == POOLER_PARAM:
            if not value.isdigit():
                raise ConfigError(f"{POOLER_PARAM} must be a whole number, got {value!r}")
            pooler = int(value) == 0
        elif key == "connect_timeout":
            try:
                timeout = float(value)
            except ValueError:
                raise ConfigError(f"connect_timeout must be seconds, got {value!r}") from None
            timeout = timeout if timeout > 0 else None  # libpq: 0 means wait forever
        elif key == "ssl":  # SQLAlchemy's asyncpg spelling of sslmode (older configurations)
            kept.append(("sslmode", value))
        elif key in _HARMLESS:
            allowed = _HARMLESS[key]
            if allowed is not None and value not in allowed:
                raise ConfigError(
                    f"the database URL asks for {key}={value}, which the driver (asyncpg) "
                    f"cannot do; use one of: {', '.join(sorted(allowed))}"
                )
        elif key in _DRIVER_PARAMS:
            kept.append((key, value))
        else:
            raise ConfigError(
                f"the database URL has a parameter {key!r} that this program cannot honour "
                f"(not a libpq parameter, or one the driver, asyncpg, lacks): {display!r}"
            )
    for key, value in kept:
        if key in _CHOICES and value not in _CHOICES[key]:
            raise ConfigError(f"{key}={value!r} in the database URL: use one of {_CHOICES[key]}")
    query = urllib.parse.urlencode(kept, safe="/,:")
    dsn = urllib.parse.urlunsplit(("postgresql", parts.netloc, parts.path, query, ""))
    return DatabaseTarget(dsn=dsn, display=display, pooler=pooler, connect_timeout=timeout)


def _check_hosts(hostspec: str, display: str) -> None:
    """``host[:port]`` entries, comma-separated, as libpq reads them (IPv6 in brackets)."""
    for entry in hostspec.split(",") if hostspec else []:
        if entry.startswith("["):
            _, bracket, rest = entry.partition("]")
            if not bracket:
                raise ConfigError(f"unclosed [ in the database URL's host list: {display!r}")
            port = rest[1:] if rest.startswith(":") else rest
        else:
            port = entry.rpartition(":")[2] if ":" in entry else ""
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ConfigError(f"the database URL has a bad port {port!r}: {display!r}")


def redact_url(raw: str) -> str:
    """The URL with its passwords (in the user part and in ``password=``) shown as ``***``."""
    try:
        parts = urllib.parse.urlsplit(raw.strip())
        pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return "<unparseable URL>"
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if ":" in userinfo:
        userinfo = userinfo.partition(":")[0] + ":***"
    secret = ("password", "sslpassword")
    query = "&".join(f"{k}={'***' if k in secret else v}" for k, v in pairs)
    return urllib.parse.urlunsplit((parts.scheme, f"{userinfo}{at}{hosts}", parts.path, query, ""))


@dataclass
class RunOptions:
    """How one run behaves: built once, in the CLI, from these defaults, the environment and the
    flags (``ingest run --help`` shows its defaults from here)."""

    until_finished: bool = False
    max_runtime: float | None = None
    speed: str | None = None
    batch_size: int = 500
    writers: int = 2  # batches in flight at once (each fixture always uses the same writer)
    queue_size: int = 10_000
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    db_give_up_after: float = 600.0  # a database outage longer than this ends the run (exit 75)
    shutdown_timeout: float = 3.0  # how long a stop may spend flushing (all steps: < 5 s)
    connect_rate: float = 4.0  # connection attempts per second, all fixtures together (0: no limit)
    auth_retries: int = 2  # a refused token is tried again this many times, spaced out ...
    auth_retry_delay: float = 2.0  # ... by this many seconds times the attempt number
    registry_poll: float = 10.0  # --all: how often to look for new fixtures
    progress_interval: float = 60.0  # how often to log a progress line per fixture
    state_interval: float = 2.0  # how often changed fixture states are saved
    worker_id: str = "worker"  # the lease owner name, with --all (host:pid by default)
    lease_ttl: float = 30.0  # a lease lasts this long unless renewed (every third of it)
    max_fixtures: int | None = None  # with --all: claim at most this many
    rejected_burst: int = 100  # rejected frames stored per fixture at once ...
    rejected_per_minute: float = 1.0  # ... then this many a minute; the rest are only counted
    summary_interval: float = 10.0  # how often fixtures with new packets are reconciled
    liveness_timeout: float = 30.0  # no packet or heartbeat this long: the connection is dead
    pool_size: int = 4  # database connections, shared by every fixture
