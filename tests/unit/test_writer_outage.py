"""The writer through a database outage: its first attempt is made outside the retry machinery
(the live path's cost), and a failure of it is still an outage like any other: logged once,
retried with backoff, given up on after ``db_give_up_after``, checked for lost commits after."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from ingest.errors import DatabaseUnavailable, TemporaryError
from ingest.feed.packet import Action
from ingest.settings import RunOptions
from ingest.worker.progress import FixtureStats
from ingest.worker.retry import with_database_retries
from ingest.worker.writer import Writer
from tests.twins import MemorySink


@dataclass
class FlakySink(MemorySink):
    """A database whose next ``failures`` writes fail as unavailable (nothing written)."""

    failures: int = 0
    writes: int = 0
    rewind_checks: int = 0

    async def write(self, actions, rejected=(), **options):  # type: ignore[no-untyped-def]
        self.writes += 1
        if self.failures:
            self.failures -= 1
            raise DatabaseUnavailable("connection refused")
        return await super().write(actions, rejected, **options)

    async def max_seqs(self, fixture_ids):  # type: ignore[no-untyped-def]
        self.rewind_checks += 1
        return await super().max_seqs(fixture_ids)


def packet(seq: int) -> Action:
    return Action(seq=seq, payload=f'{{"n": {seq}}}', received_at=datetime.now(UTC), finished=False)


FAST = RunOptions(backoff_initial=0.001, db_backoff_max=0.002)


async def write_three(sink: FlakySink, options: RunOptions) -> tuple[Writer, uuid.UUID]:
    fixture = uuid.uuid4()
    writer = Writer(sink, {fixture: FixtureStats()}, options)
    task = asyncio.create_task(writer.run())
    try:
        async with asyncio.timeout(5):
            for seq in (1, 2, 3):
                await writer.put(fixture, packet(seq))
                await writer.barrier()
    finally:
        await writer.close()
        await asyncio.wait_for(task, 5)
    return writer, fixture


async def test_a_failed_first_attempt_is_an_outage_retried_until_stored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ingest.worker.retry")
    sink = FlakySink(failures=3)
    writer, fixture = await write_three(sink, FAST)
    assert sink.seqs(fixture) == [1, 2, 3]
    assert sink.writes == 3 + 3  # three failures, then one write per packet
    messages = [r.getMessage() for r in caplog.records]
    assert [m for m in messages if "unavailable, retrying" in m] == [
        "storing 1 packets: database unavailable, retrying: connection refused"
    ]
    assert sum("storing 1 packets: database back after" in m for m in messages) == 1
    assert writer.outage_since is None  # the outage is over ...
    assert sink.rewind_checks == 1  # ... and what survived it was checked before writing on
    assert writer._stats[fixture].stored == 3


async def test_without_an_outage_nothing_is_logged_or_checked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    sink = FlakySink()
    _, fixture = await write_three(sink, FAST)
    assert sink.seqs(fixture) == [1, 2, 3] and sink.writes == 3
    assert not [r for r in caplog.records if r.name == "ingest.worker.retry"]
    assert sink.rewind_checks == 0


async def test_the_failed_first_attempt_counts_towards_giving_up() -> None:
    sink = FlakySink(failures=1_000)
    with pytest.raises(TemporaryError, match="unavailable for 0 s: connection refused"):
        await write_three(sink, RunOptions(backoff_initial=0.001, db_give_up_after=0.0))
    assert 2 <= sink.writes < 1_000  # the first attempt, at least one retry, then it gave up


async def test_a_failure_handed_over_starts_the_outage_and_is_not_repeated() -> None:
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        return "stored"

    options = RunOptions(backoff_initial=0.05, db_backoff_max=0.05)
    outages: list[float | None] = []
    result = await with_database_retries(
        call, options, what="x", on_outage=outages.append, failed=DatabaseUnavailable("down")
    )
    assert result == "stored" and calls == 1  # the retry after the backoff, only
    assert outages[0] is not None and outages[1:] == [None]  # started, then over


async def test_database_retries_are_capped_by_their_own_limit_not_the_reconnects() -> None:
    """After a long outage the next try comes within ``db_backoff_max`` (5 s by default), not
    within the feed reconnects' 30 s: the database is back, the data should be too."""
    assert RunOptions().db_backoff_max == 5.0 and RunOptions().backoff_max == 30.0
    failures = 40  # enough doublings to reach any cap: 0.01 * 2**40 s

    async def call() -> str:
        nonlocal failures
        if failures:
            failures -= 1
            raise DatabaseUnavailable("connection refused")
        return "stored"

    options = RunOptions(backoff_initial=0.01, db_backoff_max=0.01, backoff_max=30.0)
    async with asyncio.timeout(5):  # 40 waits of at most 0.01 s; with the 30 s cap, minutes
        assert await with_database_retries(call, options, what="x") == "stored"
