"""The writer: commits what the fixture tasks received, in order, in batches, and checks after a
database outage that what it committed survived (a failover may lose the last commits).

A fixture always goes to the same writer, which commits batches in the order packets were
received, so ``MAX(seq)`` never runs ahead of a packet that is not stored; a *barrier* through
the queue tells a fixture task that everything it put before is committed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ingest.errors import DatabaseUnavailable, ServerChanged
from ingest.feed.packet import Action, Rejected
from ingest.settings import RunOptions
from ingest.worker.ports import Sink, WriteResult
from ingest.worker.progress import FixtureStats
from ingest.worker.retry import with_database_retries

if TYPE_CHECKING:  # metrics are made only when read (--metrics-port, --metrics-file)
    from ingest.ops.metrics import Metrics

log = logging.getLogger(__name__)

# None: a rejected frame over the rate, to be counted (fixtures.rejected_unstored), not stored
_Item = tuple[uuid.UUID, Action | Rejected | None]


def _size(frame: Action | Rejected | None) -> int:
    """What a frame holds in memory while it waits, near enough: its text (or kept bytes)."""
    if isinstance(frame, Action):
        return len(frame.payload)
    return len(frame.raw) if frame is not None else 0


class Buffer:
    """The bytes received and not yet committed, across every writer, held under ``limit``.

    While the database is away the writers cannot commit, so what the fixtures receive waits
    here; when ``limit`` is reached :meth:`take` blocks, which stops the fixture tasks reading
    their sockets (the same backpressure as a full queue), and nothing is dropped. A frame larger
    than the whole limit is let in alone, when nothing else waits, so that it cannot block for
    ever.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._freed = asyncio.Event()

    async def take(self, size: int) -> None:
        while self.used and self.used + size > self.limit:
            self._freed.clear()
            await self._freed.wait()
        self.used += size

    def give(self, size: int) -> None:
        self.used -= size
        self._freed.set()


class Writer:
    """Commits what the fixture tasks received, in order, in batches.

    A batch is whatever is queued when the writer gets to it, up to ``batch_size``: under load
    batches grow, and a lone packet on an idle socket is committed at once (no timer on the
    latency path), unless ``batch_wait`` holds it that long for others to join it. While the
    database is down the queue fills up and ``put`` blocks, which stops the fixture tasks
    reading their sockets: backpressure instead of unbounded memory.
    """

    def __init__(
        self,
        sink: Sink,
        stats: dict[uuid.UUID, FixtureStats],
        options: RunOptions,
        metrics: Metrics | None = None,
        on_rewind: Callable[[uuid.UUID], None] | None = None,
        buffer: Buffer | None = None,
    ):
        self._sink = sink
        self._buffer = buffer or Buffer(options.max_buffer)
        self._stats = stats
        self._options = options
        self._wait = options.batch_wait
        self._metrics = metrics
        self.outage_since: float | None = None  # monotonic time the database went away
        # Failover: the database that answers after an outage may lack the last commits (a
        # standby promoted under asynchronous replication). What this writer committed is
        # checked against it before anything else is written (see _check_rewind).
        self._committed: dict[uuid.UUID, int] = {}  # fixture -> highest seq committed
        self.suspect = False  # an outage was seen: check what survived before writing
        self._server: object = None  # the database server this writer's batches went to
        self._discarding: set[uuid.UUID] = set()  # rewound: drop their packets until resumed
        self._on_rewind = on_rewind
        self.refetched = 0  # packets the database lost or this writer dropped: fetched again
        self._queue: asyncio.Queue[_Item | asyncio.Future[None] | None] = asyncio.Queue(
            options.queue_size
        )

    def offer(self, fixture_id: uuid.UUID, frame: Action | Rejected) -> bool:
        """Queue the frame if that needs no wait (room in the buffer and the queue): the live
        path, no coroutine made per packet. False: nothing was queued; :meth:`put` it."""
        buffer, queue, size = self._buffer, self._queue, _size(frame)
        if buffer.used + size > buffer.limit or queue.full():
            return False
        buffer.used += size
        queue.put_nowait((fixture_id, frame))
        return True

    async def put(self, fixture_id: uuid.UUID, frame: Action | Rejected) -> None:
        """Queue the frame, waiting while the buffer or the queue is full (backpressure)."""
        if not self.offer(fixture_id, frame):
            await self._buffer.take(_size(frame))
            await self._queue.put((fixture_id, frame))

    async def count_unstored(self, fixture_id: uuid.UUID) -> None:
        """Count a rejected frame that is not stored (over the rate): in the transaction of the
        batch it comes in, exactly once (see :meth:`ingest.worker.ports.Sink.write`)."""
        await self._queue.put((fixture_id, None))

    async def barrier(self) -> None:
        """Return once everything put before this call is committed."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put(done)
        await done

    async def close(self) -> None:
        await self._queue.put(None)

    def resume(self, fixture_id: uuid.UUID) -> None:
        """The fixture reconnects from the stored ``MAX(seq)``: take its packets again."""
        self._discarding.discard(fixture_id)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def run(self) -> None:
        closing = False
        while not closing:
            items: list[_Item] = []
            waiters: list[asyncio.Future[None]] = []
            size = 0  # of the items' frames, given back to the buffer once committed
            entry = await self._queue.get()
            if self._wait and type(entry) is tuple and self._queue.empty():
                # a lone packet (--batch-wait): a statement and a commit per packet is most of
                # the worker's CPU at a live load, so it waits for company; a stop or a barrier
                # taken first never waits, and a batch that has company is never held
                await asyncio.sleep(self._wait)
            while True:
                if entry is None:
                    closing = True
                elif isinstance(entry, asyncio.Future):
                    waiters.append(entry)
                else:
                    items.append(entry)
                    size += _size(entry[1])
                if closing or len(items) >= self._options.batch_size or self._queue.empty():
                    break
                entry = self._queue.get_nowait()
            try:
                if items:
                    await self._flush(items)
                    self._buffer.give(size)
            except BaseException as exc:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(
                            exc if isinstance(exc, Exception) else asyncio.CancelledError()
                        )
                raise
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def _flush(self, items: Sequence[_Item]) -> None:
        # One pass over the batch (at a live load it is mostly a single packet, every few
        # milliseconds: what is done per batch here costs as much as what is done per packet).
        actions: list[tuple[uuid.UUID, Action]] = []
        rejected: list[tuple[uuid.UUID, Rejected]] = []
        unstored: dict[uuid.UUID, int] = {}
        for fixture_id, frame in items:
            if isinstance(frame, Action):
                actions.append((fixture_id, frame))
            elif frame is not None:
                rejected.append((fixture_id, frame))
            else:
                unstored[fixture_id] = unstored.get(fixture_id, 0) + 1
        started = time.monotonic()
        result, actions = await self._write(actions, rejected, unstored)
        committed = self._committed
        received: dict[uuid.UUID, int] = {}
        for fixture_id, action in actions:
            received[fixture_id] = received.get(fixture_id, 0) + 1
            if action.seq > committed.get(fixture_id, 0):
                committed[fixture_id] = action.seq
        if self._metrics is not None:
            self._observe(items, actions, result, time.monotonic() - started)
            if unstored:
                self._metrics.rejected_unstored.inc(sum(unstored.values()))
        for fixture_id, count in unstored.items():
            self._stats[fixture_id].rejected_unstored += count
        for fixture_id, count in received.items():
            stats = self._stats[fixture_id]
            inserted = result.inserted.get(fixture_id, 0)
            unstorable = result.unstorable.get(fixture_id, 0)
            stats.stored += inserted
            stats.rejected += unstorable
            stats.duplicates += count - inserted - unstorable
        for fixture_id, frame in rejected:
            self._stats[fixture_id].rejected += 1
            log.warning("fixture %s: rejected a frame: %s", fixture_id, frame.reason)
        for fixture_id, seq in result.conflicts:
            self._stats[fixture_id].conflicts += 1
            log.warning(
                "fixture %s: seq %d arrived again with a different payload; the stored row is "
                "kept and the newcomer is recorded in action_conflicts",
                fixture_id,
                seq,
            )

    def _observe(
        self,
        items: Sequence[_Item],
        actions: Sequence[tuple[uuid.UUID, Action]],
        result: WriteResult,
        seconds: float,
    ) -> None:
        m = self._metrics
        assert m is not None
        inserted = sum(result.inserted.values())
        duplicates = len(actions) - inserted - sum(result.unstorable.values())
        # a counter's inc(0) changes nothing: skipped (each call takes a lock)
        if inserted:
            m.packets_stored.inc(inserted)
        if duplicates:
            m.duplicates.inc(duplicates)
        if result.rejected:
            m.rejected.inc(result.rejected)
        if result.conflicts:
            m.conflicts.inc(len(result.conflicts))
        m.batch_size.observe(len(items))
        m.commit_seconds.observe(seconds)
        if actions:
            now = time.time()
            for _, action in actions:
                m.lag_seconds.observe(now - action.received_at.timestamp())
            m.last_packet.set(now)

    async def _write(
        self,
        actions: list[tuple[uuid.UUID, Action]],
        rejected: Sequence[tuple[uuid.UUID, Rejected]],
        unstored: dict[uuid.UUID, int],
    ) -> tuple[WriteResult, list[tuple[uuid.UUID, Action]]]:
        """Write (retrying through outages); returns the result and the actions written."""
        # one token for every attempt: an attempt whose commit's reply was lost, retried, must
        # not store or count the rejected frames twice (the packets are keyed by their seq)
        batch = uuid.uuid4() if rejected or unstored else None
        # The first attempt is made here, outside the retry machinery: a live batch (mostly one
        # packet) then costs no closures, no message and no extra coroutine; an outage hands
        # the failure over to with_database_retries, which goes on from it.
        try:
            return await self._attempt(actions, rejected, unstored, batch)
        except DatabaseUnavailable as exc:
            failed = exc
        return await with_database_retries(
            functools.partial(self._attempt, actions, rejected, unstored, batch),
            self._options,
            what=f"storing {len(actions)} packets",
            on_outage=self._outage,
            failed=failed,
        )

    async def _attempt(
        self,
        actions: list[tuple[uuid.UUID, Action]],
        rejected: Sequence[tuple[uuid.UUID, Rejected]],
        unstored: dict[uuid.UUID, int],
        batch: uuid.UUID | None,
    ) -> tuple[WriteResult, list[tuple[uuid.UUID, Action]]]:
        if self.suspect:
            await self._check_rewind()
        kept = actions
        if self._discarding:
            kept = [(f, a) for f, a in actions if f not in self._discarding]
            self.refetched += len(actions) - len(kept)
        try:
            result = await self._sink.write(
                kept, rejected, unstored=unstored, batch=batch, server=self._server
            )
        except ServerChanged as exc:  # nothing written: check the new server, then retry
            self._server, self.suspect = exc.server, True
            log.warning("%s", exc)
            raise
        self._server = result.server
        return result, kept

    def _outage(self, since: float | None) -> None:
        self.outage_since = since
        if since is not None:
            self.suspect = True

    async def _check_rewind(self) -> None:
        """After an outage: did the database lose commits (a failover)? Those fixtures restart.

        With asynchronous replication a promoted standby may lack the last transactions the old
        primary acknowledged. Writing on would leave a hole below the new packets, so instead the
        fixture's queued packets are dropped and it reconnects from ``MAX(seq)`` as stored now:
        the lost packets are simply fetched again from the feed.
        """
        stored = await self._sink.max_seqs(list(self._committed))
        self.suspect = False
        for fixture_id, committed in self._committed.items():
            now = stored.get(fixture_id, 0)
            if now >= committed:
                continue
            log.warning(
                "fixture %s: the database no longer has seq %d-%d that were committed before "
                "the outage (a failover to a standby that had not received them); fetching them "
                "again from the feed",
                fixture_id,
                now + 1,
                committed,
            )
            self.refetched += committed - now
            self._committed[fixture_id] = now
            self._discarding.add(fixture_id)
            if self._on_rewind is not None:
                self._on_rewind(fixture_id)
