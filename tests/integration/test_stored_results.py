"""Stored results (migration 0011) never change what a view shows.

Every view is held, row for row, to its original definition: the text of migrations 0003 and
0008, created here in a schema of its own (``ref``) over the same ``actions``, which derives
everything from the raw packets. On 60 generated matches with corrections (Pending, Cancelled,
Restored, Updated frame ends and breaks, Lineups swapped, drops, matches cut off in play), then
after late corrections to finished matches (single packets and a batch), after writes by hand
(UPDATE, DELETE, TRUNCATE, triggers off), and with two transactions writing one fixture at once.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import random
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from ingest.db.store import Store
from ingest.feed.packet import Action, classify
from ingest.feed.vocabulary import (
    BALL_POTTED,
    BREAK_ENDED,
    CANCELLED,
    CONFIRMED,
    FRAME_ENDED,
    PENDING,
    RESTORED,
    UPDATED,
)
from ingest.simulator.generator import MatchSpec, generate_match
from tests.conftest import plain, wait_until
from tests.integration.test_market_rules import again, corrupted, fa
from tests.integration.test_views import NOW

MATCHES = 60
VERSIONS = Path(__file__).resolve().parents[2] / "migrations" / "versions"
# every view that reads the packets; market_results reads settlement's own tables
VIEWS = (
    "fixture_lineups",
    "action_states",
    "frame_results",
    "breaks",
    "match_results",
    "player_match_stats",
    "summary_mismatches",
)
STORED = (
    "fixture_lineups",
    "frame_results",
    "breaks",
    "match_results",
    "player_match_stats",
    "summary_mismatches",
)
Packets = list[dict[str, Any]]


def _original_views() -> list[str]:
    """The CREATE VIEW statements of migrations 0003 and 0008, as those files hold them."""
    statements = []
    for name in ("0003_settlement_views.py", "0008_summary_mismatches.py"):
        spec = importlib.util.spec_from_file_location(f"m{name[:4]}", VERSIONS / name)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        statements += [s for s in module.UPGRADE if s.strip().startswith("CREATE VIEW")]
    assert len(statements) == len(VIEWS)
    return statements


async def reference(sql: asyncpg.Connection) -> None:
    """The original views in schema ``ref``: they read public.actions and public.fixtures, and
    each other (``ref`` comes first in the search path when they are created)."""
    await sql.execute("CREATE SCHEMA ref")
    await sql.execute("SET search_path = ref, public")
    for statement in _original_views():
        await sql.execute(statement)
    await sql.execute("RESET search_path")


async def differences(sql: asyncpg.Connection, views: tuple[str, ...] = VIEWS) -> dict[str, Any]:
    """Per view, the rows it shows that the original does not, and the other way round."""
    found = {}
    for view in views:
        extra = await sql.fetch(f"SELECT * FROM public.{view} EXCEPT ALL SELECT * FROM ref.{view}")
        missing = await sql.fetch(
            f"SELECT * FROM ref.{view} EXCEPT ALL SELECT * FROM public.{view}"
        )
        if extra or missing:
            found[view] = {"extra": extra[:3], "missing": missing[:3]}
    return found


async def stored_fixtures(sql: asyncpg.Connection) -> set[uuid.UUID]:
    rows = await sql.fetch("SELECT fixture_id FROM result_fixtures WHERE stored_at IS NOT NULL")
    return {r[0] for r in rows}


async def finished_fixtures(sql: asyncpg.Connection) -> set[uuid.UUID]:
    rows = await sql.fetch("SELECT DISTINCT fixture_id FROM actions WHERE finished")
    return {r[0] for r in rows}


def parse(packets: Packets, first: int = 1) -> list[Action]:
    actions = []
    for position, packet in enumerate(packets, first):
        frame = classify(orjson.dumps(packet), binary=False, position=position, received_at=NOW)
        assert isinstance(frame, Action)
        actions.append(frame)
    return actions


def late_corrections(packets: Packets, rng: random.Random) -> list[Packets]:
    """Corrections that arrive after the finished packet, in one to three later batches: a frame
    end Cancelled (maybe Restored in a later batch), a break's score Updated, a Pending frame
    end Confirmed, a break Cancelled. Each carries the finished flag and summary of the packet
    before it, as the feed's would."""
    last = packets[-1]
    ends = [p for p in packets if fa(p)["fixtureActionTypeId"] == FRAME_ENDED]
    breaks = [p for p in packets if fa(p)["fixtureActionTypeId"] == BREAK_ENDED]
    batches: list[Packets] = []
    if ends:
        end = rng.choice(ends)
        batches.append([again(end, CANCELLED)])
        if rng.random() < 0.5:
            batches.append([again(end, RESTORED)])
    if breaks:
        ended = rng.choice(breaks)
        meta = {**(fa(ended).get("metadata") or {}), "breakScore": rng.choice([100, 147, 3])}
        batches.append([again(ended, UPDATED, metadata=meta), again(rng.choice(breaks), CANCELLED)])
    pending = [p for p in ends if fa(p)["sendTypeId"] == PENDING]
    if pending:
        batches.append([again(pending[0], CONFIRMED)])
    seq = fa(last)["fixtureSeqNum"]
    for batch in batches:
        for packet in batch:
            seq += 1
            packet["finished"] = last["finished"]
            packet["fixtureSummary"] = copy.deepcopy(last.get("fixtureSummary"))
            fa(packet).update(fixtureSeqNum=seq, timelineSequence=float(seq))
    return batches


async def test_the_views_show_what_the_packets_derive(
    store: Store, sql: asyncpg.Connection
) -> None:
    await reference(sql)
    await sql.execute("SET jit = off")
    rng = random.Random(25)
    matches: dict[uuid.UUID, Packets] = {}
    batch: list[tuple[uuid.UUID, Action]] = []
    for seed in range(1, MATCHES + 1):
        fixture_id, packets = corrupted(seed)
        matches[fixture_id] = packets
        actions = parse(packets)
        # the worker's batches: many fixtures at once (COPY), and the last packet on its own
        batch += [(fixture_id, a) for a in actions[:-1]]
        if len(batch) >= 500:
            await store.write(batch)
            batch = []
        await store.write([(fixture_id, actions[-1])])
    await store.write(batch)
    # a frame end corrected after the match finished, from the generator itself
    spec = MatchSpec(seed=9001, best_of=5, frame_end_corrections=(2, 4))
    corrected = generate_match(spec)
    matches[corrected.fixture_id] = corrected.packets
    actions = parse(corrected.packets)
    await store.write([(corrected.fixture_id, a) for a in actions])

    finished = await finished_fixtures(sql)
    assert await stored_fixtures(sql) == finished
    assert 0 < len(finished) < len(matches)  # some are in play: computed live
    assert await differences(sql) == {}

    # late corrections to the finished matches: single packets, then a batch across fixtures
    lates = {f: late_corrections(matches[f], rng) for f in sorted(finished)}
    first = {f: len(matches[f]) + 1 for f in lates}
    lone = list(lates)[: len(lates) // 2]
    for fixture_id in lone:
        for packets in lates[fixture_id]:
            actions = parse(packets, first[fixture_id])
            first[fixture_id] += len(actions)
            for action in actions:
                await store.write([(fixture_id, action)])
    rest = [
        (f, a)
        for f in lates
        if f not in lone
        for a in parse([p for batch in lates[f] for p in batch], first[f])
    ]
    assert len(rest) >= store.copy_at  # by COPY
    await store.write(rest)
    assert sum(len(b) for f in lates for b in lates[f]) > 100
    assert await stored_fixtures(sql) == finished
    assert await differences(sql) == {}

    # the stored rows are the live derivation's, and a refresh of everything changes nothing
    for view in STORED:
        assert await sql.fetchval(
            f"SELECT count(*) FROM (SELECT * FROM stored_{view} EXCEPT ALL "
            f"SELECT l.* FROM live_{view} l JOIN result_fixtures r USING (fixture_id) "
            "WHERE r.stored_at IS NOT NULL) d"
        ) == 0  # fmt: skip
    assert await sql.fetchval("SELECT refresh_fixture_results()") == len(finished)
    assert await differences(sql) == {}


async def test_writes_by_hand_keep_the_views_right(store: Store, sql: asyncpg.Connection) -> None:
    await reference(sql)
    await sql.execute("SET jit = off")
    ids = []
    for seed in (3, 5, 8):
        match = generate_match(MatchSpec(seed=seed, best_of=3))
        await store.write([(match.fixture_id, a) for a in parse(match.packets)])
        ids.append(match.fixture_id)
    assert await stored_fixtures(sql) == set(ids)
    first, second, third = ids

    # an UPDATE of a stored fixture's packet: its break score
    await sql.execute(
        "UPDATE actions SET payload = jsonb_set(payload, '{fixtureAction,metadata,breakScore}', "
        "'120') WHERE fixture_id = $1 AND seq = (SELECT max(seq) FROM actions "
        "WHERE fixture_id = $1 AND action_type_id = $2)",
        first,
        BREAK_ENDED,
    )
    assert await differences(sql) == {}
    # a DELETE of a finished packet: no longer finished, computed live
    await sql.execute("DELETE FROM actions WHERE fixture_id = $1 AND finished", second)
    assert await stored_fixtures(sql) == {first, third}
    assert await differences(sql) == {}
    # every packet of a fixture deleted: it is gone from every view, as from the originals
    await sql.execute("DELETE FROM actions WHERE fixture_id = $1", third)
    assert (
        await sql.fetchval("SELECT count(*) FROM result_fixtures WHERE fixture_id = $1", third) == 0
    )
    assert await differences(sql) == {}

    # packets written with the triggers off (pg_restore --disable-triggers, a replica's apply)
    await sql.execute("SET session_replication_role = replica")
    await sql.execute(
        "UPDATE actions SET payload = jsonb_set(payload, '{fixtureAction,metadata,breakScore}', "
        "'7') WHERE fixture_id = $1 AND action_type_id = $2",
        first,
        BREAK_ENDED,
    )
    await sql.execute("RESET session_replication_role")
    assert "breaks" in await differences(sql)  # stale until refreshed, as the README says
    assert await sql.fetchval("SELECT refresh_fixture_results()") == 1
    assert await differences(sql) == {}

    await sql.execute("TRUNCATE actions")
    assert await sql.fetchval("SELECT count(*) FROM result_fixtures") == 0
    for view in STORED:
        assert await sql.fetchval(f"SELECT count(*) FROM stored_{view}") == 0
    assert await differences(sql) == {}


async def test_a_derivation_that_fails_never_refuses_a_batch(
    store: Store, sql: asyncpg.Connection
) -> None:
    """Three pots of 999,999,999 points overflow a frame's integer points: the packets are
    stored all the same, and the fixture is computed live, where the original views fail too."""
    await reference(sql)
    match = generate_match(MatchSpec(seed=4, best_of=1))
    packets = copy.deepcopy(match.packets)
    pots = [p for p in packets if fa(p)["fixtureActionTypeId"] == BALL_POTTED]
    side = fa(pots[0])["team"]["id"]
    for pot in [p for p in pots if fa(p)["team"]["id"] == side][:3]:
        fa(pot)["metadata"]["points"] = 999_999_999
    await store.write([(match.fixture_id, a) for a in parse(packets)])
    assert await sql.fetchval("SELECT count(*) FROM actions") == len(packets)
    assert await stored_fixtures(sql) == set()
    for schema in ("public", "ref"):
        with pytest.raises(asyncpg.NumericValueOutOfRangeError):
            await sql.fetch(f"SELECT * FROM {schema}.frame_results")


async def _hold(sql: asyncpg.Connection, fixture_id: uuid.UUID, after: int) -> list[int]:
    """Take a finished match's packets after ``after`` out of ``actions`` (kept in ``held``)."""
    await sql.execute(
        "CREATE TABLE held AS SELECT * FROM actions WHERE fixture_id = $1 AND seq > $2",
        fixture_id,
        after,
    )
    await sql.execute("DELETE FROM actions WHERE fixture_id = $1 AND seq > $2", fixture_id, after)
    return [r[0] for r in await sql.fetch("SELECT seq FROM held ORDER BY seq")]


@pytest.mark.parametrize("first", ["the finished packet", "a correction"])
async def test_two_transactions_writing_one_fixture(
    store: Store, sql: asyncpg.Connection, database_url: str, first: str
) -> None:
    """The finished packet and a correction of the same fixture, in two transactions at once,
    in either order: the later one waits for the earlier one, whose rows it then sees."""
    await reference(sql)
    match = generate_match(MatchSpec(seed=6, best_of=3))
    await store.write([(match.fixture_id, a) for a in parse(match.packets)])
    last = len(match.packets)
    ended = max(p for p in range(last) if fa(match.packets[p])["fixtureActionTypeId"] == 7)
    correction = again(match.packets[ended], CANCELLED)
    correction["finished"] = False
    fa(correction).update(fixtureSeqNum=last + 1)
    await store.write([(match.fixture_id, a) for a in parse([correction], last + 1)])
    finished_seq, correction_seq = last, last + 1
    await _hold(sql, match.fixture_id, last - 1)
    assert await stored_fixtures(sql) == set()

    insert = "INSERT INTO actions SELECT * FROM held WHERE seq = $1"
    order = [finished_seq, correction_seq]
    if first == "a correction":
        order.reverse()
    one = await asyncpg.connect(plain(database_url))
    two = await asyncpg.connect(plain(database_url))
    try:
        async with one.transaction():
            await one.execute(insert, order[0])
            waiting = asyncio.ensure_future(two.execute(insert, order[1]))
            await wait_until(  # it waits for the fixture's lock (not merely not yet run)
                lambda: sql.fetchval(
                    "SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()"
                ),
                timeout=10,
            )
            assert not waiting.done()
        await waiting
    finally:
        await one.close()
        await two.close()
    assert await stored_fixtures(sql) == {match.fixture_id}
    assert await differences(sql) == {}


async def test_a_repeatable_read_writer_stores_nothing(
    store: Store, sql: asyncpg.Connection
) -> None:
    """At REPEATABLE READ a refresh could miss what committed since the transaction began: it
    leaves the fixture to be computed live, which is always right."""
    await reference(sql)
    match = generate_match(MatchSpec(seed=2, best_of=1))
    await store.write([(match.fixture_id, a) for a in parse(match.packets)])
    await _hold(sql, match.fixture_id, len(match.packets) - 1)
    async with sql.transaction(isolation="repeatable_read"):
        await sql.execute("INSERT INTO actions SELECT * FROM held")
    assert await stored_fixtures(sql) == set()
    assert await differences(sql) == {}
    assert await sql.fetchval("SELECT refresh_fixture_results($1)", match.fixture_id)
    assert await differences(sql) == {}


async def test_each_stored_table_has_its_views_columns(sql: asyncpg.Connection) -> None:
    """stored_<view> (ingest.db.schema, held to the database by test_schema) has the columns of
    the view, names and types in order: the view is its rows and the live derivation's."""
    from ingest.db import schema

    columns = """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
        WHERE a.attrelid = CAST($1 AS regclass) AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
    """
    for view in STORED:
        table = schema.metadata.tables[f"stored_{view}"]
        assert [tuple(r) for r in await sql.fetch(columns, view)] == [
            tuple(r) for r in await sql.fetch(columns, f"stored_{view}")
        ]
        assert [c.name for c in table.columns] == [r[0] for r in await sql.fetch(columns, view)]
