from __future__ import annotations

import logging
import os
import re
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from ingest.cli import parse
from ingest.errors import ConfigError
from ingest.settings import (
    CONNECT_TIMEOUT,
    DEFAULT_FEED_URL,
    Secret,
    Settings,
    load_settings,
    parse_database_url,
)

TOKEN = "s3cr3t-token-value"


def test_defaults_use_the_current_provider_host_and_the_embedded_database() -> None:
    settings = load_settings({})
    assert settings.feed_url == DEFAULT_FEED_URL == "wss://dde-streams.data.srarena.io"
    assert settings.database_url is None and settings.token is None


def settings_of(argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings the real command line builds from ``argv`` and the environment ``env``."""
    for name in [n for n in os.environ if n.startswith("INGEST_") or n == "DATABASE_URL"]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    _, values = parse(argv)
    return load_settings(env, **{k: v for k, v in values.items() if k in SETTINGS})


SETTINGS = {"database_url", "data_dir", "feed_url", "api_url", "token_file"}


def test_flags_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"INGEST_DATABASE_URL": "postgresql://env/db", "INGEST_FEED_URL": "ws://env:1"}
    settings = settings_of(
        ["run", "--all", "--database-url", "postgresql://flag/db", "--feed-url", "ws://flag:2/"],
        env,
        monkeypatch,
    )
    assert settings.database_url == "postgresql://flag/db"
    assert settings.feed_url == "ws://flag:2"
    from_env = settings_of(["run", "--all"], env, monkeypatch)
    assert (from_env.database_url, from_env.feed_url) == ("postgresql://env/db", "ws://env:1")


def test_database_url_falls_back_to_DATABASE_URL(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_of(["check"], {"DATABASE_URL": "postgresql://x/y"}, monkeypatch)
    assert settings.database_url == "postgresql://x/y"


@pytest.mark.parametrize(
    ("raw", "dsn"),
    [
        ("postgresql://u:p@h:5433/db", "postgresql://u:p@h:5433/db"),
        ("postgres://u@h/db", "postgresql://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql://u@h/db"),
        ("postgresql://user@/db?host=/run/postgresql", "postgresql://user@/db?host=/run/postgresql"),
        ("postgresql://%2Frun%2Fpostgresql/db", "postgresql://%2Frun%2Fpostgresql/db"),
        ("postgresql://h/db?sslmode=verify-full&sslrootcert=/etc/ca.pem",
         "postgresql://h/db?sslmode=verify-full&sslrootcert=/etc/ca.pem"),
        ("postgresql://h/db?ssl=require", "postgresql://h/db?sslmode=require"),
        ("postgresql://postgres@127.0.0.1:55510,127.0.0.1:55511/postgres?target_session_attrs=read-write",
         "postgresql://postgres@127.0.0.1:55510,127.0.0.1:55511/postgres?target_session_attrs=read-write"),
        ("postgresql://u@[::1]:5432,db2/x?target_session_attrs=primary&passfile=/run/pgpass",
         "postgresql://u@[::1]:5432,db2/x?target_session_attrs=primary&passfile=/run/pgpass"),
        ("postgresql://h/db?fallback_application_name=x&client_encoding=UTF8", "postgresql://h/db"),
    ],
)  # fmt: skip
def test_database_urls_as_libpq_accepts_them(raw: str, dsn: str) -> None:
    target = parse_database_url(raw)
    assert target.dsn == dsn
    assert not target.pooler and target.connect_timeout == CONNECT_TIMEOUT


def test_pooler_and_timeout_parameters_are_ours_not_the_servers() -> None:
    target = parse_database_url(
        "postgresql://u:pw@bouncer:6432/db?prepared_statement_cache_size=0&connect_timeout=5"
    )
    assert target.dsn == "postgresql://u:pw@bouncer:6432/db"
    assert target.pooler and target.connect_timeout == 5.0
    assert "pw" not in repr(target) and target.display.startswith("postgresql://u:***@")


def addresses(dsn: str) -> list[Any]:
    """Where asyncpg itself would connect for a URL, in order (its own parser, private)."""
    from asyncpg import connect_utils

    found, _ = connect_utils._parse_connect_dsn_and_args(
        dsn=dsn, host=None, port=None, user=None, password=None, passfile=None, ssl=None,
        direct_tls=None, database=None, server_settings=None, target_session_attrs=None,
        krbsrvname=None, gsslib=None, service=None, servicefile=None,
    )  # fmt: skip
    return list(found)


@pytest.mark.parametrize("pgport", [None, "6000", "6000,6001"])
@pytest.mark.parametrize(
    "raw",
    [
        "postgresql://u:pw@a:1,b:2/db?target_session_attrs=read-write&sslmode=require",
        "postgresql://u@a,b/db",
        "postgresql://u@[::1],b:7/db?port=9",  # after a host list the driver ignores port=
        "postgresql://u@[::1]:8,b/db",
        "postgresql://u@%2Frun%2Fpg,[fe80::1%25eth0]:5/db",
        "postgresql://u@/db?host=h1,h2&port=6000",
        "postgresql://u@/db?host=/run/a,/run/b&port=5432,5433",
        "postgresql://u@/db?host=h1,h2",
    ],
)
def test_each_host_of_a_url_is_an_attempt_of_its_own(
    raw: str, pgport: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new connection tries the hosts one by one, each within connect_timeout (libpq's
    meaning: asyncpg's own timeout is one for all the hosts, and a hung first host used it),
    and each attempt goes where asyncpg would have gone for that host."""
    if pgport is None:
        monkeypatch.delenv("PGPORT", raising=False)
    else:
        monkeypatch.setenv("PGPORT", pgport)
    target = parse_database_url(raw)
    assert len(target.attempts) == 2
    assert [a for dsn in target.attempts for a in addresses(dsn)] == addresses(target.dsn)
    assert all("sslmode=require" in dsn for dsn in target.attempts) or "sslmode" not in raw
    assert "pw" not in repr(target)


def test_prefer_standby_looks_for_a_standby_on_every_host_first() -> None:
    attempts = parse_database_url("postgresql://u@a,b/x?target_session_attrs=prefer-standby")
    assert [(dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(a).query))) for a in
            attempts.attempts] == [
        {"host": h, "port": "5432", "target_session_attrs": attrs}
        for attrs in ("standby", "prefer-standby") for h in ("a", "b")
    ]  # fmt: skip


def test_one_host_or_hosts_the_driver_finds_are_one_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert parse_database_url("postgresql://u@only/db").attempts == ("postgresql://u@only/db",)
    assert len(parse_database_url("postgresql://u@a,b/db?service=x").attempts) == 1
    monkeypatch.setenv("PGHOST", "x,y")
    assert parse_database_url("postgresql:///db").attempts == ("postgresql:/db",)
    with pytest.raises(ConfigError, match="3 hosts and 2 ports"):
        parse_database_url("postgresql://u@/db?host=a,b,c&port=1,2")


def test_a_connect_timeout_of_zero_is_no_limit_of_ours() -> None:
    assert parse_database_url("postgresql://h/db?connect_timeout=0").connect_timeout is None
    assert parse_database_url("postgresql://h/db?connect_timeout=2.5").connect_timeout == 2.5


def test_a_multi_host_url_with_a_password_is_shown_without_it() -> None:
    settings = load_settings(database_url="postgresql://u:hunter2@a:1,b:2/db?password=hunter2")
    assert "hunter2" not in settings.database_url_display
    assert "hunter2" not in repr(settings)
    assert settings.database_url_display == "postgresql://u:***@a:1,b:2/db?password=***"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("mysql://h/db", "must be a PostgreSQL URL"),
        ("not a url", "must be a PostgreSQL URL"),
        ("postgresql+pg8000://h/db", "unsupported database driver"),
        ("postgresql://a:5432,b:port/db", "bad port 'port'"),
        ("postgresql://h/db?target_session_attrs=writable", "target_session_attrs='writable'"),
        ("postgresql://h/db?sslmode=on", "sslmode='on'"),
        ("postgresql://h/db?keepalives_idle=5", "'keepalives_idle'"),
        ("postgresql://h/db?gssencmode=require", "gssencmode=require"),
        ("postgresql://h/db?connect_timeout=soon", "connect_timeout must be seconds"),
    ],
)
def test_urls_we_cannot_honour_are_configuration_errors(raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings({}, database_url=raw)


def test_token_sources_in_order(tmp_path: Path) -> None:
    flag_file = tmp_path / "flag"
    flag_file.write_text("from-flag\n")
    env_file = tmp_path / "env"
    env_file.write_text("from-env-file")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "ingest-token").write_text("from-systemd\n")
    env = {
        "INGEST_TOKEN": "from-env",
        "INGEST_TOKEN_FILE": str(env_file),
        "CREDENTIALS_DIRECTORY": str(creds),
    }

    def token(env: dict[str, str], **kw: str) -> str:
        secret = load_settings(env, **kw).token
        assert secret is not None
        return secret.reveal()

    assert token(env, token_file=str(flag_file)) == "from-flag"
    assert token(env) == "from-env"
    del env["INGEST_TOKEN"]
    assert token(env) == "from-env-file"
    del env["INGEST_TOKEN_FILE"]
    assert token(env) == "from-systemd"


def test_an_unreadable_or_empty_token_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings({"INGEST_TOKEN_FILE": str(tmp_path / "missing")})
    (tmp_path / "empty").write_text("  \n")
    with pytest.raises(ConfigError, match="empty"):
        load_settings({"INGEST_TOKEN_FILE": str(tmp_path / "empty")})
    with pytest.raises(ConfigError, match="INGEST_TOKEN"):
        load_settings({}).require_token()


def test_the_token_and_the_password_never_show(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings({"INGEST_TOKEN": TOKEN}, database_url="postgresql://u:hunter2@h/db")
    logging.getLogger("t").warning("settings: %s %r %s", settings, settings, settings.token)
    shown = f"{settings!r} {settings!s} {settings.token!r} {settings.token!s} {caplog.text}"
    shown += settings.database_url_display
    assert TOKEN not in shown and "hunter2" not in shown
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(Secret(TOKEN))
