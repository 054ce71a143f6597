"""End to end in one process: simulator -> aiohttp client -> worker -> PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid

import aiohttp
import asyncpg
import pytest

from ingest.db.store import Store
from ingest.errors import AuthError
from ingest.feed.client import FeedSource, actions_url, feed_session
from ingest.settings import RunOptions, Secret
from ingest.simulator.generator import GeneratedMatch
from ingest.simulator.recording import Recording
from ingest.simulator.server import ACCEPT
from ingest.worker.progress import RunResult
from ingest.worker.supervisor import Worker
from tests.conftest import TOKEN, StartFeed, StartSimulator, wait_until


async def ingest(
    feed_url: str,
    store: Store,
    fixture_ids: list[uuid.UUID],
    *,
    token: str = TOKEN,
    speed: str | None = "fast",
    timeout: float = 30.0,
    **options: object,
) -> RunResult:
    run_options = RunOptions(
        until_finished=True,
        speed=speed,
        backoff_initial=0.01,
        connect_rate=0,
        auth_retry_delay=0.01,
    )
    for key, value in options.items():
        setattr(run_options, key, value)
    async with feed_session() as session:
        source = FeedSource(session, feed_url, Secret(token), liveness_timeout=5)
        worker = Worker(source, store, run_options)
        async with asyncio.timeout(timeout):
            return await worker.run(fixture_ids)


async def stored_rows(sql: asyncpg.Connection, fixture: uuid.UUID) -> list[tuple[int, object]]:
    rows = await sql.fetch(
        "SELECT seq, payload FROM actions WHERE fixture_id = $1 ORDER BY seq", fixture
    )
    return [(r["seq"], json.loads(r["payload"])) for r in rows]


def expected_rows(recording: Recording) -> list[tuple[int, object]]:
    return [(i, json.loads(line)) for i, line in enumerate(recording.lines, 1)]


async def test_a_full_match_is_stored_exactly_once(
    start_feed: StartFeed, store: Store, sql: asyncpg.Connection, recording: Recording
) -> None:
    feed = await start_feed([recording])
    result = await ingest(feed, store, [recording.fixture_id])
    assert result.all_finished
    assert await stored_rows(sql, recording.fixture_id) == expected_rows(recording)
    [row] = await store.fixtures([recording.fixture_id])
    assert row.finished and row.last_seq == len(recording.lines)


async def test_drops_mid_stream_resume_at_max_seq_without_gap_or_duplicate(
    start_feed: StartFeed, store: Store, sql: asyncpg.Connection, recording: Recording
) -> None:
    feed = await start_feed([recording], drop_after=37)
    result = await ingest(feed, store, [recording.fixture_id])
    stats = result.fixtures[recording.fixture_id]
    assert stats.connects == -(-len(recording.lines) // 37)  # one connection per 37 packets
    assert stats.duplicates == 0 and stats.gaps == 0
    assert await stored_rows(sql, recording.fixture_id) == expected_rows(recording)


async def test_a_one_based_feed_replays_the_last_packet_and_it_is_absorbed(
    start_feed: StartFeed, store: Store, sql: asyncpg.Connection, recording: Recording
) -> None:
    feed = await start_feed([recording], drop_after=50, one_based=True)
    result = await ingest(feed, store, [recording.fixture_id])
    stats = result.fixtures[recording.fixture_id]
    assert stats.connects > 2
    assert stats.duplicates == stats.connects - 1  # each reconnect re-sends the last stored one
    assert await stored_rows(sql, recording.fixture_id) == expected_rows(recording)


async def test_packets_delivered_twice_are_stored_once(
    start_feed: StartFeed, store: Store, sql: asyncpg.Connection, recording: Recording
) -> None:
    doubled = "\n".join(line for line in recording.lines for _ in range(2))
    feed = await start_feed([Recording.from_text(doubled, name="doubled")])
    result = await ingest(feed, store, [recording.fixture_id])
    stats = result.fixtures[recording.fixture_id]
    assert (stats.stored, stats.duplicates) == (len(recording.lines), len(recording.lines) - 1)
    assert await stored_rows(sql, recording.fixture_id) == expected_rows(recording)


async def test_a_rerun_after_losing_the_tail_refills_it(
    start_feed: StartFeed, store: Store, sql: asyncpg.Connection, recording: Recording
) -> None:
    feed = await start_feed([recording])
    await ingest(feed, store, [recording.fixture_id])
    half = len(recording.lines) // 2
    await sql.execute("DELETE FROM actions WHERE seq > $1", half)
    await sql.execute("UPDATE fixtures SET finished = false")
    result = await ingest(feed, store, [recording.fixture_id])
    assert result.fixtures[recording.fixture_id].stored == len(recording.lines) - half
    assert await stored_rows(sql, recording.fixture_id) == expected_rows(recording)


async def test_heartbeats_are_not_stored(
    start_simulator: StartSimulator, store: Store, sql: asyncpg.Connection, recording: Recording
) -> None:
    last = json.dumps({**json.loads(recording.lines[29]), "finished": True})
    short = Recording.from_text("\n".join((*recording.lines[:29], last)), name="short")
    # paced replay (30 packets over ~0.6 s) with a heartbeat every 20 ms
    seconds = (short.times[-1] or 0) - (short.times[0] or 0)
    sim = await start_simulator([short], heartbeat_interval=0.02, time_scale=seconds / 0.6)
    await ingest(sim.url, store, [short.fixture_id], speed="normal")
    assert sim.counters[short.fixture_id].heartbeats_sent >= 3  # they were sent, and ...
    rows = await stored_rows(sql, short.fixture_id)
    assert len(rows) == 30  # ... none of them is a row
    assert all("fixtureAction" in payload for _, payload in rows)  # type: ignore[operator]


async def test_malformed_frames_are_rejected_and_the_stream_goes_on(
    start_feed: StartFeed, store: Store, sql: asyncpg.Connection, recording: Recording
) -> None:
    lines = list(recording.lines)
    lines.insert(10, "{this is not json")
    lines.insert(20, "[1, 2, 3]")
    feed = await start_feed([Recording.from_text("\n".join(lines), name="with-garbage")])
    result = await ingest(feed, store, [recording.fixture_id])
    assert result.fixtures[recording.fixture_id].rejected == 2
    rejected = await sql.fetch("SELECT raw, reason FROM rejected_messages ORDER BY id")
    assert [bytes(r["raw"]) for r in rejected] == [b"{this is not json", b"[1, 2, 3]"]
    assert "invalid JSON" in rejected[0]["reason"]
    assert "array" in rejected[1]["reason"]
    assert await stored_rows(sql, recording.fixture_id) == expected_rows(recording)


async def test_a_bad_token_is_refused(
    start_feed: StartFeed, store: Store, sql: asyncpg.Connection, recording: Recording
) -> None:
    feed = await start_feed([recording])
    with pytest.raises(AuthError) as caught:
        await ingest(feed, store, [recording.fixture_id], token="wrong-token")
    assert "wrong-token" not in str(caught.value)
    assert await sql.fetchval("SELECT count(*) FROM actions") == 0


async def test_the_simulator_answers_400_without_the_accept_header(
    start_feed: StartFeed, recording: Recording
) -> None:
    feed = await start_feed([recording])
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await session.ws_connect(actions_url(feed, recording.fixture_id))
        assert caught.value.status == 400
        url = actions_url(feed, recording.fixture_id).replace("ws://", "http://")
        async with session.get(url, headers={"Accept": "application/json"}) as response:
            assert response.status == 400
            assert "Accept" in await response.text()
        async with session.ws_connect(
            actions_url(feed, recording.fixture_id), headers={"Accept": ACCEPT}
        ) as ws:
            await ws.send_str(json.dumps({"authToken": TOKEN}))
            first = await ws.receive_json(timeout=5)
            assert first == {"message": "Authorisation accepted", "level": "INFO"}


async def test_every_team_action_gets_its_side(
    start_feed: StartFeed,
    store: Store,
    sql: asyncpg.Connection,
    recording: Recording,
    match: GeneratedMatch,
) -> None:
    feed = await start_feed([recording], drop_after=25)
    await ingest(feed, store, [recording.fixture_id])
    home = uuid.UUID(match.truth["home"]["team_id"])
    rows = await sql.fetch("SELECT team_id, side FROM actions WHERE team_id IS NOT NULL")
    assert rows
    assert all(r["side"] == ("home" if r["team_id"] == home else "away") for r in rows)


async def test_listen_ingest_actions_gets_a_notification_per_committed_batch(
    start_feed: StartFeed, store: Store, sql: asyncpg.Connection, recording: Recording
) -> None:
    received: list[dict[str, object]] = []
    await sql.add_listener("ingest_actions", lambda *args: received.append(json.loads(args[3])))
    feed = await start_feed([recording], drop_after=40)
    await ingest(feed, store, [recording.fixture_id])

    async def last_one_arrived() -> bool:
        return any(n["max_seq"] == len(recording.lines) for n in received)

    await wait_until(last_one_arrived, timeout=5)
    assert {n["fixture_id"] for n in received} == {str(recording.fixture_id)}
    assert sum(int(n["inserted"]) for n in received) == len(recording.lines)  # type: ignore[call-overload]
    seqs = [n["max_seq"] for n in received]
    assert seqs == sorted(seqs)  # in commit order
    assert received[-1]["finished"] is True


async def test_a_one_based_feed_without_seq_numbers_stores_nothing_twice(
    start_feed: StartFeed, store: Store, sql: asyncpg.Connection, recording: Recording
) -> None:
    packets = [json.loads(line) for line in recording.lines[:40]]
    for packet in packets:
        del packet["fixtureAction"]["fixtureSeqNum"]  # seq is the position in the stream
    packets[-1]["finished"] = True
    text = "\n".join(json.dumps(p) for p in packets)
    unnumbered = Recording.from_text(text, name="no seq numbers")
    feed = await start_feed([unnumbered], drop_after=7, one_based=True)
    result = await ingest(feed, store, [unnumbered.fixture_id])
    stats = result.fixtures[unnumbered.fixture_id]
    assert stats.connects > 3 and stats.duplicates == stats.connects - 1
    assert await stored_rows(sql, unnumbered.fixture_id) == list(enumerate(packets, 1))


async def test_an_unknown_fixture_stops_alone(
    start_feed: StartFeed, store: Store, sql: asyncpg.Connection, recording: Recording
) -> None:
    feed = await start_feed([recording])
    unknown = uuid.UUID("00000000-0000-4000-8000-0000000000ff")
    result = await ingest(feed, store, [recording.fixture_id, unknown])
    assert result.fixtures[recording.fixture_id].finished
    assert result.fixtures[unknown].state == "not found"
    assert await stored_rows(sql, recording.fixture_id) == expected_rows(recording)
