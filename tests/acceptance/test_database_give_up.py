"""A database that stays away longer than the give-up time ends ``run`` and ``settle`` with exit
75 (README, How ``run`` behaves: started while PostgreSQL is down "it waits with the same
patience as a running worker (10 minutes, then exit 75), says so once in the log"; "An outage
longer than 10 minutes ends the run with exit 75"; Settlement events: ``settle`` uses "the
worker's ... exit codes (... 75 database away over 10 minutes)").

The give-up time is ``RunOptions.db_give_up_after`` (600 s), an internal knob with no flag or
variable, so these tests run the commands' own in-process entries (``ingest.commands.run`` and
``ingest.commands.settle``, what the CLI calls) with it at GIVE_UP seconds. What they raise is
what the CLI logs at ERROR (its message) and exits with (its ``exit_code``), as for the 77 and 78
of tests/acceptance/test_cli.py. The database is away in two ways: a URL whose port nothing
listens on (started while it is down), and an embedded server of the test's own, stopped while
the command runs.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ingest import commands
from ingest.errors import EX_TEMPFAIL, IngestError, TemporaryError
from ingest.settings import RunOptions, SettleOptions, load_settings
from ingest.simulator.recording import Recording
from tests.conftest import TOKEN, StartSimulator, pg_ctl, plain, wait_until

GIVE_UP = 2.0  # seconds of outage before giving up (600 in production)
SLACK = 8.0  # on top of GIVE_UP: the last backoff (<= 0.2 s), the shutdown, a loaded machine
OUTAGE_SAID = "database unavailable, retrying"


def patience() -> RunOptions:
    return RunOptions(db_give_up_after=GIVE_UP, db_backoff_max=0.2, backoff_initial=0.05)


def nothing_listening() -> str:
    """A database URL on a loopback port nothing listens on (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"postgresql://postgres@127.0.0.1:{port}/ingest"


async def gives_up(work: Awaitable[Any]) -> tuple[Exception, float]:
    """Await a command that should give up: the error it ended with, and the seconds it took."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(GIVE_UP + SLACK):
            await work
    except TimeoutError:
        raise AssertionError(f"still running after {GIVE_UP + SLACK:g} s: never gave up") from None
    except Exception as exc:  # what the CLI would catch (or not) and exit with
        return exc, time.monotonic() - started
    raise AssertionError("it ended without an error: the CLI would exit 0")


def assert_exit_75(error: Exception) -> None:
    code = error.exit_code if isinstance(error, IngestError) else "1, with a traceback"
    assert isinstance(error, TemporaryError), f"ended with {error!r}: the CLI would exit {code}"
    assert error.exit_code == EX_TEMPFAIL == 75
    # the line the CLI logs at ERROR before it exits, with how long the outage had lasted: at
    # least the give-up time (the time to the error alone would not show it: a stop spends up
    # to 3 s trying to flush what was received)
    lasted = re.search(r"the database has been unavailable for (\d+) s", str(error))
    assert lasted is not None, str(error)
    assert int(lasted[1]) >= GIVE_UP, str(error)


def said(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


async def test_run_started_while_the_database_is_away_waits_then_exits_75(
    start_simulator: StartSimulator, recording: Recording, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sim = await start_simulator([recording])
    url = nothing_listening()
    settings = load_settings({"INGEST_TOKEN": TOKEN}, feed_url=sim.url, database_url=url)
    error, took = await gives_up(
        commands.run(settings, url, [recording.fixture_id], patience(), asyncio.Event())
    )
    assert_exit_75(error)
    assert took >= GIVE_UP, f"gave up after {took:.1f} s, before the {GIVE_UP} s of patience"
    assert len(said(caplog, OUTAGE_SAID)) == 1, said(caplog, OUTAGE_SAID)  # said once
    assert sim.counters[recording.fixture_id].connections == 0  # the feed was never read


async def test_run_exits_75_when_the_database_goes_away_for_longer_than_the_give_up_time(
    start_simulator: StartSimulator,
    own_server: tuple[str, Path],
    recording: Recording,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    url, pgdata = own_server
    # live at 20x: packets keep coming while the database is away
    sim = await start_simulator([recording], live=True, time_scale=20.0)
    settings = load_settings({"INGEST_TOKEN": TOKEN}, feed_url=sim.url, database_url=url)
    run = asyncio.create_task(
        commands.run(settings, url, [recording.fixture_id], patience(), asyncio.Event())
    )
    try:
        sql = await asyncpg.connect(plain(url))
        try:
            await wait_until(lambda: sql.fetchval("SELECT count(*) > 0 FROM actions"), 30)
        finally:
            await sql.close()
        assert not run.done()
        await asyncio.to_thread(pg_ctl, pgdata, "stop")
        error, took = await gives_up(run)
    finally:
        if not run.done():
            run.cancel()
    assert_exit_75(error)
    assert took >= GIVE_UP, f"gave up {took:.1f} s after the stop, within the {GIVE_UP} s"
    assert said(caplog, OUTAGE_SAID)
    assert sim.counters[recording.fixture_id].active == 0  # the feed's socket is closed


async def test_settle_started_while_the_database_is_away_waits_then_exits_75(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    options = SettleOptions(retry=patience())
    error, took = await gives_up(
        commands.settle(nothing_listening(), [uuid.uuid4()], asyncio.Event(), options)
    )
    assert_exit_75(error)
    assert took >= GIVE_UP, f"gave up after {took:.1f} s, before the {GIVE_UP} s of patience"
    assert len(said(caplog, OUTAGE_SAID)) == 1, said(caplog, OUTAGE_SAID)


async def test_settle_exits_75_when_the_database_goes_away_for_longer_than_the_give_up_time(
    own_server: tuple[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    url, pgdata = own_server
    # the LISTEN connection is checked every 0.2 s while idle: the outage is met at once
    options = SettleOptions(idle_check=0.2, retry=patience())
    settle = asyncio.create_task(
        commands.settle(url, [], asyncio.Event(), options, settle_all=True)
    )
    try:

        async def listening() -> bool:
            assert not settle.done(), settle
            return bool(said(caplog, "listening for ingest_actions"))

        await wait_until(listening, 30)
        await asyncio.to_thread(pg_ctl, pgdata, "stop")
        error, took = await gives_up(settle)
    finally:
        if not settle.done():
            settle.cancel()
    assert_exit_75(error)
    assert took >= GIVE_UP, f"gave up {took:.1f} s after the stop, within the {GIVE_UP} s"
    assert said(caplog, OUTAGE_SAID)
