"""The worker's orchestration on in-memory twins of its ports (tests/twins.py, held to the same
contract as the real source and store): the batch barrier, gaps, replays, conflicts and lease
balancing, in milliseconds. The end-to-end versions, on a real feed and PostgreSQL, are in
tests/integration."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from ingest.errors import AuthError, DatabaseUnavailable
from ingest.ops.metrics import Metrics
from ingest.settings import RunOptions
from ingest.simulator.generator import GeneratedMatch, MatchSpec, generate_match
from ingest.worker.assignment import AllFixtures, LeasedFixtures, excess
from ingest.worker.progress import RunResult
from ingest.worker.supervisor import Worker
from tests.twins import MemoryLeases, MemorySink, MemorySource


@pytest.fixture(scope="module")
def small_match() -> GeneratedMatch:
    return generate_match(MatchSpec(seed=3, best_of=1, players=("Home", "Away")))


def _lines(match: GeneratedMatch) -> list[bytes]:
    return [json.dumps(p, separators=(",", ":")).encode() for p in match.packets]


def _options(**changes: object) -> RunOptions:
    options = RunOptions(until_finished=True, backoff_initial=0.0, backoff_max=0.0, connect_rate=0)
    for key, value in changes.items():
        setattr(options, key, value)
    return options


async def _run(source: MemorySource, sink: MemorySink, fixtures: list[uuid.UUID],
               **options: object) -> RunResult:  # fmt: skip
    async with asyncio.timeout(10):
        return await Worker(source, sink, _options(**options)).run(fixtures)


async def test_a_match_is_stored_once_and_finishes(small_match: GeneratedMatch) -> None:
    fixture, lines = small_match.fixture_id, _lines(small_match)
    sink = MemorySink()
    result = await _run(MemorySource({fixture: lines}), sink, [fixture])
    assert sink.seqs(fixture) == list(range(1, len(lines) + 1))
    assert result.all_finished and not result.stopped
    assert result.fixtures[fixture].stored == len(lines)
    assert (await sink.fixtures([fixture]))[0].finished


async def test_every_reconnect_starts_after_everything_received_is_committed(
    small_match: GeneratedMatch,
) -> None:
    """The barrier: MAX(seq) is read only once the writer has committed all that came before,
    so each reconnect asks for exactly the next packet (never one already received, never past
    one that is not stored)."""
    fixture, lines = small_match.fixture_id, _lines(small_match)
    sink, source = MemorySink(), MemorySource({fixture: lines}, drop_after=7)
    result = await _run(source, sink, [fixture], batch_size=3)
    starts = [start for _, start in source.connects]
    assert starts == list(range(0, len(lines), 7))
    assert sink.seqs(fixture) == list(range(1, len(lines) + 1))
    assert result.fixtures[fixture].duplicates == 0


async def test_a_gap_is_counted_and_the_rest_stored(small_match: GeneratedMatch) -> None:
    fixture, lines = small_match.fixture_id, _lines(small_match)
    served = [p for p in range(1, len(lines) + 1) if p != 5]
    source = MemorySource({fixture: lines}, script={fixture: [served]})
    sink = MemorySink()
    result = await _run(source, sink, [fixture])
    assert result.fixtures[fixture].gaps == 1
    assert 5 not in sink.seqs(fixture)
    assert len(sink.seqs(fixture)) == len(lines) - 1


async def test_a_replay_is_absorbed_and_a_differing_one_recorded(
    small_match: GeneratedMatch,
) -> None:
    fixture, lines = small_match.fixture_id, list(_lines(small_match))
    changed = json.loads(lines[2])
    changed["traceId"] = "a different copy"
    lines.append(json.dumps(changed).encode())  # position len+1 carries seq 3 again, changed
    served = [1, 2, 3, 4, 2, 3, len(lines), *range(5, len(lines))]
    source = MemorySource({fixture: lines}, script={fixture: [served]})
    sink = MemorySink()
    result = await _run(source, sink, [fixture])
    assert sink.seqs(fixture) == list(range(1, len(lines)))
    assert result.fixtures[fixture].duplicates == 3
    assert sink.conflicts == [(fixture, 3)]
    assert json.loads(sink.rows[(fixture, 3)].payload) == json.loads(lines[2])  # first kept


async def test_the_metrics_count_what_the_run_counts(small_match: GeneratedMatch) -> None:
    fixture, lines = small_match.fixture_id, list(_lines(small_match))
    changed = json.loads(lines[2])
    changed["traceId"] = "a different copy"
    lines.append(json.dumps(changed).encode())
    served = [1, 2, 3, 4, 2, 3, len(lines), *range(5, len(lines))]
    source = MemorySource({fixture: lines}, script={fixture: [served]})
    metrics = Metrics()
    started = time.time()
    async with asyncio.timeout(10):
        result = await Worker(source, MemorySink(), _options(batch_size=3), metrics).run([fixture])
    stats = result.fixtures[fixture]

    def value(name: str) -> float | None:
        return metrics.registry.get_sample_value(name)

    assert value("ingest_packets_stored_total") == stats.stored == len(lines) - 1
    assert value("ingest_duplicates_total") == stats.duplicates == 3
    assert value("ingest_conflicts_total") == stats.conflicts == 1
    assert value("ingest_rejected_total") == 0
    assert value("ingest_lag_seconds_count") == len(served)  # one per packet written
    assert 0 < (value("ingest_lag_seconds_sum") or -1) < len(served) * (time.time() - started)
    assert value("ingest_batch_size_sum") == len(served)
    assert (value("ingest_batch_size_count") or 0) >= len(served) / 3
    assert (value("ingest_commit_seconds_count") or 0) == value("ingest_batch_size_count")
    assert started <= (value("ingest_last_packet_timestamp_seconds") or 0) <= time.time()


def test_excess_hands_over_what_is_held_beyond_the_share() -> None:
    held = [uuid.UUID(int=i) for i in range(10)]
    assert excess(held, share=5, max_fixtures=None) == held[5:]
    assert excess(held, share=9, max_fixtures=None) == []  # one over: not worth moving
    assert excess(held, share=10, max_fixtures=4) == held[4:]


async def test_leases_spread_the_fixtures_when_a_second_worker_joins() -> None:
    sink = MemorySink()
    fixtures = [uuid.UUID(int=i) for i in range(1, 11)]
    await sink.register(fixtures)
    leases = MemoryLeases(sink)
    dropped: dict[str, list[uuid.UUID]] = {"a": [], "b": []}

    async def retry(call):  # type: ignore[no-untyped-def]
        return await call()

    def balancer(name: str) -> LeasedFixtures:
        return LeasedFixtures(leases, _options(worker_id=name), retry, dropped[name].append)

    a, b = balancer("a"), balancer("b")
    assert len(await a.poll(running=set(), done=set())) == 10  # alone: everything
    assert await b.poll(running=set(), done=set()) == []  # joins: nothing free yet
    await a.poll(running=set(a.held), done=set())  # sees b: hands over its excess
    assert len(dropped["a"]) == 5 and len(a.held) == 5
    assert len(await b.poll(running=set(), done=set())) == 5
    assert a.held.isdisjoint(b.held) and a.held | b.held == set(fixtures)

    sink.registry[next(iter(b.held))].owner = "c"  # b's lease expired and was taken
    lost = next(f for f in b.held if sink.registry[f].owner == "c")
    await b.poll(running=set(b.held), done=set())
    assert dropped["b"] == [lost]

    await a.release()
    assert all(sink.registry[f].owner != "a" for f in fixtures)


async def test_without_leases_every_runnable_fixture_is_followed() -> None:
    sink = MemorySink()
    fixtures = [uuid.UUID(int=i) for i in range(1, 4)]
    await sink.register(fixtures)
    sink.registry[fixtures[1]].finished = True

    async def retry(call):  # type: ignore[no-untyped-def]
        return await call()

    assert await AllFixtures(sink, _options(), retry).poll(set(), set()) == [
        fixtures[0],
        fixtures[2],
    ]


async def test_max_runtime_stops_the_run_and_keeps_what_was_received(
    small_match: GeneratedMatch,
) -> None:
    fixture, lines = small_match.fixture_id, _lines(small_match)
    unfinished = lines[:-1]  # the feed stays open after these: a live match
    sink = MemorySink()
    result = await _run(MemorySource({fixture: unfinished}), sink, [fixture], max_runtime=0.2)
    assert result.stopped and not result.all_finished
    assert sink.seqs(fixture) == list(range(1, len(unfinished) + 1))
    assert sink.registry[fixture].state is not None
    assert sink.registry[fixture].state.state == "stopped"


async def test_a_database_outage_is_retried_and_nothing_is_lost(
    small_match: GeneratedMatch,
) -> None:
    fixture, lines = small_match.fixture_id, _lines(small_match)
    sink = MemorySink(fail_writes=[DatabaseUnavailable("the database went away")] * 3)
    result = await _run(MemorySource({fixture: lines}), sink, [fixture])
    assert sink.seqs(fixture) == list(range(1, len(lines) + 1))
    assert result.all_finished and result.fixtures[fixture].duplicates == 0


async def test_a_writer_that_fails_ends_the_run_with_its_error(
    small_match: GeneratedMatch,
) -> None:
    fixture, lines = small_match.fixture_id, _lines(small_match)
    sink = MemorySink(fail_writes=[RuntimeError("a bug in the write path")])
    with pytest.raises(RuntimeError, match="a bug in the write path"):
        await _run(MemorySource({fixture: lines}), sink, [fixture])


async def test_a_second_run_of_a_finished_fixture_keeps_its_stored_state(
    small_match: GeneratedMatch,
) -> None:
    fixture, lines = small_match.fixture_id, _lines(small_match)
    sink, source = MemorySink(), MemorySource({fixture: lines})
    await _run(source, sink, [fixture])
    first = sink.registry[fixture].state
    assert first is not None and first.state == "finished" and first.connects >= 1

    again = await _run(source, sink, [fixture])
    assert again.all_finished
    kept = sink.registry[fixture].state
    assert kept is not None
    # not reset to "starting" with no connects, as if the match had never been streamed
    assert (kept.state, kept.connects, kept.since) == ("finished", first.connects, first.since)


async def test_until_finished_with_the_registry_ends_when_the_rest_is_unknown_to_the_feed(
    small_match: GeneratedMatch,
) -> None:
    """With ids given, a fixture the feed does not know (404) counts as done; with --all it
    kept the registry "unfinished" and the backfill timer's run never ended."""
    known, unknown = small_match.fixture_id, uuid.uuid4()
    sink = MemorySink()
    await sink.register([known, unknown], enable=True)
    source = MemorySource({known: _lines(small_match)}, unknown={unknown})
    async with asyncio.timeout(10):
        result = await Worker(source, sink, _options()).run([], follow_registry=True)
    assert result.fixtures[known].finished
    assert result.fixtures[unknown].state == "not found"
    assert not result.stopped


async def test_a_run_ended_by_a_refused_token_leaves_no_fixture_backing_off(
    small_match: GeneratedMatch,
) -> None:
    fixture = small_match.fixture_id
    sink = MemorySink()
    source = MemorySource({fixture: _lines(small_match)}, refuse_token=True)
    with pytest.raises(AuthError):
        await _run(source, sink, [fixture], auth_retries=1, auth_retry_delay=0.0)
    saved = sink.registry[fixture].state
    assert saved is not None and saved.state == "stopped"  # exit 77: not "backing off" for ever
    assert saved.last_error is not None and "token" in saved.last_error
