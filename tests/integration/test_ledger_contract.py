"""One contract, two ledgers: the in-memory twin of tests/twins.py and ``SettlementStore`` on a
real PostgreSQL. The settler's unit tests (tests/unit/test_settler.py) run on the twin; they are
only worth what this file proves: that the twin keeps the promises the settler relies on.

The matches are built by hand (tests/integration/test_views.py's ``Feed``) and every event is
written out here, so the expectations do not come from ``ingest.settlement.markets``."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from ingest.db.settlement import SettlementStore
from ingest.db.store import Store
from ingest.feed.packet import Action
from ingest.settlement.ports import Ledger
from ingest.worker.ports import WriteResult
from tests.integration.test_views import (
    BALL_POTTED,
    BREAK_ENDED,
    CANCELLED,
    FRAME_ENDED,
    MATCH_ENDED,
    RESTORED,
    STATUS_UPDATED,
    UPDATED,
    Feed,
    parse,
)
from tests.twins import MemoryLedger

Ev = tuple[str, str, str | None, str | None, int]  # market, kind, outcome, certainty, seq


@dataclass
class Books:
    """A ledger, and what a test needs beside it: the worker's write, the registry, events."""

    ledger: Ledger
    write: Callable[[Sequence[tuple[uuid.UUID, Action]]], Awaitable[WriteResult]]
    register: Callable[[Sequence[uuid.UUID]], Awaitable[int]]
    disable: Callable[[uuid.UUID], Awaitable[Any]]
    log: Callable[[uuid.UUID], Awaitable[list[Ev]]]
    hold: Callable[[Feed], Awaitable[None]]  # make the fixture's latest summary disagree

    async def store(self, feed: Feed) -> None:
        """What the feed emitted since the last call, stored as the worker stores a batch."""
        actions = parse(feed.packets[feed.stored :], first_position=feed.stored + 1)
        await self.write([(feed.fixture_id, a) for a in actions])
        feed.stored = len(feed.packets)


def _memory() -> Books:
    twin = MemoryLedger()

    async def register(ids: Sequence[uuid.UUID]) -> int:
        return await twin.sink.register(ids)

    async def disable(fixture_id: uuid.UUID) -> None:
        twin.sink.registry[fixture_id].enabled = False

    async def log(fixture_id: uuid.UUID) -> list[Ev]:
        return [(e.market, e.kind, e.outcome, e.certainty, e.decided_by_seq)
                for e in twin.events.get(fixture_id, [])]  # fmt: skip

    async def hold(feed: Feed) -> None:
        twin.holds[feed.fixture_id] = "held by the test"

    return Books(twin, twin.write, register, disable, log, hold)


def _postgres(store: Store, sql: asyncpg.Connection) -> Books:
    async def disable(fixture_id: uuid.UUID) -> bool:
        return await store.set_enabled(fixture_id, False)

    async def log(fixture_id: uuid.UUID) -> list[Ev]:
        rows = await sql.fetch(
            "SELECT market, kind, outcome, certainty, decided_by_seq FROM settlement_events "
            "WHERE fixture_id = $1 ORDER BY id",
            fixture_id,
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]

    async def hold(feed: Feed) -> None:
        # a summary that claims frames for home we do not have: summary_mismatches flags it
        feed.emit(BALL_POTTED, side="home", ball=1, metadata={"points": 1},
                  summary={"homeTeamScore": 9, "awayTeamScore": 0})  # fmt: skip
        actions = parse(feed.packets[feed.stored :], first_position=feed.stored + 1)
        await store.write([(feed.fixture_id, a) for a in actions])
        feed.stored = len(feed.packets)

    return Books(SettlementStore(store), store.write, store.register, disable, log, hold)


@pytest.fixture(params=["memory", "postgres"])
def books(request: pytest.FixtureRequest, store: Store, sql: asyncpg.Connection) -> Books:
    return _memory() if request.param == "memory" else _postgres(store, sql)


def century_match() -> tuple[Feed, str, str]:
    """A best-of-1 whose break of 101 (seq 6) and Frame Ended (seq 7) are home's, ended at 8."""
    feed = Feed(best_of=1)
    feed.start()  # 1 Match Conditions, 2 Lineups, 3 Match Started
    feed.frame(1)  # 4
    feed.pot("home", 1)  # 5
    feed.emit(BREAK_ENDED, side="home", metadata={"breakScore": 101})  # 6
    frame_end = feed.emit(FRAME_ENDED, side="home", metadata={"homePoints": 101, "awayPoints": 0})
    feed.emit(MATCH_ENDED, side="home", finished=True)  # 8
    return feed, frame_end, feed.packets[1]["fixtureAction"]["actionId"]


CENTURY = ("century_in_match", "settle", "yes", "confirmed", 6)
FRAME_1 = ("frame_winner:1", "settle", "home", "confirmed", 7)
ENDED = [
    ("correct_score", "settle", "1-0", "confirmed", 8),
    ("highest_break_side", "settle", "home", "confirmed", 8),
    ("match_winner", "settle", "home", "confirmed", 8),
    ("maximum_in_match", "settle", "no", "confirmed", 8),
]


async def test_a_pass_settles_what_is_stored_since_the_checkpoint_once(books: Books) -> None:
    feed, _, _ = century_match()
    fixture = feed.fixture_id
    whole = feed.packets
    feed.packets = whole[:6]
    await books.store(feed)
    (progress,) = await books.ledger.progress([fixture])
    assert (progress.last_seq, progress.finished, progress.checkpoint) == (6, False, 0)
    assert progress.behind and not progress.done

    first = await books.ledger.settle(fixture)
    assert [(e.market, e.kind, e.outcome, e.certainty, e.decided_by_seq)
            for e in first.events] == [CENTURY]  # fmt: skip
    assert (first.fixture_id, first.previous, first.checkpoint, first.ended) == (
        fixture, 0, 6, False,
    )  # fmt: skip
    again = await books.ledger.settle(fixture)  # nothing new: nothing written
    assert (again.events, again.previous, again.checkpoint) == ([], 6, 6)

    feed.packets = whole
    await books.store(feed)
    last = await books.ledger.settle(fixture)
    assert (last.previous, last.checkpoint, last.ended) == (6, 8, True)
    assert await books.log(fixture) == [CENTURY, FRAME_1, *ENDED]
    (progress,) = await books.ledger.progress([fixture])
    assert (progress.last_seq, progress.finished, progress.checkpoint) == (8, True, 8)
    assert progress.done


async def test_a_correction_rolls_back_a_drop_voids_and_a_restore_reopens(books: Books) -> None:
    feed, frame_end, _ = century_match()
    feed.packets = feed.packets[:7]  # frame 1 ended, the match not yet
    await books.store(feed)
    await books.ledger.settle(feed.fixture_id)
    feed.correct(frame_end, CANCELLED)  # 8: frame 1 is in play again
    feed.emit(STATUS_UPDATED, metadata={"collectionStatus": "CollectionDropped"}, finished=True)
    feed.emit(STATUS_UPDATED, metadata={"collectionStatus": "CollectingLive"})  # 10
    feed.correct(frame_end, RESTORED)  # 11
    await books.store(feed)
    done = await books.ledger.settle(feed.fixture_id)
    assert not done.ended  # dropped, then live again: not ended
    assert await books.log(feed.fixture_id) == [
        CENTURY,
        FRAME_1,
        ("frame_winner:1", "rollback", None, None, 8),
        ("correct_score", "void", None, None, 9),
        ("frame_winner:1", "void", None, None, 9),
        ("highest_break_side", "void", None, None, 9),
        ("match_winner", "void", None, None, 9),
        ("maximum_in_match", "void", None, None, 9),
        ("correct_score", "rollback_void", None, None, 10),
        ("frame_winner:1", "rollback_void", None, None, 10),
        ("highest_break_side", "rollback_void", None, None, 10),
        ("match_winner", "rollback_void", None, None, 10),
        ("maximum_in_match", "rollback_void", None, None, 10),
        ("frame_winner:1", "settle", "home", "confirmed", 11),
    ]


async def test_sides_follow_the_lineups_in_effect_at_each_packet(books: Books) -> None:
    feed, _, lineups = century_match()
    feed.packets = feed.packets[:7]
    await books.store(feed)
    await books.ledger.settle(feed.fixture_id)
    teams = feed.packets[1]["fixtureAction"]["metadata"]
    swapped = {"home": teams["away"], "away": teams["home"]}
    feed.correct(lineups, UPDATED, metadata=swapped)  # 8: home and away swapped
    await books.store(feed)
    await books.ledger.settle(feed.fixture_id)
    assert await books.log(feed.fixture_id) == [
        CENTURY, FRAME_1, ("frame_winner:1", "settle", "away", "confirmed", 8),
    ]  # fmt: skip


async def test_followed_fixtures_and_their_progress(books: Books) -> None:
    a, b, c, d = (uuid.uuid4() for _ in range(4))
    assert await books.ledger.followed([b, a, b], False) == [b, a]
    for fixture in (c, d, a):  # one at a time: the registry's order is the order added
        await books.register([fixture])
    await books.disable(d)
    assert await books.ledger.followed([], True) == [c, a]
    assert await books.ledger.followed([b, a], True) == [b, a, c]
    assert [(p.fixture_id, p.last_seq, p.finished, p.checkpoint, p.done)
            for p in await books.ledger.progress([c, b])] == [
        (c, 0, False, 0, False), (b, 0, False, 0, False),
    ]  # fmt: skip


async def test_a_subscription_hears_each_stored_batch(books: Books) -> None:
    heard: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    subscription = await books.ledger.listen(
        "ingest_actions", lambda payload: heard.put_nowait(json.loads(payload))
    )
    assert not subscription.lost and await subscription.ping()
    feed, _, _ = century_match()
    whole = feed.packets
    feed.packets = whole[:3]
    await books.store(feed)
    feed.packets = whole
    await books.store(feed)
    await books.store(feed)  # nothing new: no notification
    first = await asyncio.wait_for(heard.get(), 10)
    second = await asyncio.wait_for(heard.get(), 10)
    fixture = str(feed.fixture_id)
    assert first == {"fixture_id": fixture, "max_seq": 3, "inserted": 3, "finished": False}
    assert second == {"fixture_id": fixture, "max_seq": 8, "inserted": 5, "finished": True}
    await subscription.close()


async def test_a_held_fixture_is_reported_with_why_and_only_it(books: Books) -> None:
    held, agreeing = century_match()[0], century_match()[0]
    for feed in (held, agreeing):
        feed.packets = feed.packets[:5]
        await books.store(feed)
    assert await books.ledger.fixtures_on_hold([held.fixture_id, agreeing.fixture_id]) == {}
    await books.hold(held)
    reasons = await books.ledger.fixtures_on_hold([held.fixture_id, agreeing.fixture_id])
    assert set(reasons) == {held.fixture_id} and isinstance(reasons[held.fixture_id], str)
    assert reasons[held.fixture_id]
    assert await books.ledger.fixtures_on_hold([agreeing.fixture_id]) == {}


async def test_a_listener_closed_twice_never_touches_a_connection_given_back(store: Store) -> None:
    """A close that was cancelled, then the settler's last close: the second must not call the
    connection after it went back to the pool ("cannot call Connection.is_closed(): connection
    has been released back to the pool" reached the log during a database outage)."""
    from ingest.db.settlement import SettlementStore

    for lost in (False, True):
        listener = await SettlementStore(store).listen("ingest_actions", lambda _: None)
        listener.lost = lost
        await listener.close()
        await listener.close()  # nothing happens, nothing is raised
    assert await store.database.fetch("a round trip", "SELECT 1")  # the pool is fine
