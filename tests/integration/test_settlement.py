"""Settlement events against a real PostgreSQL: generated matches, corrections that flip decided
markets, a dropped match, and a settler that is settled in pieces or killed.

Every test compares the whole event log with the sequence the packets imply (built here from
the packets and the generator's truth, independently of ``ingest.settlement.markets``) and
``market_results`` with the truth.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import random
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest

from ingest.db.settlement import SettlementStore
from ingest.db.store import Store
from ingest.ops.metrics import SettlerMetrics
from ingest.settlement.settler import SettleOptions, Settler
from ingest.simulator.generator import SEND_TYPES, GeneratedMatch, MatchSpec, generate_match
from tests.conftest import wait_until
from tests.integration.test_summary import claim_an_extra_frame
from tests.integration.test_views import (
    BREAK_ENDED,
    CANCELLED,
    CONFIRMED,
    FRAME_ENDED,
    FRAME_STARTED,
    LINEUPS,
    PENDING,
    RESTORED,
    STATUS_UPDATED,
    UPDATED,
    write,
)

Ev = tuple[str, str, str | None, str | None, int]  # market, kind, outcome, certainty, seq
MATCH_MARKETS = ("century_in_match", "correct_score", "highest_break_side", "match_winner",
                 "maximum_in_match")  # fmt: skip


# -- building feeds ----------------------------------------------------------------------------


def fa(packet: dict[str, Any]) -> dict[str, Any]:
    return packet["fixtureAction"]  # type: ignore[no-any-return]


def renumber(packets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for seq, packet in enumerate(packets, 1):
        fa(packet).update(fixtureSeqNum=seq, timelineSequence=float(seq))
    return packets


def resend(packet: dict[str, Any], send: int, **changes: Any) -> dict[str, Any]:
    """A correction of ``packet``'s action: same actionId, new send type."""
    new = copy.deepcopy(packet)
    fa(new).update(changes, sendType=SEND_TYPES[send], sendTypeId=send)
    return new


def index_of(packets: Sequence[dict[str, Any]], type_id: int, period: int) -> int:
    return next(
        i
        for i, p in enumerate(packets)
        if fa(p)["fixtureActionTypeId"] == type_id and fa(p)["period"] == period
    )


def status_packet(after: dict[str, Any], status: str, *, finished: bool) -> dict[str, Any]:
    packet = copy.deepcopy(after)
    packet["finished"] = finished
    fa(packet).update(
        actionId=str(uuid.uuid4()),
        fixtureActionType="Status Updated",
        fixtureActionTypeId=STATUS_UPDATED,
        sendType="Confirmed",
        sendTypeId=CONFIRMED,
        relatedFixtureActionIds=[],
        metadata={"coverageLevel": 3, "collectionStatus": status},
    )
    fa(packet).pop("team", None)
    fa(packet).pop("player", None)
    packet["fixtureSummary"] = {**packet["fixtureSummary"], "collectionStatus": status,
                                "finished": finished}  # fmt: skip
    return packet


# -- what the packets imply --------------------------------------------------------------------


def implied(
    packets: Sequence[dict[str, Any]], truth: dict[str, Any], breaks: list[tuple[int, str]]
) -> list[Ev]:
    """The events of a match whose markets are each decided once, confirmed: a frame by its
    (first) Frame Ended, a century / maximum by the first such break, the rest by the end.
    ``breaks``: the effective (score, side) of every completed break, in order of play."""
    events: list[Ev] = []
    end = len(packets)
    for frame in truth["frames"]:
        seq = index_of(packets, FRAME_ENDED, frame["frame_number"]) + 1
        events.append((f"frame_winner:{frame['frame_number']}", "settle", frame["winner"],
                       "confirmed", seq))  # fmt: skip
    for market, least in (("century_in_match", 100), ("maximum_in_match", 147)):
        first = next(
            (
                i + 1
                for i, p in enumerate(packets)
                if fa(p)["fixtureActionTypeId"] == BREAK_ENDED
                and fa(p)["metadata"]["breakScore"] >= least
            ),
            None,
        )
        events.append((market, "settle", "yes" if first else "no", "confirmed", first or end))
    score = f"{truth['home_frames']}-{truth['away_frames']}"
    events.append(("correct_score", "settle", score, "confirmed", end))
    events.append(("match_winner", "settle", truth["winner"], "confirmed", end))
    best = max(range(len(breaks)), key=lambda i: (breaks[i][0], -i))
    events.append(("highest_break_side", "settle", breaks[best][1], "confirmed", end))
    return sort(events)


def sort(events: list[Ev]) -> list[Ev]:
    order = {"rollback": 0, "rollback_void": 0, "settle": 1, "void": 1}
    return sorted(events, key=lambda e: (e[4], e[0], order[e[1]]))


def truth_breaks(truth: dict[str, Any]) -> list[tuple[int, str]]:
    return [(b["break_score"], b["side"]) for b in truth["breaks"]]


def truth_results(truth: dict[str, Any], breaks: list[tuple[int, str]]) -> dict[str, Any]:
    results = {f"frame_winner:{f['frame_number']}": f["winner"] for f in truth["frames"]}
    best = max(range(len(breaks)), key=lambda i: (breaks[i][0], -i))
    results.update(
        match_winner=truth["winner"],
        correct_score=f"{truth['home_frames']}-{truth['away_frames']}",
        century_in_match="yes" if any(s >= 100 for s, _ in breaks) else "no",
        maximum_in_match="yes" if any(s >= 147 for s, _ in breaks) else "no",
        highest_break_side=breaks[best][1],
    )
    return results


# -- reading what was written ------------------------------------------------------------------


async def event_log(sql: asyncpg.Connection, fixture_id: uuid.UUID) -> list[Ev]:
    rows = await sql.fetch(
        "SELECT market, kind, outcome, certainty, decided_by_seq FROM settlement_events "
        "WHERE fixture_id = $1 ORDER BY id",
        fixture_id,
    )
    return [tuple(r) for r in rows]  # type: ignore[misc]


async def results(sql: asyncpg.Connection, fixture_id: uuid.UUID) -> dict[str, Any]:
    rows = await sql.fetch("SELECT * FROM market_results WHERE fixture_id = $1", fixture_id)
    for r in rows:
        assert (r["status"], r["certainty"]) == ("settled", "confirmed"), dict(r)
        assert r["settled_at"] is not None
    return {r["market"]: r["outcome"] for r in rows}


async def settle(store: Store, fixture_id: uuid.UUID) -> int:
    return len((await SettlementStore(store).settle(fixture_id)).events)


async def check(
    store: Store,
    sql: asyncpg.Connection,
    fixture_id: uuid.UUID,
    expected: list[Ev],
    truth: dict[str, Any],
    breaks: list[tuple[int, str]],
) -> None:
    assert await event_log(sql, fixture_id) == expected
    assert await results(sql, fixture_id) == truth_results(truth, breaks)
    assert await settle(store, fixture_id) == 0  # nothing new: nothing written again
    assert await event_log(sql, fixture_id) == expected


# -- generated matches -------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "best_of"), [(1, 7), (7, 7), (10, 7), (11, 35)])
async def test_a_generated_match_settles_each_market_once(
    store: Store, sql: asyncpg.Connection, seed: int, best_of: int
) -> None:
    match = generate_match(MatchSpec(seed=seed, best_of=best_of))
    await write(store, match.fixture_id, match.packets)
    await settle(store, match.fixture_id)
    breaks = truth_breaks(match.truth)
    expected = implied(match.packets, match.truth, breaks)
    await check(store, sql, match.fixture_id, expected, match.truth, breaks)


async def test_settling_in_pieces_writes_the_same_log(
    store: Store, sql: asyncpg.Connection
) -> None:
    """Live (a settle pass after each batch, in random sizes) or all at once: the same events."""
    match = generate_match(MatchSpec(seed=10, best_of=7))
    rng, done = random.Random(3), 0
    while done < len(match.packets):
        size = rng.randint(1, 40)
        await write(store, match.fixture_id, match.packets[done : done + size])
        done += size
        await settle(store, match.fixture_id)
    breaks = truth_breaks(match.truth)
    await check(store, sql, match.fixture_id, implied(match.packets, match.truth, breaks),
                match.truth, breaks)  # fmt: skip


# -- corrections that flip decided markets -----------------------------------------------------


async def test_a_frame_end_cancelled_then_restored(store: Store, sql: asyncpg.Connection) -> None:
    match = generate_match(MatchSpec(seed=1, best_of=7))
    packets = copy.deepcopy(match.packets)
    i = index_of(packets, FRAME_ENDED, 2)
    packets[i + 1 : i + 1] = [resend(packets[i], CANCELLED), resend(packets[i], RESTORED)]
    renumber(packets)
    await write(store, match.fixture_id, packets[: i + 2])  # up to the Cancelled
    await settle(store, match.fixture_id)
    rows = await sql.fetch(
        "SELECT status, outcome FROM market_results WHERE fixture_id = $1 "
        "AND market = 'frame_winner:2'", match.fixture_id,
    )  # fmt: skip
    assert [tuple(r) for r in rows] == [("open", None)]

    await write(store, match.fixture_id, packets[i + 2 :])
    await settle(store, match.fixture_id)
    breaks = truth_breaks(match.truth)
    winner = match.truth["frames"][1]["winner"]
    expected = [
        *implied(packets, match.truth, breaks),
        ("frame_winner:2", "rollback", None, None, i + 2),
        ("frame_winner:2", "settle", winner, "confirmed", i + 3),
    ]
    await check(store, sql, match.fixture_id, sort(expected), match.truth, breaks)


async def test_a_century_updated_to_96_is_rolled_back(
    store: Store, sql: asyncpg.Connection
) -> None:
    match = generate_match(MatchSpec(seed=7, best_of=7))  # one century in the match
    packets = copy.deepcopy(match.packets)
    i = next(
        i for i, p in enumerate(packets)
        if fa(p)["fixtureActionTypeId"] == BREAK_ENDED and fa(p)["metadata"]["breakScore"] >= 100
    )  # fmt: skip
    fa(packets[i])["metadata"]["breakScore"] = 100
    lowered = resend(packets[i], UPDATED)
    fa(lowered)["metadata"]["breakScore"] = 96
    packets.insert(i + 1, lowered)
    renumber(packets)
    await write(store, match.fixture_id, packets)
    await settle(store, match.fixture_id)

    breaks = [(96 if s >= 100 else s, side) for s, side in truth_breaks(match.truth)]
    truth = match.truth
    expected = [e for e in implied(packets, truth, breaks) if e[0] != "century_in_match"]
    expected += [
        ("century_in_match", "settle", "yes", "confirmed", i + 1),
        ("century_in_match", "rollback", None, None, i + 2),
        ("century_in_match", "settle", "no", "confirmed", len(packets)),
    ]
    await check(store, sql, match.fixture_id, sort(expected), truth, breaks)


async def test_a_pending_frame_end_is_provisional_until_confirmed(
    store: Store, sql: asyncpg.Connection
) -> None:
    match = generate_match(MatchSpec(seed=10, best_of=7))
    packets = copy.deepcopy(match.packets)
    i = index_of(packets, FRAME_ENDED, 1)
    confirmed = resend(packets[i], CONFIRMED)
    fa(packets[i]).update(sendType="Pending", sendTypeId=PENDING)
    packets.insert(i + 1, confirmed)
    renumber(packets)
    await write(store, match.fixture_id, packets[: i + 1])
    await settle(store, match.fixture_id)
    row = await sql.fetchrow(
        "SELECT status, outcome, certainty FROM market_results WHERE fixture_id = $1 "
        "AND market = 'frame_winner:1'", match.fixture_id,
    )  # fmt: skip
    assert row is not None
    assert tuple(row) == ("settled", match.truth["frames"][0]["winner"], "provisional")

    await write(store, match.fixture_id, packets[i + 1 :])
    await settle(store, match.fixture_id)
    breaks = truth_breaks(match.truth)
    winner = match.truth["frames"][0]["winner"]
    expected = [e for e in implied(packets, match.truth, breaks) if e[0] != "frame_winner:1"]
    expected += [
        ("frame_winner:1", "settle", winner, "provisional", i + 1),
        ("frame_winner:1", "settle", winner, "confirmed", i + 2),
    ]
    await check(store, sql, match.fixture_id, sort(expected), match.truth, breaks)


async def test_a_dropped_match_is_voided_then_restored(
    store: Store, sql: asyncpg.Connection
) -> None:
    match = generate_match(MatchSpec(seed=7, best_of=7, suspensions=False))
    packets = copy.deepcopy(match.packets)
    i = index_of(packets, FRAME_ENDED, 2)
    gone = [status_packet(packets[i], "CollectionSuspended", finished=False),
            status_packet(packets[i], "CollectionDropped", finished=True)]  # fmt: skip
    back = status_packet(packets[i], "CollectingLive", finished=False)
    packets[i + 1 : i + 1] = [*gone, back]
    renumber(packets)
    drop_seq, back_seq = i + 3, i + 4

    await write(store, match.fixture_id, packets[:drop_seq])
    await settle(store, match.fixture_id)
    rows = await sql.fetch(
        "SELECT market, status FROM market_results WHERE fixture_id = $1", match.fixture_id
    )
    century_before = any(
        fa(p)["fixtureActionTypeId"] == BREAK_ENDED and fa(p)["metadata"]["breakScore"] >= 100
        for p in packets[:drop_seq]
    )
    voided = {m for m in MATCH_MARKETS if not (m == "century_in_match" and century_before)}
    assert {r["market"]: r["status"] for r in rows} == {
        "frame_winner:1": "settled", "frame_winner:2": "settled",
        **{m: "void" for m in voided},
        **({"century_in_match": "settled"} if century_before else {}),
    }  # fmt: skip

    await write(store, match.fixture_id, packets[drop_seq:])
    await settle(store, match.fixture_id)
    breaks = truth_breaks(match.truth)
    expected = implied(packets, match.truth, breaks)
    expected += [(m, "void", None, None, drop_seq) for m in voided]
    expected += [(m, "rollback_void", None, None, back_seq) for m in voided]
    await check(store, sql, match.fixture_id, sort(expected), match.truth, breaks)
    # the frame market of a frame started after the restore was never voided
    assert FRAME_STARTED and not any(
        e[0] == "frame_winner:3" and e[1] == "void" for e in await event_log(sql, match.fixture_id)
    )


async def test_a_corrected_lineups_resettles_the_sides_the_same_live_and_at_once(
    store: Store, sql: asyncpg.Connection
) -> None:
    """A Lineups action Updated with home and away swapped, after frame 1 was settled: each
    side's markets are settled again at that packet, whether the settler had already settled the
    frame (live) or sees the whole match at once. (Reading sides through the Lineups in effect
    at settling time, settlement wrote a different log live than at once.)"""
    match = generate_match(MatchSpec(seed=1, best_of=7))
    packets = copy.deepcopy(match.packets)
    lineups = next(i for i, p in enumerate(packets) if fa(p)["fixtureActionTypeId"] == LINEUPS)
    swapped = resend(packets[lineups], UPDATED)
    meta = fa(swapped)["metadata"]
    meta["home"], meta["away"] = meta["away"], meta["home"]
    i = index_of(packets, FRAME_ENDED, 1)
    packets.insert(i + 1, swapped)
    renumber(packets)
    swap_seq = i + 2

    live, at_once = uuid.uuid4(), uuid.uuid4()
    await write(store, live, packets[: swap_seq - 1])
    await settle(store, live)  # frame 1 settled before the swap
    await write(store, live, packets[swap_seq - 1 :])
    await settle(store, live)
    await write(store, at_once, packets)
    await settle(store, at_once)

    log = await event_log(sql, live)
    assert log == await event_log(sql, at_once)
    other = {"home": "away", "away": "home"}
    winner = match.truth["frames"][0]["winner"]
    assert ("frame_winner:1", "settle", winner, "confirmed", swap_seq - 1) in log
    assert ("frame_winner:1", "settle", other[winner], "confirmed", swap_seq) in log
    outcomes = {r["market"]: r["outcome"] for r in await sql.fetch(
        "SELECT market, outcome FROM market_results WHERE fixture_id = $1", live
    )}  # fmt: skip
    for frame in match.truth["frames"]:  # every frame's winner, through the swapped Lineups
        assert outcomes[f"frame_winner:{frame['frame_number']}"] == other[frame["winner"]]
    assert outcomes["match_winner"] == other[match.truth["winner"]]


# -- the consumer ------------------------------------------------------------------------------


async def test_the_settler_reacts_to_notifications_and_announces_events(
    store: Store, sql: asyncpg.Connection, database_url: str
) -> None:
    match: GeneratedMatch = generate_match(MatchSpec(seed=18, best_of=7))
    heard: list[dict[str, Any]] = []
    await sql.add_listener("settlement_events", lambda *a: heard.append(json.loads(a[3])))
    await store.register([match.fixture_id])
    # an idle check far beyond the test: only the notifications can wake it
    settler = Settler(
        SettlementStore(store), SettleOptions(until_finished=True, idle_check=3600),
        SettlerMetrics(),
    )  # fmt: skip
    task = asyncio.create_task(settler.run([match.fixture_id], follow_all=False))
    half = len(match.packets) // 2
    await wait_until(lambda: _listening(sql), timeout=10)
    await write(store, match.fixture_id, match.packets[:half])

    async def some_settled() -> bool:
        return bool(await event_log(sql, match.fixture_id))

    await wait_until(some_settled, timeout=10)
    assert not task.done()  # not finished yet: it waits for the rest
    await write(store, match.fixture_id, match.packets[half:])
    assert await asyncio.wait_for(task, 30) == 0
    breaks = truth_breaks(match.truth)
    expected = implied(match.packets, match.truth, breaks)
    await check(store, sql, match.fixture_id, expected, match.truth, breaks)
    await wait_until(lambda: _at_least(heard, len(expected)), timeout=10)
    assert [(h["market"], h["kind"], h["outcome"], h["certainty"], h["decided_by_seq"])
            for h in heard] == expected  # fmt: skip


async def _listening(sql: asyncpg.Connection) -> bool:
    return bool(
        await sql.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%ingest_actions%' "
            "AND datname = current_database()"
        )
    )


async def _at_least(items: list[Any], n: int) -> bool:
    return len(items) >= n


async def test_a_fixture_on_hold_waits_and_loses_nothing(
    store: Store, sql: asyncpg.Connection
) -> None:
    match = generate_match(MatchSpec(seed=12, best_of=7))
    hold = {match.fixture_id}
    asked: list[int] = []

    class Holding(SettlementStore):
        async def fixtures_on_hold(self, fixture_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
            asked.append(1)
            return {f: "held by the test" for f in hold & set(fixture_ids)}

    await write(store, match.fixture_id, match.packets)
    settler = Settler(Holding(store), SettleOptions(until_finished=True, idle_check=0.2),
                      SettlerMetrics())  # fmt: skip
    task = asyncio.create_task(settler.run([match.fixture_id], follow_all=False))
    # asked twice: the first look held it back, and a whole idle cycle went by
    await wait_until(lambda: _at_least(asked, 2), timeout=10)
    assert await event_log(sql, match.fixture_id) == []
    assert not task.done()
    hold.clear()
    assert await asyncio.wait_for(task, 30) == 0
    breaks = truth_breaks(match.truth)
    await check(store, sql, match.fixture_id, implied(match.packets, match.truth, breaks),
                match.truth, breaks)  # fmt: skip


async def test_a_fixture_whose_summary_disagrees_is_held_until_it_agrees(
    store: Store, sql: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    match = generate_match(MatchSpec(seed=1, best_of=7))
    # from frame 1's end to mid frame 2 the provider's summaries claim a frame 3 we do not have
    disagreeing, cut, _ = claim_an_extra_frame(match)
    await write(store, match.fixture_id, disagreeing)
    caplog.set_level(logging.INFO, logger="ingest")
    settler = Settler(SettlementStore(store), SettleOptions(until_finished=True, idle_check=0.2),
                      SettlerMetrics())  # fmt: skip
    task = asyncio.create_task(settler.run([match.fixture_id], follow_all=False))

    async def held() -> bool:
        return "is on hold" in caplog.text

    await wait_until(held, timeout=10)
    assert "frame 3 winner (ours None, provider home)" in caplog.text
    assert await event_log(sql, match.fixture_id) == []  # frame 1 is decided, yet not settled
    assert not task.done()
    await write(store, match.fixture_id, match.packets[cut:])  # the rest agrees: released
    assert await asyncio.wait_for(task, 30) == 0
    assert "no longer on hold" in caplog.text
    breaks = truth_breaks(match.truth)
    await check(store, sql, match.fixture_id, implied(match.packets, match.truth, breaks),
                match.truth, breaks)  # fmt: skip
