"""``ingest settle`` as a real subprocess: SIGKILLed at several moments while a match is being
stored, restarted each time; the event log ends up exactly the implied sequence, once."""

from __future__ import annotations

import asyncio
import signal

import asyncpg

from ingest.db.store import Store
from ingest.simulator.generator import MatchSpec, generate_match
from tests.acceptance.test_cli import cli, cli_env, start_cli
from tests.conftest import wait_until
from tests.integration.test_settlement import event_log, implied, results, truth_breaks
from tests.integration.test_views import write


async def test_sigkilled_settlers_leave_each_event_once(
    database_url: str, store: Store, sql: asyncpg.Connection
) -> None:
    match = generate_match(MatchSpec(seed=27, best_of=7))  # centuries, corrections, 361 packets
    f, packets = match.fixture_id, match.packets
    breaks = truth_breaks(match.truth)
    expected = implied(packets, match.truth, breaks)
    env = cli_env(INGEST_DATABASE_URL=database_url, INGEST_SETTLE_IDLE_CHECK="3600")
    await store.register([f])

    async def logged() -> int:
        return len(await event_log(sql, f))

    written, kills = 0, 0
    for quarter in (1, 2, 3):  # store a part of the match, kill the settler mid-stream
        proc = await start_cli("settle", str(f), "--until-finished", env=env)
        target = len(packets) * quarter // 4
        before = await logged()
        # store in small batches, as a live worker would, while the settler reacts
        while written < target:
            await write(store, f, packets[written : written + 7])
            written = min(written + 7, target)
            if written >= target - 7:
                break
        await write(store, f, packets[written:target])
        written = target

        async def progressed(before: int = before) -> bool:
            return await logged() > before

        try:
            await wait_until(progressed, timeout=30)
        except TimeoutError:
            proc.kill()
            _, err = await proc.communicate()
            raise AssertionError(err.decode()[-3000:]) from None
        proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
        kills += 1
        assert await event_log(sql, f) == expected[: len(await event_log(sql, f))]

    await write(store, f, packets[written:])
    done = await cli("settle", str(f), "--until-finished", env=env, timeout=60)
    assert done.code == 0, done.stderr
    assert kills == 3
    assert await event_log(sql, f) == expected
    assert (await results(sql, f))["match_winner"] == match.truth["winner"]
    again = await cli("settle", str(f), "--until-finished", env=env, timeout=60)
    assert again.code == 0 and await event_log(sql, f) == expected


async def test_settle_needs_fixtures_or_all(database_url: str) -> None:
    done = await cli("settle", env=cli_env(INGEST_DATABASE_URL=database_url))
    assert done.code == 2 and "FIXTURE_ID ... or --all" in done.stderr


async def test_settle_refuses_an_unmigrated_database(empty_database_url: str) -> None:
    done = await cli("settle", "--all", env=cli_env(INGEST_DATABASE_URL=empty_database_url))
    assert done.code == 78 and "ingest migrate" in done.stderr
