"""The settler's orchestration on the in-memory ledger (tests/twins.py, held to the same contract
as SettlementStore in tests/integration/test_ledger_contract.py): catching up, following
notifications, corrections, a dropped match, holds, a lost LISTEN, retries and
``--until-finished``, in milliseconds. The end-to-end versions, on PostgreSQL, are in
tests/integration/test_settlement.py.

Whatever the order of passes, the event log must be the one a single pass over all the packets
writes (the log depends on the packets only): each test compares with that reference."""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from ingest.errors import DatabaseUnavailable
from ingest.feed.packet import Action, classify
from ingest.feed.vocabulary import (
    CANCELLED,
    CONFIRMED,
    FRAME_ENDED,
    RESTORED,
    SEND_TYPES,
    STATUS_UPDATED,
)
from ingest.ops.metrics import SettlerMetrics
from ingest.settings import RunOptions
from ingest.settlement.markets import Event
from ingest.settlement.settler import SettleOptions, Settler
from ingest.simulator.generator import GeneratedMatch, MatchSpec, generate_match, to_jsonl
from tests.conftest import wait_until
from tests.twins import MemoryLedger

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
Packets = list[dict[str, Any]]


@pytest.fixture(scope="module")
def match() -> GeneratedMatch:
    return generate_match(MatchSpec(seed=3, best_of=3, players=("Home", "Away")))


def fa(packet: dict[str, Any]) -> dict[str, Any]:
    return packet["fixtureAction"]  # type: ignore[no-any-return]


def parse(packets: Sequence[dict[str, Any]], first: int = 1) -> list[Action]:
    actions = []
    for position, line in enumerate(to_jsonl(packets).splitlines(), first):
        frame = classify(line.encode(), binary=False, position=position, received_at=NOW)
        assert isinstance(frame, Action)
        actions.append(frame)
    return actions


def renumbered(packets: Packets) -> Packets:
    for seq, packet in enumerate(packets, 1):
        fa(packet).update(fixtureSeqNum=seq, timelineSequence=float(seq))
    return packets


def resent(packet: dict[str, Any], send: int) -> dict[str, Any]:
    new = copy.deepcopy(packet)
    fa(new).update(sendType=SEND_TYPES[send], sendTypeId=send)
    return new


def status(after: dict[str, Any], collection: str, *, finished: bool) -> dict[str, Any]:
    packet = copy.deepcopy(after)
    packet["finished"] = finished
    fa(packet).update(actionId=str(uuid.uuid4()), fixtureActionType="Status Updated",
                      fixtureActionTypeId=STATUS_UPDATED, sendType="Confirmed",
                      sendTypeId=CONFIRMED, metadata={"collectionStatus": collection})  # fmt: skip
    fa(packet).pop("team", None)
    fa(packet).pop("player", None)
    packet["fixtureSummary"] = {**packet["fixtureSummary"], "collectionStatus": collection,
                                "finished": finished}  # fmt: skip
    return packet


def frame_end(packets: Packets, frame: int) -> int:
    return next(
        i
        for i, p in enumerate(packets)
        if fa(p)["fixtureActionTypeId"] == FRAME_ENDED and fa(p)["period"] == frame
    )


async def store(ledger: MemoryLedger, fixture: uuid.UUID, packets: Packets, first: int) -> None:
    """Packets ``first``.. (1-based seqs) stored as one batch by the worker."""
    await ledger.write([(fixture, a) for a in parse(packets, first)])


async def reference(fixture: uuid.UUID, packets: Packets) -> list[Event]:
    """The log of one pass over every packet."""
    ledger = MemoryLedger()
    await store(ledger, fixture, packets, 1)
    await ledger.settle(fixture)
    return ledger.events[fixture]


def settler(ledger: MemoryLedger, metrics: SettlerMetrics | None = None, **options: Any) -> Settler:
    retry = RunOptions(backoff_initial=0.001, backoff_max=0.001, db_backoff_max=0.001)
    return Settler(ledger, SettleOptions(retry=retry, **options), metrics or SettlerMetrics())


def sample(metrics: SettlerMetrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


def events(ledger: MemoryLedger, fixture: uuid.UUID) -> list[Event]:
    return ledger.events.get(fixture, [])


async def test_catching_up_a_stored_match_is_one_pass_then_done(match: GeneratedMatch) -> None:
    ledger, fixture = MemoryLedger(), match.fixture_id
    await store(ledger, fixture, match.packets, 1)
    done = settler(ledger, until_finished=True, idle_check=3600)
    assert await asyncio.wait_for(done.run([fixture], follow_all=False), 10) == 0
    assert events(ledger, fixture) == await reference(fixture, match.packets)
    assert ledger.passes == 1 and done.events_written == len(events(ledger, fixture))
    assert all(s.closed for s in ledger.subscriptions)  # the LISTEN is closed on the way out


async def test_notifications_drive_it_and_a_cancelled_frame_end_is_rolled_back(
    match: GeneratedMatch,
) -> None:
    fixture = match.fixture_id
    packets = copy.deepcopy(match.packets)
    i = frame_end(packets, 1)
    packets[i + 1 : i + 1] = [resent(packets[i], CANCELLED)]  # seq i + 2
    restored = frame_end(packets, 2) + 1
    packets.insert(restored, resent(packets[i], RESTORED))  # much later: seq restored + 1
    renumbered(packets)
    ledger = MemoryLedger()
    running = settler(ledger, until_finished=True, idle_check=3600)  # no timer: only NOTIFYs
    task = asyncio.create_task(running.run([fixture], follow_all=False))

    async def settled(market: str, kind: str) -> bool:
        return any(e.market == market and e.kind == kind for e in events(ledger, fixture))

    await wait_until(lambda: _listening(ledger), timeout=5)
    await store(ledger, fixture, packets[: i + 1], 1)  # up to frame 1's end
    await wait_until(lambda: settled("frame_winner:1", "settle"), timeout=5)
    await store(ledger, fixture, packets[i + 1 : restored], i + 2)  # the Cancelled, frame 2
    await wait_until(lambda: settled("frame_winner:1", "rollback"), timeout=5)
    assert not task.done()  # not finished: it waits for the rest
    await store(ledger, fixture, packets[restored:], restored + 1)
    assert await asyncio.wait_for(task, 10) == 0

    log = events(ledger, fixture)
    assert log == await reference(fixture, packets)
    frame_1 = [(e.kind, e.outcome, e.decided_by_seq) for e in log if e.market == "frame_winner:1"]
    winner = match.truth["frames"][0]["winner"]
    assert frame_1 == [
        ("settle", winner, i + 1), ("rollback", None, i + 2), ("settle", winner, restored + 1),
    ]  # fmt: skip
    assert ledger.passes == 3


async def test_a_dropped_match_voids_what_is_not_settled_and_ends_the_run(
    match: GeneratedMatch,
) -> None:
    fixture = match.fixture_id
    i = frame_end(match.packets, 1)
    packets = renumbered(
        [*copy.deepcopy(match.packets[: i + 1]),
         status(match.packets[i], "CollectionSuspended", finished=False),
         status(match.packets[i], "CollectionDropped", finished=True)]
    )  # fmt: skip
    ledger = MemoryLedger()
    await store(ledger, fixture, packets[: i + 1], 1)
    running = settler(ledger, until_finished=True, idle_check=3600)
    task = asyncio.create_task(running.run([fixture], follow_all=False))
    await wait_until(lambda: _settled_to(ledger, fixture, i + 1), timeout=5)
    assert not task.done()
    await store(ledger, fixture, packets[i + 1 :], i + 2)
    assert await asyncio.wait_for(task, 10) == 0  # a dropped match is finished

    log = events(ledger, fixture)
    assert log == await reference(fixture, packets)
    voided = {e.market for e in log if e.kind == "void"}
    settled = {e.market for e in log if e.kind == "settle"}
    assert all(e.decided_by_seq == len(packets) for e in log if e.kind == "void")
    assert "frame_winner:1" in settled and "frame_winner:1" not in voided
    assert {"match_winner", "correct_score", "highest_break_side"} <= voided
    assert voided | settled == set(ledger.markets[fixture])  # every market seen: one or other


async def test_until_finished_waits_for_a_held_fixture_and_loses_nothing(
    match: GeneratedMatch, caplog: pytest.LogCaptureFixture
) -> None:
    fixture = match.fixture_id
    ledger = MemoryLedger(holds={fixture: "its summary disagrees"})
    await store(ledger, fixture, match.packets, 1)
    metrics = SettlerMetrics()
    running = settler(ledger, metrics, until_finished=True, idle_check=0.01)  # holds looked at
    task = asyncio.create_task(running.run([fixture], follow_all=False))  # again when idle

    async def looked_again() -> bool:
        return ledger.hold_checks >= 2

    await wait_until(looked_again, timeout=5)
    assert sample(metrics, "ingest_settlement_fixtures_on_hold") == 1
    assert events(ledger, fixture) == [] and not task.done()
    said = [r.getMessage() for r in caplog.records if "waiting for 1 fixture(s) on hold" in
            r.getMessage()]  # fmt: skip
    assert len(said) == 1 and str(fixture) in said[0]  # once, naming it: not silent for ever
    held = [r.getMessage() for r in caplog.records if "is on hold" in r.getMessage()]
    assert len(held) == 1 and "its summary disagrees" in held[0]  # and why, once
    ledger.holds.clear()
    assert await asyncio.wait_for(task, 10) == 0
    assert events(ledger, fixture) == await reference(fixture, match.packets)
    assert sample(metrics, "ingest_settlement_fixtures_on_hold") == 0


async def test_without_until_finished_it_runs_until_stopped(match: GeneratedMatch) -> None:
    ledger, fixture = MemoryLedger(), match.fixture_id
    await store(ledger, fixture, match.packets, 1)
    running = settler(ledger, idle_check=3600)
    task = asyncio.create_task(running.run([fixture], follow_all=False))
    await wait_until(lambda: _settled_to(ledger, fixture, len(match.packets)), timeout=5)
    assert not task.done()
    running.stop()
    assert await asyncio.wait_for(task, 5) == 0


async def test_a_lost_listen_is_renewed_and_what_it_missed_caught_up(
    match: GeneratedMatch,
) -> None:
    ledger, fixture = MemoryLedger(), match.fixture_id
    half = len(match.packets) // 2
    metrics = SettlerMetrics()
    running = settler(ledger, metrics, until_finished=True, idle_check=0.01)
    task = asyncio.create_task(running.run([fixture], follow_all=False))
    await wait_until(lambda: _listening(ledger), timeout=5)
    await store(ledger, fixture, match.packets[:half], 1)
    await wait_until(lambda: _settled_to(ledger, fixture, half), timeout=5)
    first = ledger.subscriptions[0]
    first.lost = True  # the connection went: nothing written now is heard
    await store(ledger, fixture, match.packets[half:], half + 1)
    assert await asyncio.wait_for(task, 10) == 0  # the idle check found it lost, then caught up
    assert first.closed and len(ledger.subscriptions) == 2
    assert sample(metrics, "ingest_settlement_listen_reconnects_total") == 1
    assert events(ledger, fixture) == await reference(fixture, match.packets)


async def test_with_all_a_fixture_first_heard_of_in_a_notification_is_followed(
    match: GeneratedMatch,
) -> None:
    ledger = MemoryLedger()
    registered, new = uuid.uuid4(), match.fixture_id
    await ledger.sink.register([registered])  # known, nothing stored yet: not finished
    running = settler(ledger, until_finished=True, idle_check=3600)
    task = asyncio.create_task(running.run([], follow_all=True))
    await wait_until(lambda: _listening(ledger), timeout=5)
    await store(ledger, new, match.packets, 1)  # a fixture the settler has not seen yet
    await wait_until(lambda: _settled_to(ledger, new, len(match.packets)), timeout=5)
    assert not task.done()  # the registered one has not finished
    await store(ledger, registered, match.packets, 1)
    assert await asyncio.wait_for(task, 10) == 0
    for fixture in (new, registered):
        assert events(ledger, fixture) == await reference(fixture, match.packets)


async def test_a_database_outage_during_a_pass_is_retried(match: GeneratedMatch) -> None:
    ledger, fixture = MemoryLedger(), match.fixture_id
    await store(ledger, fixture, match.packets, 1)
    ledger.fail_settles = [DatabaseUnavailable("gone"), DatabaseUnavailable("still gone")]
    running = settler(ledger, until_finished=True, idle_check=3600)
    assert await asyncio.wait_for(running.run([fixture], follow_all=False), 10) == 0
    assert ledger.fail_settles == [] and ledger.passes == 1
    assert events(ledger, fixture) == await reference(fixture, match.packets)


async def test_a_malformed_notification_is_ignored(match: GeneratedMatch) -> None:
    ledger, fixture = MemoryLedger(), match.fixture_id
    running = settler(ledger, until_finished=True, idle_check=3600)
    task = asyncio.create_task(running.run([fixture], follow_all=False))
    await wait_until(lambda: _listening(ledger), timeout=5)
    ledger.notify("ingest_actions", "not json")
    ledger.notify("ingest_actions", '{"fixture_id": "not a uuid"}')
    await store(ledger, fixture, match.packets, 1)
    assert await asyncio.wait_for(task, 10) == 0
    assert events(ledger, fixture) == await reference(fixture, match.packets)


async def _listening(ledger: MemoryLedger) -> bool:
    return any(not (s.lost or s.closed) for s in ledger.subscriptions)


async def _settled_to(ledger: MemoryLedger, fixture: uuid.UUID, seq: int) -> bool:
    return ledger.checkpoints.get(fixture, 0) >= seq
