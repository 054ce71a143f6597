from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ingest.config import DEFAULT_FEED_URL, Secret, load_settings, to_sqlalchemy_url
from ingest.errors import ConfigError

TOKEN = "s3cr3t-token-value"


def test_defaults_use_the_current_provider_host_and_the_embedded_database() -> None:
    settings = load_settings({})
    assert settings.feed_url == DEFAULT_FEED_URL == "wss://dde-streams.data.srarena.io"
    assert settings.database_url is None and settings.token is None


def test_flags_win_over_the_environment() -> None:
    env = {"INGEST_DATABASE_URL": "postgresql://env/db", "INGEST_FEED_URL": "ws://env:1"}
    settings = load_settings(env, database_url="postgresql://flag/db", feed_url="ws://flag:2/")
    assert settings.database_url == "postgresql://flag/db"
    assert settings.feed_url == "ws://flag:2"


def test_database_url_falls_back_to_DATABASE_URL() -> None:
    assert load_settings({"DATABASE_URL": "postgresql://x/y"}).database_url == "postgresql://x/y"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("postgresql://u:p@h:5433/db", "postgresql+asyncpg://u:p@h:5433/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql://user@/db?host=/run/postgresql", "postgresql+asyncpg://user@/db?host=/run/postgresql"),
        ("postgresql://h/db?sslmode=require", "postgresql+asyncpg://h/db?ssl=require"),
    ],
)  # fmt: skip
def test_database_urls_as_users_write_them(raw: str, expected: str) -> None:
    url = to_sqlalchemy_url(raw)
    assert url.render_as_string(hide_password=False).replace("%2F", "/") == expected


@pytest.mark.parametrize("raw", ["mysql://h/db", "not a url", "postgresql+pg8000://h/db"])
def test_other_urls_are_configuration_errors(raw: str) -> None:
    with pytest.raises(ConfigError):
        load_settings({"INGEST_DATABASE_URL": raw})


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
    settings = load_settings(
        {"INGEST_TOKEN": TOKEN, "INGEST_DATABASE_URL": "postgresql://u:hunter2@h/db"}
    )
    logging.getLogger("t").warning("settings: %s %r %s", settings, settings, settings.token)
    shown = f"{settings!r} {settings!s} {settings.token!r} {settings.token!s} {caplog.text}"
    shown += settings.database_url_display
    assert TOKEN not in shown and "hunter2" not in shown
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(Secret(TOKEN))
