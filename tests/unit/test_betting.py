"""The betting watch's rules (ingest/worker/betting.py), and a worker on in-memory twins writing
each fixture's status: open after the catch-up, closed at the end, worker_silent on a stop."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import pytest

from ingest.settings import RunOptions
from ingest.simulator.generator import MatchSpec, generate_match
from ingest.worker.betting import DELAYED, DOWN, STALE, BettingWatch, Signs
from ingest.worker.ports import CLOSED, OPEN, Reason, State, suspended
from ingest.worker.progress import FixtureStats
from ingest.worker.supervisor import Worker
from tests.conftest import wait_until
from tests.twins import MemoryBettingBoard, MemorySink, MemorySource

NOW = 1000.0


def watch(**options: object) -> BettingWatch:
    return BettingWatch(MemoryBettingBoard(), {}, RunOptions(stale_after=2.0, **options))  # type: ignore[arg-type]


def signs(at: float = NOW, **flags: bool) -> Signs:
    s = Signs()
    s.pulse.at = at
    for name, value in flags.items():
        setattr(s, name, value)
    return s


def stats(state: State, finished: bool = False) -> FixtureStats:
    return FixtureStats(state=state, finished=finished)


@pytest.mark.parametrize(
    ("state", "given", "expected"),
    [
        (State.STARTING, {}, None),  # the run's first connection: nothing said yet
        (State.CONNECTING, {}, None),
        (State.CONNECTING, {"known": True}, DOWN),  # a reconnect
        (State.BACKING_OFF, {}, DOWN),
        (State.BLOCKED, {}, DOWN),
        (State.NOT_FOUND, {}, DOWN),
        (State.CONNECTED, {"catching_up": True}, None),
        (State.CONNECTED, {"catching_up": True, "known": True}, DOWN),  # its backlog first
        (State.CONNECTED, {}, OPEN),
        (State.CONNECTED, {"late": True}, DELAYED),
        (State.RELEASED, {"known": True}, None),  # another worker's now
        (State.FINISHED, {}, CLOSED),
    ],
)
def test_the_status_the_feed_gives(state: State, given: dict[str, bool], expected: object) -> None:
    assert watch().wanted(stats(state), signs(**given), NOW + 0.1) == expected


def test_stale_after_stale_after_seconds_of_silence_and_the_catch_up_ends_when_quiet() -> None:
    w = watch()
    quiet = signs(NOW)
    assert w.wanted(stats(State.CONNECTED), quiet, NOW + 1.9) == OPEN
    assert w.wanted(stats(State.CONNECTED), quiet, NOW + 2.1) == STALE
    # a backlog of late packets, then quiet: the catch-up is over, and its lateness forgotten
    backlog = signs(NOW, catching_up=True, late=True, known=True)
    assert w.wanted(stats(State.CONNECTED), backlog, NOW + 0.2) == DOWN
    assert w.wanted(stats(State.CONNECTED), backlog, NOW + 0.6) == OPEN
    assert not backlog.catching_up and not backlog.late and backlog.known


def test_a_finished_fixture_is_closed_whatever_its_state() -> None:
    assert watch().wanted(stats(State.BACKING_OFF, finished=True), signs(), NOW) == CLOSED


def test_the_delay_is_not_judged_at_speed_fast() -> None:
    assert watch(speed="fast").max_delay is None
    assert watch().max_delay is not None
    fast = watch(speed="fast")
    s = signs()
    fast.connected(s)
    assert not s.catching_up  # a backfill has no catch-up either


def _fresh_lines(seed: int) -> list[bytes]:
    """A short match, every packet stamped now (as a live feed stamps what it sends)."""
    match = generate_match(MatchSpec(seed=seed, best_of=1, suspensions=False))
    stamp = datetime.now(UTC).isoformat()
    lines = []
    for packet in match.packets:
        packet["fixtureAction"]["timestamp"] = stamp
        lines.append(json.dumps(packet).encode())
    return lines


async def test_a_worker_opens_a_caught_up_fixture_closes_it_at_the_end_and_says_when_it_stops() -> (
    None
):
    finishing, live = uuid.UUID(int=1), uuid.UUID(int=2)
    lines = _fresh_lines(4)
    board = MemoryBettingBoard()
    source = MemorySource({finishing: lines, live: lines[:-1]})  # the second never finishes
    options = RunOptions(connect_rate=0, stale_after=2.0)
    worker = Worker(source, MemorySink(), options, betting=board)
    running = asyncio.create_task(worker.run([finishing, live]))

    async def settled() -> bool:
        return board.latest.get(finishing) == CLOSED and board.latest.get(live) == OPEN

    await wait_until(settled, timeout=10, interval=0.01)
    worker.stop()
    async with asyncio.timeout(10):
        await running
    assert board.of(finishing) in ([OPEN, CLOSED], [CLOSED])
    assert board.of(live) == [OPEN, suspended(Reason.WORKER_SILENT)]
    assert live not in board.alive  # no longer confirmed


async def test_a_fixture_handed_over_is_no_longer_confirmed_by_its_old_worker() -> None:
    fixture = uuid.UUID(int=7)
    board = MemoryBettingBoard()
    stats = {fixture: FixtureStats(state=State.CONNECTED)}
    w = BettingWatch(board, stats, RunOptions(stale_after=2.0))
    signs = w.add(fixture)
    signs.pulse.at = asyncio.get_running_loop().time()
    running = asyncio.create_task(w.run_forever("old"))
    try:

        async def opened() -> bool:
            return board.latest.get(fixture) == OPEN

        await wait_until(opened, timeout=5, interval=0.01)
        stats[fixture].state = State.RELEASED  # the lease went to another worker
        w.wake()

        async def left() -> bool:
            return board.latest.get(fixture) == suspended(Reason.WORKER_SILENT)

        await wait_until(left, timeout=5, interval=0.01)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert board.of(fixture) == [OPEN, suspended(Reason.WORKER_SILENT)]
