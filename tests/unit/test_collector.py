"""The garbage collector is off only while a command loads its modules (a faster start): on
again for whatever the command runs, and after it, so that a long-running worker's cycles are
collected."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest import cli, commands


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    yield
    gc.enable()


def test_a_command_loop_runs_with_the_collector_on() -> None:
    seen: list[bool] = []

    async def command(stop: asyncio.Event) -> int:
        seen.append(gc.isenabled())
        return 0

    gc.disable()  # as main() leaves it while the command's modules load
    assert cli.run_async(command) == 0
    assert seen == [True]


def test_main_turns_the_collector_off_while_parsing_and_back_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[bool] = []
    monkeypatch.setattr(cli, "_main", lambda argv: seen.append(gc.isenabled()) or 0)
    assert cli.main([]) == 0
    assert seen == [False] and gc.isenabled()
    gc.disable()  # a caller that had it off keeps it off
    assert cli.main([]) == 0
    assert not gc.isenabled()


def test_the_collector_is_on_after_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert gc.isenabled()
    assert cli.main(["no-such-command"]) == 2
    assert gc.isenabled()


def test_a_command_without_a_loop_runs_with_the_collector_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[bool] = []

    def generate_feed(**values: object) -> int:
        seen.append(gc.isenabled())
        return 0

    monkeypatch.setattr(commands, "generate_feed", generate_feed)
    monkeypatch.setattr(cli, "configure_logging", lambda *args: None)
    assert cli.main(["feed", "generate", "--seed", "3", "-o", str(tmp_path / "m.jsonl")]) == 0
    assert seen == [True]
