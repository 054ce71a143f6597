"""What a stuck or hostile feed sends cannot stop or corrupt ingestion.

Each case runs against a server on another websocket stack (the ``websockets`` library, see
independent_feed.py) and, where our simulator can produce it, against the simulator too. Timings
keep production's ratio: a websocket ping half the liveness timeout into a silence, so a stalled
server that answers pings is the case under test, not one that never gets a ping.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from ingest.db.store import Store
from ingest.feed.client import MAX_FRAME_BYTES, FeedSource, feed_session
from ingest.feed.packet import REJECTED_KEEP_BYTES
from ingest.ops.metrics import Metrics
from ingest.settings import RunOptions, Secret
from ingest.simulator.recording import Recording
from ingest.simulator.server import HOSTILE
from ingest.worker.progress import RunResult
from ingest.worker.supervisor import Worker
from tests.conftest import TOKEN, StartSimulator, wait_until
from tests.integration.independent_feed import IndependentFeed
from tests.integration.test_resilience import fast_options

LIVENESS = 3.0  # production: 30 s, pings every 15 s; here the same ratio, ten times faster


async def run(
    url: str, store: Store, fixture_id: uuid.UUID, opts: RunOptions, timeout: float = 60
) -> RunResult:
    async with feed_session() as session:
        source = FeedSource(session, url, Secret(TOKEN), liveness_timeout=LIVENESS)
        async with asyncio.timeout(timeout):
            return await Worker(source, store, opts).run([fixture_id])


async def stored(sql: asyncpg.Connection, fixture_id: uuid.UUID) -> list[tuple[int, object]]:
    rows = await sql.fetch(
        "SELECT seq, payload FROM actions WHERE fixture_id = $1 ORDER BY seq", fixture_id
    )
    return [(r["seq"], json.loads(r["payload"])) for r in rows]


def stream(recording: Recording) -> list[tuple[int, object]]:
    return [(i, json.loads(line)) for i, line in enumerate(recording.lines, 1)]


@pytest.fixture
async def independent(recording: Recording) -> AsyncIterator[IndependentFeed]:
    feed = IndependentFeed(recording.fixture_id, recording.lines, TOKEN)
    yield feed
    await feed.stop()


# -- a stalled feed whose websocket layer still answers pings ---------------------------------


async def test_a_stall_with_pings_answered_is_replaced_within_the_liveness_timeout(
    independent: IndependentFeed,
    store: Store,
    sql: asyncpg.Connection,
    recording: Recording,
    caplog: pytest.LogCaptureFixture,
) -> None:
    independent.stall_at = 10
    url = await independent.start()
    caplog.set_level(logging.WARNING, logger="ingest")
    await run(url, store, recording.fixture_id, fast_options())

    assert independent.starts == [0, 10]  # replaced once, resumed at MAX(seq)
    assert independent.pings >= 1  # the production case: pings went out and were answered
    assert independent.stalled_at is not None and independent.reconnected_at is not None
    detected = independent.reconnected_at - independent.stalled_at
    assert LIVENESS - 0.5 < detected < 2 * LIVENESS  # not 30 s, nor never
    assert "no packet or heartbeat for 3 s" in caplog.text
    assert await stored(sql, recording.fixture_id) == stream(recording)


async def test_a_stall_of_our_simulator_is_replaced_within_the_liveness_timeout(
    start_simulator: StartSimulator, store: Store, sql: asyncpg.Connection, recording: Recording
) -> None:
    half = len(recording.lines) // 2 + 1  # the second connection gets past it
    sim = await start_simulator(
        [recording], stall_after=half, stall_seconds=120, heartbeat_interval=0.5
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await run(sim.url, store, recording.fixture_id, fast_options())
    assert result.fixtures[recording.fixture_id].connects == 2
    assert loop.time() - started < LIVENESS + 10  # not the 120 s of the stall
    assert await stored(sql, recording.fixture_id) == stream(recording)


# -- hostile frames ----------------------------------------------------------------------------


async def assert_hostile_frames_kept_bounded(
    sql: asyncpg.Connection, fixture_id: uuid.UUID, sent: list[bytes]
) -> None:
    rows = await sql.fetch(
        "SELECT raw, length, sha256, reason FROM rejected_messages WHERE fixture_id = $1 "
        "ORDER BY id",
        fixture_id,
    )
    assert len(rows) == len(sent)
    for row, data in zip(rows, sent, strict=True):
        assert row["length"] == len(data)
        assert bytes(row["sha256"]) == hashlib.sha256(data).digest()
        assert bytes(row["raw"]) == data[:REJECTED_KEEP_BYTES]
        assert row["reason"]
    assert await sql.fetchval("SELECT count(*) FROM action_conflicts") == 0


async def test_hostile_frames_from_another_stack_change_nothing(
    independent: IndependentFeed, store: Store, sql: asyncpg.Connection, recording: Recording
) -> None:
    independent.after = {3 + i: [frame] for i, frame in enumerate(HOSTILE)}
    # a frame of 17 MiB (over the old 16 MiB limit) that is a real packet is stored
    big = json.loads(recording.lines[1])
    big["padding"] = "p" * (17 * 1024 * 1024)
    lines = list(recording.lines)
    lines[1] = json.dumps(big)
    # a real packet nested as deep as PostgreSQL allows is stored too
    deep = json.loads(lines[2])
    lines[2] = json.dumps(deep)[:-1] + ', "deep": ' + "[" * 1000 + "]" * 1000 + "}"
    independent.lines = lines
    url = await independent.start()

    result = await run(url, store, recording.fixture_id, fast_options())

    stats = result.fixtures[recording.fixture_id]
    assert stats.finished and stats.connects == 1 and stats.rejected == len(HOSTILE)
    # compared by PostgreSQL: Python's == recurses too deeply for the deep packet
    matching = await sql.fetchval(
        "SELECT count(*) FROM actions a JOIN unnest($2::text[]) WITH ORDINALITY AS s(p, seq) "
        "ON a.seq = s.seq AND a.payload = s.p::jsonb WHERE a.fixture_id = $1",
        recording.fixture_id,
        lines,
    )
    assert matching == len(lines)
    assert await sql.fetchval("SELECT count(*) FROM actions") == len(lines)
    await assert_hostile_frames_kept_bounded(
        sql, recording.fixture_id, [data for data, _ in HOSTILE]
    )


async def test_hostile_frames_from_our_simulator_change_nothing(
    start_simulator: StartSimulator, store: Store, sql: asyncpg.Connection, recording: Recording
) -> None:
    sim = await start_simulator([recording], hostile_every=3)
    result = await run(sim.url, store, recording.fixture_id, fast_options())
    count = len(recording.lines) // 3
    assert sim.counters[recording.fixture_id].hostile_sent == count
    assert result.fixtures[recording.fixture_id].rejected == count
    assert await stored(sql, recording.fixture_id) == stream(recording)
    await assert_hostile_frames_kept_bounded(
        sql, recording.fixture_id, [HOSTILE[i % len(HOSTILE)][0] for i in range(count)]
    )


async def test_rejected_frames_beyond_the_rate_are_counted_not_stored(
    start_simulator: StartSimulator, store: Store, sql: asyncpg.Connection, recording: Recording
) -> None:
    sim = await start_simulator([recording], malformed_every=1)
    opts = fast_options(rejected_burst=5, rejected_per_minute=0.0001, state_interval=0.05)
    result = await run(sim.url, store, recording.fixture_id, opts)
    stats = result.fixtures[recording.fixture_id]
    total = len(recording.lines) - 1  # the one after the finished packet is never read
    assert stats.rejected == 5 and stats.rejected_unstored == total - 5
    assert await sql.fetchval("SELECT count(*) FROM rejected_messages") == 5
    assert await sql.fetchval("SELECT rejected_unstored FROM fixtures") == total - 5
    assert await stored(sql, recording.fixture_id) == stream(recording)


async def test_an_unnumbered_packet_never_takes_a_numbered_packets_place(
    independent: IndependentFeed, store: Store, sql: asyncpg.Connection, recording: Recording
) -> None:
    junk = (b'{"fixtureAction": {"actionId": "no-seq"}}', False)
    # on a fresh fixture the junk comes first: held back until packet 1 shows the feed numbers
    independent.after = {0: [junk], 4: [junk]}
    independent.stall_at = 4
    url = await independent.start()
    async with feed_session() as session:
        source = FeedSource(session, url, Secret(TOKEN), liveness_timeout=LIVENESS)
        worker = Worker(source, store, fast_options())
        task = asyncio.create_task(worker.run([recording.fixture_id]))

        async def four_stored_two_rejected() -> bool:
            return (
                await sql.fetchval("SELECT count(*) FROM actions") == 4
                and await sql.fetchval("SELECT count(*) FROM rejected_messages") == 2
            )

        await wait_until(four_stored_two_rejected, timeout=30)
        worker.stop()
        await asyncio.wait_for(task, 10)
    # a new process: the keying comes from the stored rows
    independent.after = {5: [junk]}
    await run(url, store, recording.fixture_id, fast_options())
    assert await stored(sql, recording.fixture_id) == stream(recording)
    reasons = await sql.fetch("SELECT reason FROM rejected_messages ORDER BY id")
    assert [r["reason"] for r in reasons] == [
        "invalid action: no fixtureSeqNum in a feed that numbers its packets (keyed by "
        "position it could take a real packet's place)"
    ] * 3


def unnumbered(recording: Recording) -> list[str]:
    lines = []
    for line in recording.lines:
        packet = json.loads(line)
        del packet["fixtureAction"]["fixtureSeqNum"]
        lines.append(json.dumps(packet))
    return lines


async def test_one_numbered_packet_cannot_turn_a_position_keyed_feed(
    independent: IndependentFeed, store: Store, sql: asyncpg.Connection, recording: Recording
) -> None:
    independent.lines = lines = unnumbered(recording)
    independent.after = {3: [(b'{"fixtureAction": {"actionId": "h", "fixtureSeqNum": 1}}', False)]}
    url = await independent.start()
    result = await run(url, store, recording.fixture_id, fast_options())
    stats = result.fixtures[recording.fixture_id]
    assert stats.finished and stats.connects == 1 and stats.rejected == 1
    # the rejected packet keeps its place in the stream (a server counts it in startPosition):
    # the packets after it stay where the server puts them, and verify shows the hole
    assert await stored(sql, recording.fixture_id) == [
        (i if i <= 3 else i + 1, json.loads(line)) for i, line in enumerate(lines, 1)
    ]
    assert stats.gaps == 1
    reason = await sql.fetchval("SELECT reason FROM rejected_messages")
    assert reason == "invalid action: a fixtureSeqNum in a feed whose packets are keyed by position"


async def test_an_implausible_seq_is_rejected_and_cannot_become_the_resume_position(
    independent: IndependentFeed, store: Store, sql: asyncpg.Connection, recording: Recording
) -> None:
    huge = b'{"fixtureAction": {"actionId": "h", "fixtureSeqNum": 9223372036854775807}}'
    independent.after = {3: [(huge, False)]}
    independent.stall_at = 3  # and a reconnect right after it
    url = await independent.start()
    await run(url, store, recording.fixture_id, fast_options())
    assert independent.starts == [0, 3]
    assert await stored(sql, recording.fixture_id) == stream(recording)
    reason = await sql.fetchval("SELECT reason FROM rejected_messages")
    assert "more than 1,000,000 beyond the last (3): not believed" in reason


async def test_a_replayed_packet_saying_finished_does_not_end_the_fixture(
    independent: IndependentFeed, store: Store, sql: asyncpg.Connection, recording: Recording
) -> None:
    replay = json.loads(recording.lines[1])
    replay["finished"] = True
    independent.after = {5: [(json.dumps(replay).encode(), False)]}
    url = await independent.start()
    result = await run(url, store, recording.fixture_id, fast_options())
    assert result.fixtures[recording.fixture_id].finished
    assert await stored(sql, recording.fixture_id) == stream(recording)
    assert await sql.fetchval("SELECT finished FROM fixtures")
    # the differing replay is kept for inspection, as any conflict
    assert await sql.fetchval("SELECT seq FROM action_conflicts") == 2


async def test_junk_does_not_reset_the_reconnect_backoff(
    independent: IndependentFeed, store: Store, recording: Recording
) -> None:
    independent.junk_then_close = b"not json"
    url = await independent.start()
    production = RunOptions(until_finished=True, connect_rate=0, max_runtime=6.0)
    await run(url, store, recording.fixture_id, production)
    # backoff 0.5 s doubling with full jitter: about 5 attempts in 6 s; reset by junk, 25 or more
    assert 2 <= len(independent.starts) <= 10


async def test_junk_from_a_stuck_feed_does_not_keep_it_alive(
    independent: IndependentFeed, store: Store, sql: asyncpg.Connection, recording: Recording
) -> None:
    independent.stall_at = 4
    independent.trickle = b'{"fixtureAction": {"actionId": "junk"}}'  # rejected: numbered feed
    independent.trickle_every = LIVENESS / 4
    url = await independent.start()
    await run(url, store, recording.fixture_id, fast_options())
    assert independent.starts == [0, 4]
    assert independent.stalled_at is not None and independent.reconnected_at is not None
    assert independent.reconnected_at - independent.stalled_at < 2 * LIVENESS
    assert await stored(sql, recording.fixture_id) == stream(recording)


# -- a frame over the size limit ---------------------------------------------------------------


async def test_a_frame_over_the_limit_blocks_its_fixture_visibly_without_a_hot_loop(
    independent: IndependentFeed, store: Store, sql: asyncpg.Connection, recording: Recording
) -> None:
    size = MAX_FRAME_BYTES + 1
    independent.after = {4: [(b"x" * size, False)]}
    independent.finished = False
    url = await independent.start()
    metrics = Metrics()
    opts = fast_options(until_finished=False, backoff_max=30.0, state_interval=0.05)
    async with feed_session() as session:
        source = FeedSource(session, url, Secret(TOKEN), liveness_timeout=LIVENESS)
        worker = Worker(source, store, opts, metrics)
        task = asyncio.create_task(worker.run([recording.fixture_id]))

        async def blocked_in_the_registry() -> bool:
            row = await sql.fetchrow("SELECT state, last_error FROM fixtures")
            return row is not None and row["state"] == "blocked"

        await wait_until(blocked_in_the_registry, timeout=30)
        error = await sql.fetchval("SELECT last_error FROM fixtures")
        assert f"Message size {size}" in error and "67,108,864-byte limit" in error
        ready, why = worker.readiness()
        assert not ready and "blocked" in why  # /readyz says so ...
        assert worker.health() == (True, "ok")  # ... the watchdog does not: a restart won't help
        assert metrics.blocked._value.get() == 1
        assert independent.starts == [0]  # waiting the slowest backoff, not reconnecting
        worker.stop()
        await asyncio.wait_for(task, 10)
    assert [seq for seq, _ in await stored(sql, recording.fixture_id)] == [1, 2, 3, 4]
