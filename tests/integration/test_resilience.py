"""The worker through faults: every test ends comparing the table with the feed's stream."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import asyncpg
import pytest

from ingest.db.store import Store
from ingest.errors import AuthError
from ingest.feed.client import FeedSource, feed_session
from ingest.settings import RunOptions, Secret
from ingest.simulator.generator import MatchSpec, generate_match, to_jsonl
from ingest.simulator.recording import Recording
from ingest.worker.progress import RunResult
from ingest.worker.supervisor import Worker
from tests.conftest import TOKEN, StartSimulator, pg_ctl, plain, wait_until


def fast_options(**changes: object) -> RunOptions:
    options = RunOptions(
        until_finished=True,
        speed="fast",
        backoff_initial=0.01,
        backoff_max=0.2,
        db_backoff_max=0.2,
        connect_rate=0,
        auth_retry_delay=0.05,
    )
    for key, value in changes.items():
        setattr(options, key, value)
    return options


async def run_worker(
    feed_url: str,
    store: Store,
    fixtures: list[uuid.UUID],
    options: RunOptions,
    *,
    liveness: float = 5.0,
    timeout: float = 60.0,
) -> RunResult:
    async with feed_session() as session:
        source = FeedSource(session, feed_url, Secret(TOKEN), liveness_timeout=liveness)
        async with asyncio.timeout(timeout):
            return await Worker(source, store, options).run(fixtures)


async def assert_stored_exactly(sql: asyncpg.Connection, recording: Recording) -> None:
    rows = await sql.fetch(
        "SELECT seq, payload FROM actions WHERE fixture_id = $1 ORDER BY seq", recording.fixture_id
    )
    assert [r["seq"] for r in rows] == list(range(1, len(recording.lines) + 1))
    assert [json.loads(r["payload"]) for r in rows] == [json.loads(x) for x in recording.lines]


def generated(seed: int, best_of: int = 3) -> Recording:
    match = generate_match(MatchSpec(seed=seed, best_of=best_of))
    return Recording.from_text(to_jsonl(match.packets), name=f"seed {seed}")


async def test_abrupt_tcp_resets_every_few_packets(
    start_simulator: StartSimulator, store: Store, sql: asyncpg.Connection, recording: Recording
) -> None:
    sim = await start_simulator([recording], drop_after=13, drop_mode="reset")
    result = await run_worker(sim.url, store, [recording.fixture_id], fast_options())
    assert result.fixtures[recording.fixture_id].connects >= len(recording.lines) // 13
    await assert_stored_exactly(sql, recording)


async def test_a_stall_longer_than_the_liveness_timeout_replaces_the_connection(
    start_simulator: StartSimulator, store: Store, sql: asyncpg.Connection, recording: Recording
) -> None:
    sim = await start_simulator(
        [recording], stall_after=40, stall_seconds=30, heartbeat_interval=0.05
    )
    started = time.monotonic()
    result = await run_worker(sim.url, store, [recording.fixture_id], fast_options(), liveness=0.5)
    # every connection stalls after 40 packets: each is declared dead after 0.5 s, not 30 s
    stats = result.fixtures[recording.fixture_id]
    assert stats.connects == -(-len(recording.lines) // 40)
    assert time.monotonic() - started < 20
    await assert_stored_exactly(sql, recording)


async def test_malformed_frames_are_kept_and_the_stream_completes(
    start_simulator: StartSimulator, store: Store, sql: asyncpg.Connection, recording: Recording
) -> None:
    sim = await start_simulator([recording], malformed_every=25)
    result = await run_worker(sim.url, store, [recording.fixture_id], fast_options())
    expected = len(recording.lines) // 25
    assert result.fixtures[recording.fixture_id].rejected == expected
    reasons = [r["reason"] for r in await sql.fetch("SELECT reason FROM rejected_messages")]
    assert len(reasons) == expected
    assert any("binary" in r for r in reasons) and any("array" in r for r in reasons)
    await assert_stored_exactly(sql, recording)


async def test_refused_connections_are_retried(
    start_simulator: StartSimulator, store: Store, sql: asyncpg.Connection, recording: Recording
) -> None:
    sim = await start_simulator([recording], refuse_until=time.monotonic() + 600)
    worker = asyncio.create_task(run_worker(sim.url, store, [recording.fixture_id], fast_options()))

    async def refused_twice() -> bool:
        return sim.counters[recording.fixture_id].refused >= 2

    await wait_until(refused_twice)
    sim.set_faults(refuse_seconds=0)
    await worker
    await assert_stored_exactly(sql, recording)


async def test_a_refused_token_is_tried_a_few_times_then_raised(
    start_simulator: StartSimulator, store: Store, recording: Recording
) -> None:
    sim = await start_simulator([recording], refuse_token=True)
    with pytest.raises(AuthError):
        await run_worker(sim.url, store, [recording.fixture_id], fast_options(auth_retries=2))
    assert sim.counters[recording.fixture_id].auth_refused == 3  # no retry storm


async def test_fifty_fixtures_in_one_process(
    start_simulator: StartSimulator, store: Store, sql: asyncpg.Connection
) -> None:
    recordings = [generated(seed, best_of=1) for seed in range(100, 150)]
    sim = await start_simulator(recordings, drop_after=60, malformed_every=97)
    result = await run_worker(
        sim.url, store, [r.fixture_id for r in recordings], fast_options(), timeout=120
    )
    assert result.all_finished and len(result.fixtures) == 50
    for recording in recordings:
        await assert_stored_exactly(sql, recording)
    assert await sql.fetchval("SELECT count(*) FROM fixtures WHERE finished") == 50


async def test_the_database_restarting_mid_stream_loses_nothing(
    start_simulator: StartSimulator, own_server: tuple[str, Path], recording: Recording
) -> None:
    url, pgdata = own_server
    seconds = (recording.times[-1] or 0) - (recording.times[0] or 0)
    # the match in 5 s (2.9 at seconds / 4): pg_ctl has seconds to stop before its end
    sim = await start_simulator([recording], time_scale=seconds / 8, max_gap=0.05)
    store = Store.connect(url)
    sql = await asyncpg.connect(plain(url))
    try:
        options = fast_options(speed=None)
        worker = asyncio.create_task(run_worker(sim.url, store, [recording.fixture_id], options))

        async def some_rows() -> bool:
            return bool(await sql.fetchval("SELECT count(*) > 20 FROM actions"))

        await wait_until(some_rows)
        await sql.close()
        await asyncio.to_thread(pg_ctl, pgdata, "stop")
        # the feed goes on while the database is down: the worker holds what it receives
        sent_before = sim.counters[recording.fixture_id].packets_sent

        async def feed_moved_on() -> bool:
            return sim.counters[recording.fixture_id].packets_sent > sent_before + 10

        await wait_until(feed_moved_on)
        await asyncio.to_thread(pg_ctl, pgdata, "start")
        result = await worker
        assert result.fixtures[recording.fixture_id].finished
        sql = await asyncpg.connect(plain(url))
        await assert_stored_exactly(sql, recording)
    finally:
        await store.close()
        if not sql.is_closed():
            await sql.close()


async def test_fifty_fixtures_through_drops_stalls_and_a_database_restart(
    start_simulator: StartSimulator, own_server: tuple[str, Path]
) -> None:
    """The worker issue's acceptance run: verify is clean and every stream is stored exactly."""
    url, pgdata = own_server
    recordings = [generated(seed, best_of=1) for seed in range(200, 250)]
    total = sum(len(r.lines) for r in recordings)
    sim = await start_simulator(recordings, drop_after=45, heartbeat_interval=0.05, max_gap=0.01)
    sim.options.time_scale = 1e9  # paced, but quickly: the run lasts a few seconds
    for i, recording in enumerate(recordings):
        if i % 3 == 0:
            sim.set_faults(recording.fixture_id, drop_mode="reset")
        if i % 5 == 0:
            sim.set_faults(recording.fixture_id, stall_after=30, stall_seconds=30)
    store = Store.connect(url)
    sql = await asyncpg.connect(plain(url))
    try:
        worker = asyncio.create_task(
            run_worker(
                sim.url,
                store,
                [r.fixture_id for r in recordings],
                fast_options(speed=None),
                liveness=0.5,
                timeout=120,
            )
        )

        async def a_third_stored() -> bool:
            return bool(await sql.fetchval("SELECT count(*) > $1 FROM actions", total // 3))

        await wait_until(a_third_stored, timeout=60)
        await sql.close()
        await asyncio.to_thread(pg_ctl, pgdata, "stop")
        # the scenario: the database stays down for a second (not a synchronisation)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(pg_ctl, pgdata, "start")
        result = await worker
        assert result.all_finished
        sql = await asyncpg.connect(plain(url))
        for recording in recordings:
            await assert_stored_exactly(sql, recording)
        report = await store.integrity()
        assert len(report) == 50
        assert all(r["gaps"] == [] and r["conflicts"] == 0 and r["rejected"] == 0 for r in report)
    finally:
        await store.close()
        if not sql.is_closed():
            await sql.close()


async def test_hundreds_of_fixtures_are_connected_at_the_same_time(
    start_simulator: StartSimulator, store: Store, sql: asyncpg.Connection
) -> None:
    """No client-side connection cap: the 101st fixture does not wait for the first to end."""
    from tests.integration.test_simulator import synthetic

    fixtures = [uuid.UUID(int=i, version=4) for i in range(1, 151)]
    recordings = [synthetic(2, fixture=f) for f in fixtures]
    # every connection sends one packet, then stays silent for 10 s before the last one
    sim = await start_simulator(recordings, stall_after=1, stall_seconds=10, heartbeat_interval=0.5)
    worker = asyncio.create_task(run_worker(sim.url, store, fixtures, fast_options()))

    async def all_connected() -> bool:
        return all(sim.counters[f].packets_sent >= 1 for f in fixtures)

    try:
        await wait_until(all_connected, timeout=9)  # within the silence: all at once
        result = await worker
    finally:
        worker.cancel()
    assert result.all_finished
    assert await sql.fetchval("SELECT count(*) FROM actions") == 300


async def test_a_stop_during_a_database_outage_is_prompt(
    start_simulator: StartSimulator, own_server: tuple[str, Path], recording: Recording
) -> None:
    """SIGTERM must not wait for registry calls that retry through an outage."""
    url, pgdata = own_server
    sim = await start_simulator([recording], time_scale=1.0)  # real pacing: never finishes here
    store = Store.connect(url)
    try:
        await store.register([recording.fixture_id])
        async with feed_session() as session:
            source = FeedSource(session, sim.url, Secret(TOKEN), liveness_timeout=5)
            options = fast_options(speed=None, until_finished=False, registry_poll=0.1)
            worker = Worker(source, store, options, leases=store)
            run = asyncio.create_task(worker.run([], follow_registry=True))

            async def connected() -> bool:
                return sim.counters[recording.fixture_id].connections >= 1

            await wait_until(connected)
            await asyncio.to_thread(pg_ctl, pgdata, "stop")
            # the scenario: a registry poll or two fail while the database is down
            await asyncio.sleep(0.5)
            worker.stop()
            stopped = time.monotonic()
            result = await asyncio.wait_for(run, 10)
            assert result.stopped
            assert time.monotonic() - stopped < 5
        await asyncio.to_thread(pg_ctl, pgdata, "start")
    finally:
        await store.close()
