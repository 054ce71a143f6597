"""The garbage collector is off only while a command loads its modules (a faster start): on
again for whatever the command runs, and after it, so that a long-running worker's cycles are
collected."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from ingest import cli


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


def test_the_collector_is_on_after_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert gc.isenabled()
    assert cli.main(["no-such-command"]) == 2
    assert gc.isenabled()
