"""One contract, two implementations each: the in-memory twins of tests/twins.py and the real
parts (the PostgreSQL store, the websocket client on a real feed). A unit test on a twin is only
worth what this file proves: that the twin keeps the promises the worker relies on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from ingest.db.store import Store
from ingest.feed.client import FeedSource, feed_session
from ingest.feed.packet import Action, Rejected, classify
from ingest.settings import Secret
from ingest.simulator.generator import GeneratedMatch
from ingest.simulator.recording import Recording
from ingest.worker.ports import (
    CLOSED,
    OPEN,
    BettingBoard,
    Pulse,
    Reason,
    SavedState,
    Sink,
    Source,
    State,
    suspended,
)
from tests.conftest import TOKEN, StartFeed
from tests.twins import MemoryBettingBoard, MemorySink, MemorySource

FIXTURE = uuid.UUID("7d1f3e52-55a4-4b4e-9a43-0b2f2b6a9c11")


def _action(seq: int, body: dict[str, object] | None = None, *, finished: bool = False) -> Action:
    packet = {
        "finished": finished,
        "fixtureAction": {
            "fixtureSeqNum": seq,
            "actionId": str(uuid.UUID(int=seq)),
            **(body or {}),
        },
    }
    frame = classify(
        json.dumps(packet).encode(), binary=False, position=seq, received_at=datetime.now(UTC)
    )
    assert isinstance(frame, Action)
    return frame


@pytest.fixture(params=["memory", "postgres"])
def sink(request: pytest.FixtureRequest, store: Store) -> Sink:
    return MemorySink() if request.param == "memory" else store


async def test_a_sink_stores_each_seq_once_and_records_a_differing_replay(sink: Sink) -> None:
    first = await sink.write([(FIXTURE, _action(1)), (FIXTURE, _action(2))])
    assert first.inserted == {FIXTURE: 2} and first.conflicts == []
    again = await sink.write([(FIXTURE, _action(2)), (FIXTURE, _action(3, finished=True))])
    assert again.inserted == {FIXTURE: 1} and again.conflicts == []
    changed = await sink.write([(FIXTURE, _action(2, {"period": 9}))])
    assert changed.inserted == {} and changed.conflicts == [(FIXTURE, 2)]
    assert await sink.max_seq(FIXTURE) == 3
    assert await sink.max_seqs([FIXTURE, uuid.UUID(int=5)]) == {FIXTURE: 3, uuid.UUID(int=5): 0}
    stored = await sink.payload_at(FIXTURE, 2)
    assert stored is not None and "period" not in json.loads(stored)["fixtureAction"]
    assert await sink.payload_at(FIXTURE, 9) is None
    assert await sink.is_numbered(FIXTURE)
    assert await sink.is_numbered(uuid.UUID(int=5)) is None  # nothing stored: undecided
    unnumbered = classify(
        json.dumps({"finished": False, "fixtureAction": {"actionId": "a"}}).encode(),
        binary=False, position=4, received_at=datetime.now(UTC),
    )  # fmt: skip
    assert isinstance(unnumbered, Action)  # keyed by its position in the stream
    await sink.write([(uuid.UUID(int=6), unnumbered)])
    assert await sink.is_numbered(uuid.UUID(int=6)) is False
    (row,) = await sink.fixtures([FIXTURE])
    assert (row.finished, row.last_seq, row.packets) == (True, 3, 3)


async def test_a_sink_counts_rejected_frames(sink: Sink) -> None:
    bad = Rejected.of(b"not json", "invalid JSON", datetime.now(UTC))
    result = await sink.write([], [(FIXTURE, bad)])
    assert result.rejected == 1 and result.inserted == {}
    batch = uuid.uuid4()  # a batch retried with its token (its commit's reply lost): stored once
    first = await sink.write([], [(FIXTURE, bad)], unstored={FIXTURE: 3}, batch=batch)
    again = await sink.write([], [(FIXTURE, bad)], unstored={FIXTURE: 3}, batch=batch)
    assert (first.rejected, again.rejected) == (1, 0)


async def test_a_sink_keeps_the_registry(sink: Sink) -> None:
    ids = [uuid.UUID(int=1), uuid.UUID(int=2), uuid.UUID(int=3)]
    assert await sink.register([*ids, ids[0]]) == 3
    assert await sink.register(ids) == 0
    await sink.write([(ids[1], _action(1, finished=True))])
    assert await sink.runnable_fixtures() == [ids[0], ids[2]]
    since = datetime.now(UTC)
    await sink.save_states([SavedState(ids[0], State.CONNECTED, since, 2, None)])
    (row,) = await sink.fixtures([ids[0]])
    assert (row.state, row.connects, row.last_error) == ("connected", 2, None)


@pytest.fixture(params=["memory", "feed"])
async def source(
    request: pytest.FixtureRequest,
    match: GeneratedMatch,
    recording: Recording,
    start_feed: StartFeed,
) -> AsyncIterator[Source]:
    if request.param == "memory":
        lines = [line.encode() for line in recording.lines]
        yield MemorySource({match.fixture_id: lines})
        return
    url = await start_feed([recording])
    async with feed_session() as session:
        yield FeedSource(session, url, Secret(TOKEN), liveness_timeout=5)


@pytest.mark.parametrize("start", [0, 17])
async def test_a_source_yields_from_the_start_position_to_the_finished_packet(
    source: Source, match: GeneratedMatch, start: int
) -> None:
    connected: list[bool] = []
    seqs = []
    frames = source.stream(
        match.fixture_id, start, speed="fast", on_connected=lambda: connected.append(True)
    )
    async with contextlib.aclosing(frames):
        async for frame in frames:
            assert isinstance(frame, Action)
            seqs.append(frame.seq)
            if frame.finished:  # the caller decides what a finished packet ends
                break
    assert connected == [True]
    assert seqs == list(range(start + 1, len(match.packets) + 1))


async def test_a_sources_pulse_is_the_time_of_the_last_sign_of_life(
    source: Source, match: GeneratedMatch
) -> None:
    loop = asyncio.get_running_loop()
    pulse = Pulse(at=-1.0)  # never set: the loop's clock (uvloop's counts in ms) is not below 0
    started = loop.time()
    frames = source.stream(match.fixture_id, 0, speed="fast", pulse=pulse)
    async with contextlib.aclosing(frames):
        async for frame in frames:
            assert started <= pulse.at <= loop.time()  # set when the packet arrived
            if isinstance(frame, Action) and frame.seq == 3:
                break
    assert pulse.at >= started


@pytest.fixture(params=["memory", "postgres"])
def board(request: pytest.FixtureRequest, store: Store) -> tuple[BettingBoard, Any]:
    """A betting board, and how a packet gets stored beside it (the trigger's part)."""
    if request.param == "postgres":

        async def write(fixture_id: uuid.UUID, action: Action) -> None:
            await store.write([(fixture_id, action)])

        return store, write
    twin = MemoryBettingBoard()

    async def stored(fixture_id: uuid.UUID, action: Action) -> None:
        twin.stored(fixture_id, action)

    return twin, stored


def _status(seq: int, collection: str) -> Action:
    return _action(seq, {"fixtureActionTypeId": 22, "metadata": {"collectionStatus": collection}})


async def test_a_betting_board_writes_each_change_once_in_the_order_of_precedence(
    board: tuple[BettingBoard, Any], store: Store
) -> None:
    betting, stored = board
    fixture, other = uuid.UUID(int=11), uuid.UUID(int=12)
    await store.register([fixture, other])
    stale = suspended(Reason.FEED_STALE)
    assert await betting.report_betting("w", {fixture: OPEN}, [fixture], 15) == {fixture: OPEN}
    assert await betting.report_betting("w", {fixture: OPEN}, [fixture], 15) == {fixture: OPEN}
    assert await betting.report_betting("w", {fixture: stale}, [fixture], 15) == {fixture: stale}
    await stored(fixture, _status(1, "CollectionSuspended"))
    provider = suspended(Reason.PROVIDER_SUSPENDED)
    assert await betting.report_betting("w", {fixture: OPEN}, [fixture], 15) == {fixture: provider}
    await stored(fixture, _status(2, "CollectingLive"))
    assert await betting.report_betting("w", {fixture: OPEN}, [fixture], 15) == {fixture: OPEN}
    await stored(fixture, _action(3, finished=True))
    assert await betting.report_betting("w", {fixture: OPEN}, [fixture], 15) == {fixture: CLOSED}
    # another fixture: its worker stops confirming it, another worker's sweep says so
    await betting.report_betting("w", {other: OPEN}, [other], 0.2)
    silent = suspended(Reason.WORKER_SILENT)

    await asyncio.sleep(0.3)  # the scenario: its 0.2 s of trust run out (no synchronisation)
    assert await betting.report_betting("x", {}, [], 15, sweep=True) == {}
    assert await betting.report_betting("w", {}, [other], 0.2) == {other: silent}
    await betting.report_betting("w", {other: OPEN}, [other], 15)
    await betting.leave_betting("w", [other])
    assert await betting.report_betting("y", {}, [other], 15) == {other: silent}
