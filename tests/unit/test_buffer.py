"""What waits for the database is bounded in bytes, across every writer, and nothing is dropped."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ingest.feed.packet import Action
from ingest.settings import RunOptions
from ingest.worker.progress import FixtureStats
from ingest.worker.writer import Buffer, Writer
from tests.conftest import wait_until
from tests.twins import MemorySink


@dataclass
class GatedSink(MemorySink):
    """A database that is away until ``gate`` is set (writes wait, as through an outage)."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)

    async def write(self, actions, rejected=(), **options):  # type: ignore[no-untyped-def]
        await self.gate.wait()
        return await super().write(actions, rejected, **options)


def packet(seq: int, size: int) -> Action:
    return Action(seq=seq, payload="x" * size, received_at=datetime.now(UTC), finished=False)


async def test_the_writers_stop_taking_frames_at_the_byte_bound_and_lose_none() -> None:
    limit, size = 10_000, 1_000
    sink, buffer = GatedSink(), Buffer(limit)
    fixtures = [uuid.uuid4() for _ in range(4)]
    stats = {f: FixtureStats() for f in fixtures}
    options = RunOptions(max_buffer=limit)
    writers = [Writer(sink, stats, options, buffer=buffer) for _ in range(2)]
    tasks = [asyncio.create_task(w.run()) for w in writers]
    peak = 0

    async def feed(fixture: uuid.UUID, writer: Writer) -> None:
        nonlocal peak
        for seq in range(1, 21):
            await writer.put(fixture, packet(seq, size))
            peak = max(peak, buffer.used)

    feeders = [asyncio.create_task(feed(f, writers[i % 2])) for i, f in enumerate(fixtures)]

    async def full() -> bool:
        return buffer.used + size > limit

    await wait_until(full, timeout=5, interval=0)  # the outage: frames pile up to the bound ...
    for _ in range(50):  # (every feeder gets its turns)
        await asyncio.sleep(0)
    assert not any(f.done() for f in feeders)  # ... and then the fixtures wait to put more
    assert buffer.used <= limit and peak <= limit
    sink.gate.set()  # the database is back: everything drains, in order, nothing dropped
    async with asyncio.timeout(5):
        await asyncio.gather(*feeders)
        for w in writers:
            await w.barrier()
    assert all(sink.seqs(f) == list(range(1, 21)) for f in fixtures)
    assert buffer.used == 0 and peak <= limit
    for w in writers:
        await w.close()
    await asyncio.gather(*tasks)


async def test_a_frame_larger_than_the_bound_passes_alone() -> None:
    buffer = Buffer(100)
    await asyncio.wait_for(buffer.take(1_000), 1)  # nothing else waits: it goes through
    later = asyncio.create_task(buffer.take(10))
    await asyncio.sleep(0)
    assert not later.done()  # the next one waits for it to be committed
    buffer.give(1_000)
    await asyncio.wait_for(later, 1)
    assert buffer.used == 10


async def test_offer_queues_only_what_needs_no_wait_and_counts_nothing_it_refuses() -> None:
    """The live path's put: at the byte bound, or the queue's, it takes nothing (the follower
    then waits in put), and the refused frame is not counted in the buffer."""
    fixture, size = uuid.uuid4(), 1_000
    buffer = Buffer(3 * size)
    writer = Writer(MemorySink(), {fixture: FixtureStats()}, RunOptions(), buffer=buffer)
    offered = [writer.offer(fixture, packet(seq, size)) for seq in range(1, 5)]
    assert offered == [True, True, True, False]
    assert (writer.pending, buffer.used) == (3, 3 * size)

    roomy = Buffer(100 * size)
    short = Writer(MemorySink(), {fixture: FixtureStats()}, RunOptions(queue_size=2), buffer=roomy)
    assert [short.offer(fixture, packet(seq, 10)) for seq in range(1, 4)] == [True, True, False]
    assert (short.pending, roomy.used) == (2, 20)
