"""Each option declared once: what the environment may reach, the switches, the defaults, and the
README's option tables, generated from the declarations.

``python -m tests.unit.test_options --write`` rewrites the README's tables from the code.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from ingest.cli import ingest, main, option_table, parse, resolve
from ingest.settings import (
    POOL_SIZE,
    Logging,
    Monitoring,
    RunOptions,
    Runtime,
    Settings,
    SettleOptions,
    declared,
)

README = Path(__file__).resolve().parents[2] / "README.md"
TABLES = {
    "settings": lambda: option_table("run", settings=True),
    "run": lambda: option_table("run"),
    "settle": lambda: option_table("settle"),
    "feed serve": lambda: option_table("feed", "serve"),
}
BLOCK = re.compile(
    r"(<!-- options: (?P<name>[a-z ]+) -->\n)(?P<body>.*?)(<!-- end options -->)", re.S
)


def rendered(text: str) -> str:
    return BLOCK.sub(lambda m: m[1] + TABLES[m["name"]]() + m[4], text)


def commands(group: click.Group = ingest, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name in group.list_commands(click.Context(group)):
        sub = group.get_command(click.Context(group), name)
        assert sub is not None
        if isinstance(sub, click.Group):
            yield from commands(sub, (*path, name))
        else:
            yield (*path, name)


ALL = sorted(commands())
# every class whose fields are options a deployment may set
OPTION_CLASSES = (Settings, Logging, Runtime, RunOptions, Monitoring, SettleOptions)
DEPLOYMENT = {  # every variable an option may read: the deployment settings, and nothing else
    var for cls in OPTION_CLASSES for f, opt in declared(cls) for var in opt.variables(f.name)
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in [n for n in os.environ if n.startswith("INGEST_") or n == "DATABASE_URL"]:
        monkeypatch.delenv(name)
    return monkeypatch


def test_the_readme_tables_are_the_declarations() -> None:
    text = README.read_text()
    assert set(m["name"] for m in BLOCK.finditer(text)) == set(TABLES)
    assert text == rendered(text), "run: python -m tests.unit.test_options --write"


def test_migrate_never_reads_its_revision_or_downgrade_from_the_environment(
    clean_env: pytest.MonkeyPatch,
) -> None:
    # a deployment that exports its build revision as INGEST_REVISION, one variable from disaster
    clean_env.setenv("INGEST_REVISION", "base")
    clean_env.setenv("INGEST_DOWNGRADE", "1")
    _, values = parse(["migrate"])
    assert (values["revision"], values["downgrade"]) == ("head", False)


@pytest.mark.parametrize("path", [("status",), ("report", "0" * 8 + "-0000-0000-0000-" + "0" * 12),
                                  ("fixtures", "list")])  # fmt: skip
def test_format_is_never_read_from_the_environment(
    clean_env: pytest.MonkeyPatch, path: tuple[str, ...]
) -> None:
    clean_env.setenv("INGEST_FORMAT", "json")
    _, values = parse(list(path))
    assert values["output_format"] == "text"


def test_the_simulator_reads_no_flag_from_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("INGEST_RECORDING", "match.jsonl")  # once loaded each character as a file
    clean_env.setenv("INGEST_SIM_PORT", "1")
    clean_env.setenv("INGEST_PORT", "1")
    _, values = parse(["feed", "serve"])
    assert values["recordings"] == () and values["port"] == 8765


def test_all_is_a_command_line_choice(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("INGEST_RUN_ALL", "1")
    clean_env.setenv("INGEST_ALL", "1")
    assert parse(["run"])[1]["run_all"] is False
    assert parse(["settle"])[1]["settle_all"] is False


@pytest.mark.parametrize("path", ALL, ids=" ".join)
def test_only_deployment_settings_read_the_environment(path: tuple[str, ...]) -> None:
    for param in resolve(*path).params:
        envvar = param.envvar if isinstance(param.envvar, list) else [param.envvar]
        for var in filter(None, envvar):
            assert var in DEPLOYMENT, f"ingest {' '.join(path)} {param.opts}: {var}"


@pytest.mark.parametrize("path", ALL, ids=" ".join)
def test_every_switch_has_its_no_form(path: tuple[str, ...]) -> None:
    for param in resolve(*path).params:
        if isinstance(param, click.Option) and param.is_flag and "--help" not in param.opts:
            assert param.secondary_opts, f"ingest {' '.join(path)} {param.opts}"


def test_a_variable_is_ingest_and_the_flags_name() -> None:
    named_otherwise = {"DATABASE_URL", "INGEST_SETTLE_IDLE_CHECK"}  # the one alias, one prefix
    for cls in OPTION_CLASSES:
        for f, opt in declared(cls):
            for var in set(opt.variables(f.name)) - named_otherwise:
                assert var == "INGEST_" + opt.flag_for(f.name)[2:].upper().replace("-", "_")


def test_a_switch_the_environment_cannot_set_is_off_unless_given(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("INGEST_UNTIL_FINISHED", "1")
    _, values = parse(["run", "--all"])
    assert values["until_finished"] is False
    _, values = parse(["run", "--all", "--until-finished", "--no-until-finished"])
    assert values["until_finished"] is False


def test_a_flag_wins_over_its_variable_and_help_does_not_depend_on_the_shell(
    clean_env: pytest.MonkeyPatch,
) -> None:
    before = resolve("run").get_help(click.Context(resolve("run")))
    clean_env.setenv("INGEST_BATCH_SIZE", "7")
    assert parse(["run", "--all"])[1]["batch_size"] == 7
    assert parse(["run", "--all", "--batch-size", "9"])[1]["batch_size"] == 9
    assert resolve("run").get_help(click.Context(resolve("run"))) == before


def test_a_bad_value_in_the_environment_is_a_usage_error(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clean_env.setenv("INGEST_WRITERS", "0")
    assert main(["run", "--all"]) == 2
    assert "--writers" in capsys.readouterr().err


def test_defaults_agree_between_the_command_line_and_code(clean_env: pytest.MonkeyPatch) -> None:
    _, values = parse(["run", "--all"])
    in_code = RunOptions()
    for f, _ in declared(RunOptions):
        if f.name != "worker_id":
            assert values[f.name] == getattr(in_code, f.name), f.name
    # a worker built in code is named as the CLI names it: host:pid, never a shared "worker"
    assert in_code.worker_id == values["worker_id"]
    assert in_code.worker_id.endswith(f":{os.getpid()}")
    assert in_code.speed == "normal"  # what the README says, and what the feed assumes
    settle = parse(["settle", "--all"])[1]
    assert settle["pool_size"] == SettleOptions().pool_size == in_code.pool_size == POOL_SIZE
    assert parse(["settle", "--all", "--pool-size", "2"])[1]["pool_size"] == 2


def test_the_token_is_no_option() -> None:
    flags = {opt for path in ALL for p in resolve(*path).params for opt in p.opts}
    assert "--token" not in flags and "--token-file" in flags


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    README.write_text(rendered(README.read_text()))
