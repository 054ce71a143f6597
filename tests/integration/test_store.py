"""The idempotent writer against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from ingest.db import engine
from ingest.db.store import Store
from ingest.errors import DatabaseUnavailable, IngestError
from ingest.feed.packet import Action, Rejected, classify, parse_action
from ingest.settings import RunOptions
from ingest.simulator.generator import MatchSpec, generate_match, to_jsonl
from ingest.worker.ports import SavedState, State
from ingest.worker.progress import FixtureStats
from ingest.worker.writer import Writer
from tests.conftest import wait_until

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def packet(seq: int, *, finished: bool = False, **extra: object) -> Action:
    body = {
        "traceId": "t",
        "finished": finished,
        "fixtureAction": {"fixtureSeqNum": seq, "actionId": str(uuid.uuid4()), **extra},
    }
    frame = classify(json.dumps(body).encode(), binary=False, position=seq, received_at=NOW)
    assert isinstance(frame, Action)
    return frame


async def test_a_batch_is_stored_once_however_often_it_is_written(
    store: Store, sql: asyncpg.Connection
) -> None:
    fixture = uuid.uuid4()
    batch = [(fixture, packet(i)) for i in range(1, 101)]
    first = await store.write(batch)
    again = await store.write(batch)
    assert first.inserted == {fixture: 100}
    assert again.inserted == {}
    assert await sql.fetchval("SELECT count(*) FROM actions WHERE fixture_id = $1", fixture) == 100
    assert await store.max_seq(fixture) == 100
    assert await sql.fetchval("SELECT count(*) FROM action_conflicts") == 0


async def test_resume_point_is_max_seq_and_zero_when_empty(store: Store) -> None:
    fixture = uuid.uuid4()
    assert await store.max_seq(fixture) == 0
    await store.write([(fixture, packet(3)), (fixture, packet(1))])
    assert await store.max_seq(fixture) == 3


async def test_payload_and_typed_columns_are_stored(store: Store, sql: asyncpg.Connection) -> None:
    fixture = uuid.uuid4()
    action_id = uuid.uuid4()
    text = json.dumps(
        {
            "finished": False,
            "unknownField": {"kept": True},
            "fixtureAction": {
                "fixtureSeqNum": 9,
                "actionId": str(action_id),
                "fixtureActionTypeId": 9,
                "fixtureActionType": "Ball Potted",
                "fixtureActionSubTypeId": 7,
                "fixtureActionSubType": "Black",
                "sendTypeId": 1,
                "sendType": "Pending",
                "period": 3,
                "timestamp": "2026-11-24T13:00:05.123456Z",
                "team": {"id": str(uuid.uuid4()), "name": "A"},
                "player": {"id": "not-a-uuid", "name": "A"},
            },
        }
    )
    frame = classify(text.encode(), binary=False, position=1, received_at=NOW)
    assert isinstance(frame, Action)
    await store.write([(fixture, frame)])
    row = await sql.fetchrow("SELECT * FROM actions WHERE fixture_id = $1", fixture)
    assert row["seq"] == 9
    assert json.loads(row["payload"]) == json.loads(text)
    assert row["action_id"] == action_id
    assert (row["action_type_id"], row["action_type"]) == (9, "Ball Potted")
    assert (row["action_subtype_id"], row["action_subtype"]) == (7, "Black")
    assert (row["send_type_id"], row["send_type"], row["period"]) == (1, "Pending", 3)
    assert row["provider_ts"] == datetime(2026, 11, 24, 13, 0, 5, 123456, tzinfo=UTC)
    assert row["player_id"] is None  # a malformed optional field is NULL, the packet is kept
    assert row["received_at"] == NOW


async def test_a_packet_is_stored_alike_alone_in_a_batch_and_copied(
    store: Store, sql: asyncpg.Connection
) -> None:
    """Three ways to the table: a one-packet batch goes as one row of scalars, a small batch as
    arrays, a large one by COPY (then its progress by a statement of its own). Same rows."""
    lines = to_jsonl(generate_match(MatchSpec(seed=7, best_of=3)).packets).splitlines()[:100]
    frames = [classify(line.encode(), binary=False, position=i, received_at=NOW)
              for i, line in enumerate(lines, 1)]  # fmt: skip
    actions = [f for f in frames if isinstance(f, Action)]
    assert len(actions) == 100 >= store.copy_at
    alone, batched, copied = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for action in actions:
        await store.write([(alone, action)])
    for start in range(0, 100, store.copy_at - 1):
        await store.write([(batched, a) for a in actions[start : start + store.copy_at - 1]])
    result = await store.write([(copied, a) for a in actions])
    assert result.inserted == {copied: 100}
    query = "SELECT * FROM actions WHERE fixture_id = $1 ORDER BY seq"

    def columns(row: asyncpg.Record) -> dict[str, object]:
        return {k: v for k, v in row.items() if k not in ("fixture_id", "stored_at")}

    stored = {f: [columns(r) for r in await sql.fetch(query, f)] for f in (alone, batched, copied)}
    assert len(stored[alone]) == 100
    assert stored[alone] == stored[batched] == stored[copied]
    assert {r["side"] for r in stored[copied]} >= {"home", "away"}  # sides were derived too
    progress = {r.fixture_id: (r.last_seq, r.packets) for r in await store.fixtures()}
    assert progress[alone] == progress[batched] == progress[copied] == (100, 100)


async def test_a_copied_batch_notifies_per_fixture(store: Store, sql: asyncpg.Connection) -> None:
    heard: list[dict[str, object]] = []
    await sql.add_listener("ingest_actions", lambda *a: heard.append(json.loads(a[3])))

    async def both_heard() -> bool:
        return len(heard) == 2

    one, two = uuid.uuid4(), uuid.uuid4()
    batch = [(one, packet(i)) for i in range(1, 81)] + [(two, packet(i)) for i in range(1, 11)]
    batch.append((two, packet(11, finished=True)))
    assert (await store.write(batch)).inserted == {one: 80, two: 11}
    await wait_until(both_heard)
    assert sorted(heard, key=lambda n: n["inserted"]) == [  # type: ignore[arg-type,return-value]
        {"fixture_id": str(two), "max_seq": 11, "inserted": 11, "finished": True},
        {"fixture_id": str(one), "max_seq": 80, "inserted": 80, "finished": False},
    ]
    [row] = await store.fixtures([two])
    assert row.finished


async def test_a_large_batch_with_a_replay_stores_the_rest_and_records_the_conflict(
    store: Store, sql: asyncpg.Connection
) -> None:
    """COPY cannot skip a stored packet: the batch falls back to the statement, which can."""
    fixture = uuid.uuid4()

    def same(seq: int, period: int = 1) -> Action:  # the same packet each time it is made
        return packet(seq, period=period, actionId=str(uuid.UUID(int=seq)))

    await store.write([(fixture, same(i)) for i in range(1, 6)])
    batch = [(fixture, same(i)) for i in range(1, 200)]
    batch[2] = (fixture, same(3, period=2))  # a replay that differs
    result = await store.write(batch)
    assert result.inserted == {fixture: 194}
    assert result.conflicts == [(fixture, 3)]
    assert await sql.fetchval("SELECT count(*) FROM actions WHERE fixture_id = $1", fixture) == 199
    [row] = await store.fixtures([fixture])
    assert (row.last_seq, row.packets) == (199, 199)


async def test_a_large_batch_with_a_packet_jsonb_cannot_hold_stores_the_rest(
    store: Store, sql: asyncpg.Connection
) -> None:
    fixture = uuid.uuid4()
    raw = b'{"fixtureAction": {"fixtureSeqNum": 50, "note": "nul \\u0000 byte"}}'
    bad = parse_action(json.loads(raw), raw.decode(), position=50, received_at=NOW)
    batch = [(fixture, bad if i == 50 else packet(i)) for i in range(1, 101)]
    result = await store.write(batch)
    assert result.inserted == {fixture: 99} and result.unstorable == {fixture: 1}
    assert await sql.fetchval("SELECT count(*) FROM actions WHERE fixture_id = $1", fixture) == 99
    assert await sql.fetchval("SELECT count(*) FROM rejected_messages") == 1


async def test_the_stores_sessions_do_not_jit_compile(store: Store) -> None:
    """With JIT on, PostgreSQL compiled a one-fixture match_results lookup: 0.9 s, not 4 ms."""
    rows = await store.database.fetch("reading a setting", "SHOW jit")
    assert rows[0][0] == "off"


async def test_a_replayed_seq_with_another_payload_is_a_recorded_conflict(
    store: Store, sql: asyncpg.Connection
) -> None:
    fixture = uuid.uuid4()
    original = packet(5, period=1)
    await store.write([(fixture, original)])
    result = await store.write([(fixture, packet(5, period=2))])
    assert result.conflicts == [(fixture, 5)]
    stored = json.loads(await sql.fetchval("SELECT payload FROM actions WHERE seq = 5"))
    assert stored["fixtureAction"]["period"] == 1  # the stored row is kept
    newcomer = json.loads(await sql.fetchval("SELECT payload FROM action_conflicts"))
    assert newcomer["fixtureAction"]["period"] == 2


async def test_a_one_packet_batch_says_what_it_did(store: Store, sql: asyncpg.Connection) -> None:
    """The live feed's usual batch (its own statement, answering in scalars): inserted once,
    then absorbed, then a differing replay recorded; the fixture's progress counts it once."""
    fixture = uuid.uuid4()
    one = packet(1, period=1)
    first = await store.write([(fixture, one)])
    again = await store.write([(fixture, one)])
    differing = await store.write([(fixture, packet(1, period=2))])
    assert (first.inserted, first.conflicts) == ({fixture: 1}, [])
    assert (again.inserted, again.conflicts) == ({}, [])
    assert (differing.inserted, differing.conflicts) == ({}, [(fixture, 1)])
    assert first.server is not None and first.server == again.server == differing.server
    row = await sql.fetchrow(
        "SELECT packets, last_seq FROM fixtures WHERE fixture_id = $1", fixture
    )
    assert (row["packets"], row["last_seq"]) == (1, 1)
    assert await sql.fetchval("SELECT count(*) FROM action_conflicts") == 1


async def test_the_same_seq_twice_in_one_batch_is_absorbed(
    store: Store, sql: asyncpg.Connection
) -> None:
    fixture = uuid.uuid4()
    p = packet(1)
    result = await store.write([(fixture, p), (fixture, p), (fixture, packet(2))])
    assert result.inserted == {fixture: 2}
    assert await sql.fetchval("SELECT count(*) FROM actions") == 2


async def test_a_packet_jsonb_cannot_hold_is_rejected_and_the_rest_stored(
    store: Store, sql: asyncpg.Connection
) -> None:
    fixture = uuid.uuid4()
    raw = b'{"fixtureAction": {"fixtureSeqNum": 2, "note": "nul \\u0000 byte"}}'
    # classify turns it away already; the store is the backstop for what classify lets through
    assert isinstance(classify(raw, binary=False, position=2, received_at=NOW), Rejected)
    bad = parse_action(json.loads(raw), raw.decode(), position=2, received_at=NOW)
    result = await store.write([(fixture, packet(1)), (fixture, bad), (fixture, packet(3))])
    assert result.inserted == {fixture: 2}
    assert result.rejected == 1 and result.unstorable == {fixture: 1}
    assert [r["seq"] for r in await sql.fetch("SELECT seq FROM actions ORDER BY seq")] == [1, 3]
    row = await sql.fetchrow("SELECT raw, reason FROM rejected_messages")
    assert row["raw"] == raw
    assert "seq 2" in row["reason"]


async def test_rejected_frames_keep_their_raw_bytes(store: Store, sql: asyncpg.Connection) -> None:
    fixture = uuid.uuid4()
    frames = [b"\xff\xfe not utf-8", b"[1, 2, 3]", b"{truncated"]
    rejected = [classify(f, binary=False, position=1, received_at=NOW) for f in frames]
    assert all(isinstance(r, Rejected) for r in rejected)
    await store.write([], [(fixture, r) for r in rejected if isinstance(r, Rejected)])
    rows = await sql.fetch("SELECT raw, reason FROM rejected_messages ORDER BY id")
    assert [bytes(r["raw"]) for r in rows] == frames
    assert [r["reason"].split(" ")[0] for r in rows] == ["invalid", "not", "invalid"]


async def test_fixture_progress_follows_the_writes(store: Store) -> None:
    fixture = uuid.uuid4()
    await store.write([(fixture, packet(i)) for i in range(1, 4)])
    await store.write([(fixture, packet(4, finished=True))])
    [row] = await store.fixtures([fixture])
    assert (row.last_seq, row.packets, row.finished, row.enabled) == (4, 4, True, True)


async def test_registry_add_disable_and_runnable(store: Store) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    await store.register([a, b])
    assert set(await store.runnable_fixtures()) == {a, b}
    assert await store.set_enabled(a, False)
    assert await store.runnable_fixtures() == [b]
    assert not await store.set_enabled(uuid.uuid4(), False)
    await store.register([a], enable=True)
    assert set(await store.runnable_fixtures()) == {a, b}


async def test_integrity_reports_gaps_conflicts_and_rejections(store: Store) -> None:
    clean, holed = uuid.uuid4(), uuid.uuid4()
    await store.write([(clean, packet(i)) for i in (1, 2, 3)])
    await store.write([(holed, packet(i)) for i in (1, 2, 5, 9)])
    await store.write([(holed, packet(2, period=7))])
    bad = classify(b"[]", binary=False, position=1, received_at=NOW)
    assert isinstance(bad, Rejected)
    await store.write([], [(holed, bad)])
    report = {row["fixture_id"]: row for row in await store.integrity()}
    assert report[clean]["gaps"] == [] and report[clean]["conflicts"] == 0
    assert report[holed]["gaps"] == ["3-4", "6-8"]
    assert report[holed]["conflicts"] == 1
    assert report[holed]["rejected"] == 1


async def test_side_comes_from_the_lineups_even_across_restarts(
    database_url: str, sql: asyncpg.Connection
) -> None:
    fixture, home, away = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    lineups = packet(
        3,
        fixtureActionTypeId=3,
        metadata={"home": {"teamId": str(home)}, "away": {"teamId": str(away)}},
    )
    early = packet(2, team={"id": str(home)})  # before the Lineups: the side is not known yet
    first = Store.connect(database_url)
    try:
        await first.write(
            [(fixture, early), (fixture, lineups), (fixture, packet(4, team={"id": str(away)}))]
        )
    finally:
        await first.close()
    second = Store.connect(database_url)  # a new process: the Lineups come from the table
    try:
        await second.write([(fixture, packet(5, team={"id": str(home)}))])
    finally:
        await second.close()
    rows = await sql.fetch("SELECT seq, side FROM actions ORDER BY seq")
    assert [(r["seq"], r["side"]) for r in rows] == [(2, None), (3, None), (4, "away"), (5, "home")]


async def test_a_cancelled_lineups_gives_way_to_the_one_before_as_in_the_views(
    database_url: str, sql: asyncpg.Connection
) -> None:
    """The store's side follows the fixture_lineups view's rule: a Lineups whose latest packet is
    Cancelled (or Deleted) does not count, so the one before it is in effect again; in the same
    batch, and in a new process reading what is stored."""
    fixture, one, two = uuid.uuid4(), str(uuid.uuid4()), str(uuid.uuid4())

    def lineups(seq: int, home: str, away: str, action_id: str, send: int = 5) -> Action:
        return packet(
            seq,
            fixtureActionTypeId=3,
            sendTypeId=send,
            actionId=action_id,
            metadata={"home": {"teamId": home}, "away": {"teamId": away}},
        )

    first_id, swapped_id = str(uuid.uuid4()), str(uuid.uuid4())
    batch = [
        lineups(1, one, two, first_id),
        lineups(2, two, one, swapped_id),  # sides swapped ...
        packet(3, team={"id": one}),  # ... so team one is away
        lineups(4, two, one, swapped_id, send=3),  # the swap Cancelled: team one is home again
        packet(5, team={"id": one}),
    ]
    store = Store.connect(database_url)
    try:
        await store.write([(fixture, a) for a in batch])
    finally:
        await store.close()
    store = Store.connect(database_url)  # a new process: the Lineups come from the table
    try:
        await store.write([(fixture, packet(6, team={"id": two}))])
    finally:
        await store.close()
    rows = await sql.fetch("SELECT seq, side FROM actions WHERE team_id IS NOT NULL ORDER BY seq")
    assert [(r["seq"], r["side"]) for r in rows] == [(3, "away"), (5, "home"), (6, "away")]
    view = await sql.fetchrow(
        "SELECT home_team_id::text, away_team_id::text FROM fixture_lineups WHERE fixture_id = $1",
        fixture,
    )
    assert tuple(view) == (one, two)  # the view agrees


@pytest.mark.parametrize("batches", ["one batch", "a new process per packet"])
async def test_the_lineups_in_effect_are_the_views_for_every_kind_of_lineups_action(
    database_url: str, sql: asyncpg.Connection, batches: str
) -> None:
    """The home/away rule (ingest.feed.vocabulary.Lineups) is the fixture_lineups view's: a
    Lineups action counts in its latest packet, so one Updated to another type gives way to the
    one before; a Lineups packet without an actionId is an action of its own."""
    fixture, one, two = uuid.uuid4(), str(uuid.uuid4()), str(uuid.uuid4())
    first_id, swap_id = str(uuid.uuid4()), str(uuid.uuid4())

    def lineups(seq: int, home: str, away: str, action_id: str | None, **extra: object) -> Action:
        teams = {"home": {"teamId": home}, "away": {"teamId": away}}
        fields = {"fixtureActionTypeId": 3, "sendTypeId": 5, "metadata": teams, **extra}
        return packet(seq, actionId=action_id, **fields)

    written = [
        lineups(1, one, two, first_id),
        lineups(2, two, one, swap_id),  # swapped: team one is away
        packet(3, team={"id": one}),
        lineups(4, two, one, swap_id, fixtureActionTypeId=7, sendTypeId=2),  # no longer Lineups
        packet(5, team={"id": one}),  # the first Lineups again: team one is home
        lineups(6, two, one, None),  # no actionId: its own action, in effect
        packet(7, team={"id": one}),
    ]
    groups = [written] if batches == "one batch" else [[a] for a in written]
    for group in groups:
        store = Store.connect(database_url)
        try:
            await store.write([(fixture, a) for a in group])
        finally:
            await store.close()
    rows = await sql.fetch("SELECT seq, side FROM actions WHERE team_id IS NOT NULL ORDER BY seq")
    assert [(r["seq"], r["side"]) for r in rows] == [(3, "away"), (5, "home"), (7, "away")]
    view = await sql.fetchrow(
        "SELECT home_team_id::text, away_team_id::text, seq FROM fixture_lineups "
        "WHERE fixture_id = $1",
        fixture,
    )
    assert tuple(view) == (two, one, 6)  # the view agrees


async def test_a_differing_replay_is_recorded_once(store: Store, sql: asyncpg.Connection) -> None:
    fixture = uuid.uuid4()
    await store.write([(fixture, packet(5, period=1))])
    other = packet(5, period=2)
    first = await store.write([(fixture, other)])
    again = await store.write([(fixture, other)])
    assert first.conflicts == [(fixture, 5)] and again.conflicts == []
    assert await sql.fetchval("SELECT count(*) FROM action_conflicts") == 1


async def test_registering_the_same_fixture_twice_in_one_call(store: Store) -> None:
    fixture = uuid.uuid4()
    await store.register([fixture, fixture], enable=True)
    assert [row.fixture_id for row in await store.fixtures([fixture])] == [fixture]


async def test_batches_share_one_kept_connection_and_a_lost_one_is_replaced(
    database_url: str, sql: asyncpg.Connection
) -> None:
    """The write path keeps its connection between batches (no pool round per batch), and a
    connection the server dropped is replaced, not reused; close() leaves none behind."""
    ours = (
        "SELECT array_agg(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'snooker-ingest'"
    )
    store = Store.connect(database_url)
    fixture = uuid.uuid4()
    try:
        for seq in range(1, 21):
            await store.write([(fixture, packet(seq))])
        pids = await sql.fetchval(ours)
        assert len(pids) == 1  # twenty batches, one connection

        await sql.execute("SELECT pg_terminate_backend($1)", pids[0])
        try:
            await store.write([(fixture, packet(21))])
        except DatabaseUnavailable:  # noticed mid-statement: the worker retries this
            await store.write([(fixture, packet(21))])
        await store.write([(fixture, packet(22))])
        assert await store.max_seq(fixture) == 22
        assert (
            await sql.fetchval("SELECT count(*) FROM actions WHERE fixture_id = $1", fixture) == 22
        )
        assert pids[0] not in (await sql.fetchval(ours) or [])
    finally:
        await store.close()

    async def none_left() -> bool:
        return await sql.fetchval(ours) is None

    await wait_until(none_left, timeout=10)


async def test_a_failed_lineups_read_leaves_no_fixture_half_known(
    store: Store, sql: asyncpg.Connection
) -> None:
    # found by `make soak`: the Lineups read failing mid-batch (a database crash) left the
    # fixture known without sides, and every later batch of it raised KeyError in the writer
    fixture, home = uuid.uuid4(), uuid.uuid4()
    await sql.execute("ALTER TABLE actions RENAME TO actions_away")
    try:
        await store.write([(fixture, packet(1, team={"id": str(home)}))])
    except IngestError:
        pass  # the read failed, as it would with the database gone
    else:
        raise AssertionError("the write should have failed without its table")
    finally:
        await sql.execute("ALTER TABLE actions_away RENAME TO actions")
    result = await store.write([(fixture, packet(1, team={"id": str(home)}))])
    assert result.inserted == {fixture: 1}


async def test_saving_states_locks_fixtures_in_the_write_paths_order(
    store: Store, sql: asyncpg.Connection
) -> None:
    """The write path locks fixtures rows in fixture_id order; a statement that locked them in
    another order deadlocked with it (seen at 1,000 live fixtures). Here the higher row is held
    elsewhere: the state saver must wait for it holding the lower one, never the other way."""
    low, high = sorted([uuid.uuid4(), uuid.uuid4()])
    await store.register([high])  # stored (and scanned) before the lower one
    await store.register([low])
    since = datetime.now(UTC)
    states = [SavedState(f, State.CONNECTED, since, 1, None) for f in (high, low)]  # input order
    async with sql.transaction():
        await sql.execute("SELECT 1 FROM fixtures WHERE fixture_id = $1 FOR UPDATE", high)
        saving = asyncio.create_task(store.save_states(states))
        other = await asyncpg.connect(store.target.dsn, server_settings={"lock_timeout": "100ms"})
        try:

            async def low_is_held() -> bool:
                try:
                    async with other.transaction():
                        await other.execute(
                            "SELECT 1 FROM fixtures WHERE fixture_id = $1 FOR UPDATE", low
                        )
                    return False
                except asyncpg.LockNotAvailableError:
                    return True

            await wait_until(low_is_held, timeout=10)
            assert not saving.done()
        finally:
            await other.close()
    await saving
    assert {r.state for r in await store.fixtures([low, high])} == {"connected"}


async def test_a_batch_retried_with_its_token_stores_and_counts_its_rejected_frames_once(
    store: Store, sql: asyncpg.Connection
) -> None:
    fixture, other = uuid.uuid4(), uuid.uuid4()
    junk = Rejected.of(b"{not json", "invalid JSON", NOW)
    batch, rejected = uuid.uuid4(), [(fixture, junk), (other, junk)]
    for _ in range(3):  # the same batch again: its commit's reply lost, say
        result = await store.write(
            [(fixture, packet(1))], rejected, unstored={fixture: 7}, batch=batch
        )
    assert result.rejected == 0  # the retry stored nothing more
    counted = "SELECT fixture_id, rejected_unstored FROM fixtures ORDER BY rejected_unstored"
    assert {r[0]: r[1] for r in await sql.fetch(counted)} == {other: 0, fixture: 7}
    assert await sql.fetchval("SELECT count(*) FROM rejected_messages") == 2
    await store.write([], [(other, junk)], unstored={fixture: 2, other: 1}, batch=uuid.uuid4())
    assert {r[0]: r[1] for r in await sql.fetch(counted)} == {other: 1, fixture: 9}
    assert await sql.fetchval("SELECT count(*) FROM rejected_messages") == 3


class _ReplyLost:
    """The store, but the first write's reply is lost after its commit (the connection drops
    between the COMMIT and its answer): the writer cannot tell, and retries the batch."""

    def __init__(self, store: Store) -> None:
        self.store, self.lost = store, 0

    async def write(self, *args: Any, **kwargs: Any) -> Any:
        result = await self.store.write(*args, **kwargs)
        if not self.lost:
            self.lost += 1
            raise DatabaseUnavailable("connection lost waiting for the reply to COMMIT")
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


async def test_frames_over_the_rate_are_counted_once_though_the_commits_reply_was_lost(
    store: Store, sql: asyncpg.Connection
) -> None:
    fixture = uuid.uuid4()
    stats = {fixture: FixtureStats()}
    sink = _ReplyLost(store)
    writer = Writer(sink, stats, RunOptions(backoff_initial=0.01))  # type: ignore[arg-type]
    task = asyncio.create_task(writer.run())
    await writer.put(fixture, Rejected.of(b"[1]", "not an object", NOW))
    for _ in range(5):
        await writer.count_unstored(fixture)
    await writer.put(fixture, packet(1))
    await writer.barrier()
    await writer.close()
    await task
    assert sink.lost == 1  # the batch was written twice
    row = await sql.fetchrow("SELECT rejected_unstored, packets FROM fixtures")
    assert tuple(row) == (5, 1)
    assert await sql.fetchval("SELECT count(*) FROM rejected_messages") == 1
    assert stats[fixture].rejected_unstored == 5 and stats[fixture].rejected == 1


BACKEND = "SELECT pg_backend_pid()"


async def test_the_betting_renewal_keeps_its_connection_between_seconds(
    store: Store, sql: asyncpg.Connection
) -> None:
    db = store.database
    first = (await db.fetch_kept("renewing", BACKEND))[0][0]
    assert (await db.fetch_kept("renewing", BACKEND))[0][0] == first  # no checkout, no reset
    assert (await db.fetch("reading", BACKEND))[0][0] != first  # the pool's others are free
    # a reset would have run on a release: the kept session never went back to the pool
    query = await sql.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", first)
    assert query == BACKEND
    # two at once: each has a connection, and one is kept afterwards (the other goes back)
    pids = await asyncio.gather(*(db.fetch_kept("renewing", BACKEND) for _ in range(2)))
    assert len({p[0][0] for p in pids}) == 2
    started = asyncio.get_running_loop().time()
    await store.close()  # the kept one is given back first: the pool's close does not wait
    assert asyncio.get_running_loop().time() - started < 2


async def test_a_kept_connection_the_server_dropped_fails_once_then_is_replaced(
    store: Store, sql: asyncpg.Connection
) -> None:
    db = store.database
    first = (await db.fetch_kept("renewing", BACKEND))[0][0]
    assert await sql.fetchval("SELECT pg_terminate_backend($1)", first)

    async def gone() -> bool:
        return not await sql.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", first)

    await wait_until(gone, timeout=5)
    try:
        again = (await db.fetch_kept("renewing", BACKEND))[0][0]
    except DatabaseUnavailable:  # the dead connection, found out by its first statement
        again = (await db.fetch_kept("renewing", BACKEND))[0][0]
    assert again != first
    assert (await db.fetch_kept("renewing", BACKEND))[0][0] == again


async def test_the_renewal_keeps_no_connection_the_pool_cannot_spare(database_url: str) -> None:
    # --pool-size 1: at most 3 connections; two held (as two writers hold theirs)
    store = Store.connect(database_url, pool_size=1)
    db = store.database
    held = [await db.acquire(), await db.acquire()]
    try:
        await db.fetch_kept("renewing", BACKEND)  # the last one: used, then given back ...
        rows = await asyncio.wait_for(db.fetch("reading", "SELECT 1"), 5)  # ... for the others
        assert rows[0][0] == 1
    finally:
        for conn in held:
            await db.release(conn)
        await store.close()


async def test_a_kept_connection_too_old_is_replaced_not_handed_out_again(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = store.database
    first = (await db.fetch_kept("renewing", BACKEND))[0][0]
    monkeypatch.setattr(engine, "RECYCLE", 0.0)  # every kept connection is now too old
    # closed for good: a released one would come straight back from the pool's idle ones,
    # still on the server it was opened to (after a failover, the old one)
    assert (await db.fetch_kept("renewing", BACKEND))[0][0] != first


async def test_a_start_registers_and_reads_its_fixtures_without_a_type_lookup(
    store: Store, sql: asyncpg.Connection
) -> None:
    # what a start waits on before its first feed connection, on a new connection: asyncpg
    # looks up an array type other than text[] on its first use (7 ms on a new backend)
    db = store.database
    conn = await db.acquire()
    queries: list[str] = []
    conn.add_query_logger(lambda record: queries.append(record.query))
    await db.release(conn)  # the pool hands this one out next (its idle ones, last in first)
    fixtures = [uuid.uuid4(), uuid.uuid4()]
    assert await store.register([*fixtures, fixtures[0]]) == 2
    assert await store.register(fixtures) == 0
    rows = await store.fixtures([fixtures[1]])
    assert [row.fixture_id for row in rows] == [fixtures[1]]
    assert await sql.fetchval("SELECT count(*) FROM fixtures") == 2
    # on the connection watched: the two statements (twice the first) and the pool's resets,
    # nothing else (asyncpg's type lookup would be a query of its own)
    ours = ("INSERT INTO fixtures", "SELECT fixture_id, enabled", "SELECT pg_advisory_unlock_all")
    assert [q for q in queries if not q.startswith(ours)] == []
    assert sum(q.startswith(ours[:2]) for q in queries) == 3


@pytest.mark.parametrize("wait", [0.0, 1.0])
async def test_a_lone_packet_waits_for_company_only_under_batch_wait(
    store: Store, sql: asyncpg.Connection, wait: float
) -> None:
    """--batch-wait: the writer holds a lone packet that long, and what arrives meanwhile shares
    its transaction; without it the lone packet is written at once, alone."""
    first, second = uuid.uuid4(), uuid.uuid4()
    stats = {first: FixtureStats(), second: FixtureStats()}
    writer = Writer(store, stats, RunOptions(batch_wait=wait))
    task = asyncio.create_task(writer.run())
    assert writer.offer(first, packet(1))

    async def taken() -> bool:
        return writer.pending == 0

    await wait_until(taken, timeout=5, interval=0)  # the writer has the lone packet ...
    assert writer.offer(second, packet(1))  # ... when another fixture's arrives
    await writer.barrier()
    await writer.close()
    await task
    rows = await sql.fetch("SELECT fixture_id, xmin::text AS tx FROM actions")
    assert {r["fixture_id"] for r in rows} == {first, second}  # both stored, whatever the wait
    assert len({r["tx"] for r in rows}) == (1 if wait else 2)


async def test_a_stop_does_not_lose_the_packet_held_by_batch_wait(
    store: Store, sql: asyncpg.Connection
) -> None:
    fixture = uuid.uuid4()
    writer = Writer(store, {fixture: FixtureStats()}, RunOptions(batch_wait=1.0))
    task = asyncio.create_task(writer.run())
    assert writer.offer(fixture, packet(1))

    async def held() -> bool:
        return writer.pending == 0

    await wait_until(held, timeout=5, interval=0)  # the writer took it alone: it is held
    await writer.close()  # while the packet is held
    async with asyncio.timeout(5):
        await task
    assert await sql.fetchval("SELECT count(*) FROM actions WHERE fixture_id = $1", fixture) == 1
