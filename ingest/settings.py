"""Typed settings, each option declared once.

A setting is a dataclass field made with :func:`option`: its flag, type (with its validation),
default and help are written there, and whether the environment may set it. The command line
(:mod:`ingest.cli`) builds its click options from these fields, code that uses the library
builds the same dataclasses directly, and the README's option tables are generated from them
(``tests/unit/test_options.py`` holds the README to the declarations).

Only deployment settings read the environment: where the database and the feed are, logging,
the worker's tuning and its metrics. Their variable is ``INGEST_`` and the flag's name
(``--batch-size``: ``INGEST_BATCH_SIZE``), shown in ``--help``; a flag wins. What one command
line asks for (``migrate --revision/--downgrade``, ``--format``, output paths, the simulator's
flags, ``run --until-finished/--speed/--max-runtime``) never reads the environment. Every switch
has its ``--no-`` form.

The token is not an option: it is read from ``--token-file``, ``INGEST_TOKEN``,
``INGEST_TOKEN_FILE`` or the systemd credential (in that order), never from the command line,
and wrapped in :class:`Secret` so that it cannot reach a log line, an error or a ``repr`` by
accident; the database URL is only ever shown with its password hidden.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import click

from ingest.errors import ConfigError

DEFAULT_FEED_URL = "wss://dde-streams.data.srarena.io"
DEFAULT_API_URL = "https://dde-api.data.srarena.io"
LEGACY_FEED_HOST = "dde-streams.data.imgarena.com"
CREDENTIAL_NAME = "ingest-token"
APP_NAME = "snooker-ingest"
POOL_SIZE = 4  # database connections per process, shared by every fixture (writers + 2)
COMMAND_TIMEOUT = 60.0  # a statement that takes longer fails (and is retried), None: migrations
CONNECT_TIMEOUT = 5.0  # seconds for each host of the database URL (libpq's connect_timeout)

POSITIVE = click.FloatRange(min=0, min_open=True)  # seconds
NON_NEGATIVE = click.FloatRange(min=0)
COUNT = click.IntRange(min=1)
MiB = 1024 * 1024


class ByteSize(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.2 on
    """A size in bytes: ``268435456``, ``256MiB``, ``512M``, ``2G`` (K, M, G are 1024-based)."""

    name = "SIZE"
    _UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": MiB, "MB": MiB,
              "MIB": MiB, "G": 1024 * MiB, "GB": 1024 * MiB, "GIB": 1024 * MiB}  # fmt: skip

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().replace(" ", "")
        digits = text.rstrip("KMGIB")
        unit = text[len(digits) :]
        if not digits.isdigit() or unit not in self._UNITS or int(digits) == 0:
            self.fail(f"not a size such as 256MiB or 268435456: {value!r}", param, ctx)
        return int(digits) * self._UNITS[unit]


@dataclass(frozen=True)
class Option:
    """How a setting is given on the command line and (for a deployment setting) in the
    environment. Made by :func:`option`; the field's name gives the flag."""

    help: str
    env: bool | str = False  # True: INGEST_<FLAG>; a string: that variable; False: flags only
    type: Any = None  # a click type (validation included); None: the default's type
    flag: str | None = None  # default: --field-name
    metavar: str | None = None
    default_text: str | None = None  # the default as --help and the README show it
    aliases: tuple[str, ...] = ()  # further variables read after the first (DATABASE_URL)

    def flag_for(self, name: str) -> str:
        return self.flag or "--" + name.replace("_", "-")

    def variables(self, name: str) -> tuple[str, ...]:
        if self.env is False:
            return ()
        first = (
            self.env
            if isinstance(self.env, str)
            else ("INGEST_" + self.flag_for(name)[2:].upper().replace("-", "_"))
        )
        return (first, *self.aliases)


def option(
    default: Any = None,
    *,
    help: str,
    env: bool | str = False,
    type: Any = None,
    flag: str | None = None,
    metavar: str | None = None,
    default_text: str | None = None,
    aliases: tuple[str, ...] = (),
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A dataclass field that is also a command-line option (see the module docstring)."""
    declared = Option(help, env, type, flag, metavar, default_text, aliases)
    if factory is not None:
        return field(default_factory=factory, metadata={"option": declared})
    return field(default=default, metadata={"option": declared})


def declared(cls: type) -> list[tuple[dataclasses.Field[Any], Option]]:
    """The fields of ``cls`` that are options, in declaration order."""
    return [(f, f.metadata["option"]) for f in dataclasses.fields(cls) if "option" in f.metadata]


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


def _default_data_dir() -> Path:
    import platformdirs  # only when the embedded PostgreSQL is used: not on a worker's start-up

    return platformdirs.user_data_path(APP_NAME)


@dataclass(frozen=True)
class Logging:
    """How a command logs (to standard error)."""

    log_level: str = option(
        "INFO",
        help="DEBUG, INFO, WARNING or ERROR",
        env=True,
        type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    )
    log_format: str = option(
        "text",
        help="text, or json (one object per line)",
        env=True,
        type=click.Choice(["text", "json"]),
    )


@dataclass(frozen=True)
class Runtime:
    """How the process runs its one event loop."""

    event_loop: str = option(
        "auto",
        help="uvloop (libuv, by the authors of asyncpg: less CPU per message), asyncio (the "
        "standard library's), or auto: uvloop where it is installed",
        env=True,
        type=click.Choice(["auto", "uvloop", "asyncio"]),
    )


@dataclass(frozen=True)
class Settings:
    """Where the product's surroundings are: the database, the feed, the token."""

    database_url: str | None = option(
        None,
        help="PostgreSQL URL, as psql takes it; unset: the embedded PostgreSQL",
        env=True,
        aliases=("DATABASE_URL",),
        metavar="URL",
        default_text="the embedded PostgreSQL",
    )
    data_dir: Path | None = option(
        None,
        help="where the embedded PostgreSQL keeps its data (in DIR/pgdata)",
        env=True,
        type=click.Path(file_okay=False, path_type=Path),
        metavar="DIR",
        default_text="the user data directory",
    )
    feed_url: str = option(
        DEFAULT_FEED_URL, help="the feed's base URL (the path is appended)", env=True, metavar="URL"
    )
    api_url: str = option(
        DEFAULT_API_URL,
        help="the provider's REST API, for fixture discovery",
        env=True,
        metavar="URL",
    )
    token_file: Path | None = option(
        None,
        help="a file holding the access token; else INGEST_TOKEN, INGEST_TOKEN_FILE or the "
        "systemd credential ingest-token (never the token itself on the command line)",
        type=click.Path(dir_okay=False, path_type=Path),
        metavar="FILE",
    )
    token: Secret | None = None  # not an option: see load_settings

    def __post_init__(self) -> None:
        object.__setattr__(self, "feed_url", self.feed_url.rstrip("/"))
        object.__setattr__(self, "api_url", self.api_url.rstrip("/"))
        if self.data_dir is not None:
            object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser())
        if not self.feed_url.startswith(("ws://", "wss://", "http://", "https://")):
            raise ConfigError(
                f"INGEST_FEED_URL must start with wss:// or ws://, got {self.feed_url!r}"
            )
        if not self.api_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"INGEST_API_URL must start with https:// or http://, got {self.api_url!r}"
            )
        if self.database_url is not None:
            parse_database_url(self.database_url)  # a bad URL is a configuration error, said once

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
        return (self.data_dir or _default_data_dir()) / "pgdata"

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
            f"token={'set' if self.token else 'unset'}, "
            f"data_dir={str(self.data_dir or 'default')!r})"
        )


def load_settings(env: Mapping[str, str] | None = None, **values: Any) -> Settings:
    """:class:`Settings` from option values (as the command line parsed them: flag, else the
    option's variable, else the default) and the token, the one thing read from ``env`` here.

    ``values`` left out take their defaults; ``None`` counts as left out."""
    env = os.environ if env is None else env
    given = {k: v for k, v in values.items() if v is not None}
    settings = Settings(**given)
    token_file = given.get("token_file")
    return dataclasses.replace(settings, token=_load_token(env, token_file))


def _load_token(env: Mapping[str, str], token_file: Path | str | None) -> Secret | None:
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
    connect_timeout: float | None = CONNECT_TIMEOUT  # for each host; None: no limit of its own
    # the URL once for each host of a multi-host list, in order (``(dsn,)`` for a single host)
    hosts: tuple[str, ...] = field(default=(), repr=False)

    @property
    def attempts(self) -> tuple[str, ...]:
        """The URLs a new connection tries in turn, each within ``connect_timeout``."""
        return self.hosts or (self.dsn,)


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
    timeout: float | None = CONNECT_TIMEOUT
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
            timeout = timeout if timeout > 0 else None  # libpq: 0 means wait (here: the pool's)
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

    def url(netloc: str, params: list[tuple[str, str]]) -> str:
        query = urllib.parse.urlencode(params, safe="/,:")
        return urllib.parse.urlunsplit(("postgresql", netloc, parts.path, query, ""))

    hosts = tuple(url(netloc, pairs) for netloc, pairs in _each_host(parts.netloc, kept))
    return DatabaseTarget(
        dsn=url(parts.netloc, kept),
        display=display,
        pooler=pooler,
        connect_timeout=timeout,
        hosts=hosts if len(hosts) > 1 else (),
    )


def _each_host(
    netloc: str, pairs: list[tuple[str, str]]
) -> list[tuple[str, list[tuple[str, str]]]]:
    """The URL's parts once for each host written in it, in order, as ``host=`` and ``port=``
    (so that nothing else, such as a ``PGPORT`` list, is matched against one host): the host
    list before the path (a port of its own, else ``PGPORT``'s, one for all or one each), else
    the ``host=`` parameter's (``port=``'s, else ``PGPORT``'s), as the driver reads them. Hosts
    from ``PGHOST`` or a ``service`` are left to the driver, as one attempt. A
    ``prefer-standby`` URL is tried for a standby on every host first, then for any."""
    params = dict(pairs)
    userinfo, at, hostspec = netloc.rpartition("@")
    if "service" in params or "PGSERVICE" in os.environ or not (hostspec or "host" in params):
        return [(netloc, pairs)]
    entries = (hostspec or params["host"]).split(",")
    given = params.get("port", "") if not hostspec else ""  # the driver ignores it then
    defaults = (given or os.environ.get("PGPORT", "") or "5432").split(",")
    if len(entries) > 1 and len(defaults) not in (1, len(entries)):
        raise ConfigError(
            f"the database URL names {len(entries)} hosts and {len(defaults)} ports: give one "
            "port, or one for each host"
        )
    rest = [(k, v) for k, v in pairs if k not in ("host", "port")]
    each = []
    for i, entry in enumerate(entries):
        port = defaults[i] if len(defaults) == len(entries) else defaults[0]
        host = entry
        if hostspec:  # host[:port], [v6][:port] or a percent-encoded socket directory
            bracket = entry.rfind("]")
            name, colon, own = entry.rpartition(":")
            if colon and len(name) > bracket:
                host, port = name, own
            host = urllib.parse.unquote(host)
        each.append((f"{userinfo}{at}", [*rest, ("host", host), ("port", port)]))
    attrs = params.get("target_session_attrs", os.environ.get("PGTARGETSESSIONATTRS"))
    if attrs == "prefer-standby" and len(each) > 1:
        standby = [
            (place, [*((k, v) for k, v in kept if k != "target_session_attrs"),
                     ("target_session_attrs", "standby")])
            for place, kept in each
        ]  # fmt: skip
        return standby + each
    return each


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


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class RunOptions:
    """How one run behaves. The fields made with :func:`option` are ``ingest run``'s options;
    the others are internal knobs (tests set them)."""

    until_finished: bool = option(
        False,
        help="exit 0 once every fixture has finished (a fixture the provider dropped, "
        "CollectionDropped, counts as finished, with a warning; one the feed does not know, "
        "HTTP 404, as done, with an error logged)",
    )
    max_runtime: float | None = option(
        None, help="seconds, then a clean stop", type=POSITIVE, metavar="SECONDS"
    )
    speed: Literal["fast", "normal"] = option(
        "normal",
        help="fast: replay a finished match as fast as possible (backfill); normal: as played",
        type=click.Choice(["fast", "normal"]),
    )
    batch_size: int = option(
        500,
        help="most packets per transaction (a batch is whatever is waiting: no timer delays a "
        "packet unless --batch-wait)",
        env=True,
        type=COUNT,
    )
    batch_wait: float = option(
        0.0,
        help="seconds a lone waiting packet is held for others to share its transaction (0: "
        "committed at once); at a live load of hundreds of fixtures, 0.02 cut the worker's CPU "
        "by 7-28% in our runs and adds up to 20 ms to each packet's latency",
        env=True,
        type=click.FloatRange(min=0, max=1),
        metavar="SECONDS",
    )
    writers: int = option(
        2,
        help="batches in flight at once; each fixture always uses the same writer, so its "
        "packets commit in order",
        env=True,
        type=COUNT,
    )
    pool_size: int = option(
        POOL_SIZE,
        help="database connections for the whole process (writers + 2 is enough)",
        env=True,
        type=COUNT,
    )
    async_commit: bool = option(
        False,
        help="commit the packets without waiting for the database's disk (synchronous_commit "
        "off for the worker's writes): a packet is visible sooner, and a database crash may "
        "lose its last commits (up to about 0.6 s), which the worker then fetches again",
        env=True,
    )
    liveness_timeout: float = option(
        30.0,
        help="seconds without packets or heartbeats before a connection is declared dead and "
        "replaced (websocket pings are sent at half that)",
        env=True,
        type=POSITIVE,
    )
    stale_after: float = option(
        15.0,
        help="seconds without packets or heartbeats before a connected fixture's betting is "
        "suspended (feed_stale), and how long fixture_betting trusts this worker's last proof of "
        "life (worker_silent); below --liveness-timeout",
        env=True,
        type=POSITIVE,
    )
    max_delay: float = option(
        10.0,
        help="seconds a packet may arrive after its own timestamp before the fixture's betting "
        "is suspended (feed_delayed); not at --speed fast, nor while a connection catches up",
        env=True,
        type=POSITIVE,
    )
    connect_rate: float = option(
        4.0,
        help="connection attempts per second across all fixtures (the provider asks for at "
        "most 5); 0 for no limit",
        env=True,
        type=NON_NEGATIVE,
    )
    registry_poll: float = option(
        10.0, help="with --all: seconds between looks for new fixtures", env=True, type=POSITIVE
    )
    progress_interval: float = option(
        60.0, help="seconds between progress lines per fixture", env=True, type=POSITIVE
    )
    discover_every: float | None = option(
        None,
        help="with --all: register the provider's fixtures from today on every this many seconds",
        env=True,
        type=POSITIVE,
        metavar="SECONDS",
    )
    worker_id: str = option(
        help="with --all: this worker's name in the leases",
        env=True,
        default_text="host:pid",
        factory=_worker_id,
    )
    lease_ttl: float = option(
        30.0,
        help="with --all: seconds a fixture's lease lasts unless renewed (renewed every third "
        "of it)",
        env=True,
        type=POSITIVE,
    )
    max_fixtures: int | None = option(
        None, help="with --all: claim at most this many fixtures", env=True, type=COUNT
    )
    max_buffer: int = option(
        256 * MiB,
        help="bytes received and not yet committed, across all fixtures (while the database is "
        "away): when full, the fixtures stop reading their sockets until it drains; nothing is "
        "dropped",
        env=True,
        type=ByteSize(),
        default_text="256MiB",
    )
    queue_size: int = 10_000
    backoff_initial: float = 0.5
    backoff_max: float = 30.0  # between a fixture's reconnects (a provider's many clients)
    db_backoff_max: float = 5.0  # between one writer's database retries: back within 5 s
    db_give_up_after: float = 600.0  # a database outage longer than this ends the run (exit 75)
    shutdown_timeout: float = 3.0  # how long a stop may spend flushing (all steps: < 5 s)
    auth_retries: int = 2  # a refused token is tried again this many times, spaced out ...
    auth_retry_delay: float = 2.0  # ... by this many seconds times the attempt number
    state_interval: float = 2.0  # how often changed fixture states are saved
    rejected_burst: int = 100  # rejected frames stored per fixture at once ...
    rejected_per_minute: float = 1.0  # ... then this many a minute; the rest are only counted
    summary_interval: float = 10.0  # how often fixtures with new packets are reconciled
    catch_up_quiet: float = 0.5  # a connection's backlog is through after this long quiet
    betting_renew_every: float = 1.0  # alive_at renewed this often, in one statement

    def check(self) -> None:
        """What no single option can check alone (a :class:`ConfigError`, exit 78)."""
        if self.stale_after >= self.liveness_timeout:
            raise ConfigError(
                f"--stale-after (INGEST_STALE_AFTER, {self.stale_after:g} s) must be below "
                f"--liveness-timeout (INGEST_LIVENESS_TIMEOUT, {self.liveness_timeout:g} s): a "
                "silent connection suspends betting first and is replaced only at the liveness "
                "timeout"
            )


@dataclass(frozen=True)
class Monitoring:
    """How a long-running command shows itself to operators (``run`` and ``settle``)."""

    metrics_port: int | None = option(
        None,
        help="serve /metrics (Prometheus), /healthz (alive) and /readyz (the database reachable; "
        "for run also no fixture unable to connect for 2 min, for settle its LISTEN up) on this "
        "port",
        env=True,
        type=click.IntRange(1, 65535),
        metavar="PORT",
    )
    metrics_host: str = option(
        "127.0.0.1",
        help="address for the metrics port (0.0.0.0 in a container)",
        env=True,
        metavar="ADDRESS",
    )
    metrics_file: Path | None = option(
        None,
        help="write the metrics for node_exporter's textfile collector every 10 s and at exit "
        "(atomic rename), for oneshot runs",
        env=True,
        type=click.Path(dir_okay=False, path_type=Path),
        metavar="FILE",
    )
    status_interval: float = 10.0  # STATUS= to systemd, and the metrics file, this often


@dataclass(frozen=True)
class SettleOptions:
    """How ``ingest settle`` behaves."""

    until_finished: bool = option(
        False,
        help="exit 0 once every fixture followed has finished and all its packets are settled",
    )
    idle_check: float = option(
        30.0,
        help="seconds between checks of the LISTEN connection (and, with --all, the registry)",
        env="INGEST_SETTLE_IDLE_CHECK",
        type=POSITIVE,
    )
    pool_size: int = option(
        POOL_SIZE, help="database connections (one more is kept for LISTEN)", env=True, type=COUNT
    )
    retry: RunOptions = field(default_factory=RunOptions)  # database retries, as the worker's
