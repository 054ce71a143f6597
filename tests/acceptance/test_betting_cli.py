"""The betting status through the real ``ingest run``, against our simulator and the independent
websockets feed: each reason enters and leaves, a SIGKILLed worker's fixture reads
``worker_silent`` within stale-after plus a second, a restart writes no second ``open``, and a
database outage ends with the status right again and no duplicate event.

Timings are production's ratios scaled down: --stale-after 1, --liveness-timeout 3, --max-delay
2, heartbeats every quarter second.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ingest.simulator.generator import MatchSpec, generate_match, to_jsonl
from ingest.simulator.recording import Recording
from tests.acceptance.test_cli import cli, cli_env, start_cli
from tests.conftest import TOKEN, StartSimulator, pg_ctl, plain, wait_until
from tests.integration.independent_feed import IndependentFeed

STALE_AFTER = 1.0
TIMINGS = {
    "INGEST_STALE_AFTER": str(STALE_AFTER),
    "INGEST_LIVENESS_TIMEOUT": "3",
    "INGEST_MAX_DELAY": "2",
}
# live, the match played 40 times faster from its first frame on (the 19 minutes before it are
# played already): a packet every half second or so, heartbeats in between
LIVE: dict[str, Any] = {
    "live": True, "time_scale": 40, "live_offset": 1290, "heartbeat_interval": 0.25,
}  # fmt: skip
Event = tuple[str, str | None]
OPEN: Event = ("open", None)


@pytest.fixture(scope="module")
def quiet_match() -> Recording:
    """A match without the generator's own suspensions: the test makes its own."""
    match = generate_match(MatchSpec(seed=21, best_of=7, suspensions=False))
    return Recording.from_text(to_jsonl(match.packets), name="seed-21")


class Events:
    """A fixture's betting events: as the table holds them, and as a listener hears them."""

    def __init__(self, conn: asyncpg.Connection, fixture: uuid.UUID) -> None:
        self.conn, self.fixture = conn, fixture
        self.heard: list[Event] = []

    async def listen(self) -> None:
        def on(*args: Any) -> None:
            event = json.loads(args[3])
            if event["fixture_id"] == str(self.fixture):
                self.heard.append((event["status"], event["reason"]))

        await self.conn.add_listener("betting_status", on)

    async def all(self) -> list[Event]:
        rows = await self.conn.fetch(
            "SELECT status, reason FROM betting_events WHERE fixture_id = $1 ORDER BY id",
            self.fixture,
        )
        return [(r[0], r[1]) for r in rows]

    async def next(self, after: int, event: Event, timeout: float = 15) -> int:
        """Wait for ``event`` among the events from index ``after`` on; the index after it."""
        found: list[int] = []

        async def seen() -> bool:
            events = await self.all()
            found[:] = [i for i in range(after, len(events)) if events[i] == event]
            return bool(found)

        await wait_until(seen, timeout=timeout)
        return found[0] + 1

    async def view(self) -> tuple[str, str | None, datetime | None]:
        row = await self.conn.fetchrow(
            "SELECT status, reason, alive_at FROM fixture_betting WHERE fixture_id = $1",
            self.fixture,
        )
        return (row[0], row[1], row[2]) if row else ("missing", None, None)


def no_two_alike(events: list[Event]) -> bool:
    return all(a != b for a, b in itertools.pairwise(events))


@pytest.fixture
async def sql_for(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(plain(database_url))
    yield conn
    await conn.close()


async def _stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> tuple[int, str]:
    if proc.returncode is None:
        proc.send_signal(sig)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_each_reason_enters_and_leaves_a_sigkill_reads_worker_silent_and_a_restart_writes_no_second_open(  # noqa: E501
    start_simulator: StartSimulator,
    database_url: str,
    sql_for: asyncpg.Connection,
    quiet_match: Recording,
) -> None:
    fixture = quiet_match.fixture_id
    sim = await start_simulator([quiet_match], **LIVE)
    env = cli_env(
        INGEST_DATABASE_URL=database_url, INGEST_FEED_URL=sim.url, INGEST_TOKEN=TOKEN, **TIMINGS
    )
    events = Events(sql_for, fixture)
    await events.listen()
    proc = await start_cli("run", str(fixture), env=env)
    try:
        at = await events.next(0, OPEN)

        # a stall (pings still answered) shorter than the liveness timeout: no reconnect
        sim.set_faults(fixture, stall_now=2.0)
        at = await events.next(at, ("suspended", "feed_stale"))
        at = await events.next(at, OPEN)

        # the provider suspends collection, then collects again
        assert sim.suspend_now(fixture, 1.5)
        at = await events.next(at, ("suspended", "provider_suspended"))
        at = await events.next(at, OPEN)

        # packets stamped 5 s before they are sent, then on time again
        sim.set_faults(fixture, delay_seconds=5.0)
        at = await events.next(at, ("suspended", "feed_delayed"))
        sim.set_faults(fixture, delay_seconds=0.0)
        at = await events.next(at, OPEN)

        # the connection lost and reconnects refused for a while
        sim.set_faults(fixture, refuse_seconds=1.5)
        assert await sim.drop_now(fixture, "close") == 1
        at = await events.next(at, ("suspended", "feed_down"))
        at = await events.next(at, OPEN)

        written = await events.all()
        assert no_two_alike(written), written
        assert {r for _, r in written} == {
            None, "feed_stale", "provider_suspended", "feed_delayed", "feed_down",
        }  # fmt: skip
        assert (await sql_for.fetchval(
            "SELECT reason FROM betting_events WHERE fixture_id = $1 AND reason = "
            "'provider_suspended' AND seq = (SELECT max(seq) FROM actions WHERE fixture_id = $1 "
            "AND action_type_id = 22 AND payload #>> '{fixtureSummary,collectionStatus}' = "
            "'CollectionSuspended')", fixture,
        )) == "provider_suspended"  # fmt: skip  # written with the packet that carries it

        shown = await cli("status", "--once", "--format", "json", str(fixture), env=env)
        (entry,) = json.loads(shown.stdout)
        assert (entry["betting_status"], entry["betting_reason"]) == ("open", None)

        # renewed every third of --stale-after (1 s here), not once a second: the view never
        # has a moment between two renewals in which it reads this live worker as silent
        renewals: set[datetime] = set()
        async with asyncio.timeout(15):
            while len(renewals) < 5:
                status, _, alive_at = await events.view()
                assert status == "open"
                if alive_at is not None:
                    renewals.add(alive_at)
                await asyncio.sleep(0.05)
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(sorted(renewals))]
        assert max(gaps) < 0.8, gaps

        # SIGKILL: nothing can write anything, the view says it by itself
        assert (await events.view())[:2] == ("open", None)
        proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        await proc.wait()

        async def silent() -> bool:
            return (await events.view())[:2] == ("suspended", "worker_silent")

        await wait_until(silent, timeout=STALE_AFTER + 5, interval=0.01)
        assert time.monotonic() - killed <= STALE_AFTER + 1.0
        before = await events.all()
        assert before[-1] == OPEN  # the log holds what workers wrote

        # a restart: open again in the view, and no second open in the log
        proc = await start_cli("run", str(fixture), env=env)

        async def open_again() -> bool:
            return (await events.view())[:2] == OPEN

        await wait_until(open_again, timeout=15)
        assert await events.all() == before

        # a clean stop says so at once
        code, err = await _stop(proc)
        assert code == 0, err
        assert (await events.all())[-1] == ("suspended", "worker_silent")
        assert (await events.view())[:2] == ("suspended", "worker_silent")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    await asyncio.sleep(0.1)  # the last notification's delivery (not a synchronisation)
    assert events.heard == await events.all()  # a listener heard each change once


async def test_stale_delayed_and_open_again_against_the_independent_feed(
    database_url: str, sql_for: asyncpg.Connection, quiet_match: Recording
) -> None:
    fixture = quiet_match.fixture_id
    late = {"seconds": 0.0}

    def stamp(line: str) -> str:  # the timestamp of its sending, as the real feed's
        packet = json.loads(line)
        sent = datetime.now(UTC) - timedelta(seconds=late["seconds"])
        packet["fixtureAction"]["timestamp"] = sent.isoformat()
        return json.dumps(packet)

    feed = IndependentFeed(
        fixture, quiet_match.lines, TOKEN, pace=0.2, stamp=stamp, heartbeat_every=0.25,
        stall_at=8, finished=False,
    )  # fmt: skip
    url = await feed.start()
    env = cli_env(INGEST_DATABASE_URL=database_url, INGEST_FEED_URL=url, INGEST_TOKEN=TOKEN,
                  **TIMINGS)  # fmt: skip
    events = Events(sql_for, fixture)
    proc = await start_cli("run", str(fixture), env=env)
    try:
        at = await events.next(0, OPEN)
        # the first connection goes silent after packet 8, answering pings: stale first, then
        # replaced at the liveness timeout, and open again on the next connection
        at = await events.next(at, ("suspended", "feed_stale"))
        at = await events.next(at, OPEN)
        assert len(feed.starts) == 2
        late["seconds"] = 5.0
        at = await events.next(at, ("suspended", "feed_delayed"))
        late["seconds"] = 0.0
        at = await events.next(at, OPEN)
        code, err = await _stop(proc)
        assert code == 0, err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await feed.stop()
    written = await events.all()
    assert no_two_alike(written), written
    assert written[-1] == ("suspended", "worker_silent")


async def test_a_database_outage_ends_with_the_status_right_again_and_no_duplicate_event(
    start_simulator: StartSimulator, own_server: tuple[str, Path], quiet_match: Recording
) -> None:
    url, pgdata = own_server
    fixture = quiet_match.fixture_id
    sim = await start_simulator([quiet_match], **LIVE)
    env = cli_env(INGEST_DATABASE_URL=url, INGEST_FEED_URL=sim.url, INGEST_TOKEN=TOKEN, **TIMINGS)
    proc = await start_cli("run", str(fixture), env=env)
    conn = await asyncpg.connect(plain(url))
    try:
        events = Events(conn, fixture)
        at = await events.next(0, OPEN)
        await conn.close()
        await asyncio.to_thread(pg_ctl, pgdata, "stop")
        sim.set_faults(fixture, delay_seconds=5.0)  # a change the worker cannot write yet
        await asyncio.sleep(2.0)  # the outage's length: the scenario, not a synchronisation
        await asyncio.to_thread(pg_ctl, pgdata, "start")
        conn = await asyncpg.connect(plain(url))
        events = Events(conn, fixture)
        at = await events.next(at, ("suspended", "feed_delayed"), timeout=30)
        sim.set_faults(fixture, delay_seconds=0.0)
        at = await events.next(at, OPEN)

        async def confirmed() -> bool:
            status, reason, alive = await events.view()
            fresh = alive is not None and datetime.now(UTC) - alive < timedelta(seconds=1.5)
            return (status, reason) == OPEN and fresh

        await wait_until(confirmed, timeout=10)
        written = await events.all()
        assert written == [OPEN, ("suspended", "feed_delayed"), OPEN]
        code, err = await _stop(proc)
        assert code == 0, err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await conn.close()


async def test_stale_after_must_be_below_the_liveness_timeout(database_url: str) -> None:
    env = cli_env(INGEST_DATABASE_URL=database_url, INGEST_TOKEN=TOKEN)
    done = await cli(
        "run", str(uuid.uuid4()), "--stale-after", "5", "--liveness-timeout", "5", env=env
    )
    assert done.code == 78
    assert "--stale-after" in done.stderr and "--liveness-timeout" in done.stderr
