"""One fixture's connect / read / resume loop, until its finished packet is stored.

Each connection starts at ``startPosition = MAX(seq)``, read only after the fixture's writer has
committed everything received before (the *barrier*); packets go to that writer in the order
received. A disconnect is retried with backoff (:mod:`ingest.worker.retry`), a refused token a
few times, a frame over the size limit slowly (the fixture is *blocked*); a fixture the feed
does not know ends alone.

With a betting watch (:mod:`ingest.worker.betting`) the follower also leaves, per packet, the
fixture's signs there: whether it came later than ``--max-delay`` after its own timestamp,
whether it ends a connection's catch-up, and a wake-up after the commit of a Status Updated
packet (the provider collecting again, or not). The arrival times are the feed client's (the
:class:`~ingest.worker.ports.Pulse` it is given).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from ingest.errors import AuthError, FeedUnavailable, FixtureNotFound, FrameTooLarge
from ingest.feed.packet import Action, Keying, Rejected
from ingest.feed.vocabulary import STATUS_UPDATED, is_dropped
from ingest.settings import RunOptions
from ingest.worker.betting import BettingWatch
from ingest.worker.ports import Sink, Source, State
from ingest.worker.retry import RateLimiter, backoff_delay
from ingest.worker.tracker import StateTracker
from ingest.worker.writer import Writer

if TYPE_CHECKING:  # metrics are made only when read (--metrics-port, --metrics-file)
    from ingest.ops.metrics import Metrics

log = logging.getLogger(__name__)

Retry = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]


class Follower:
    """Streams one fixture: :meth:`run` returns once it has finished (or is unknown to the feed),
    and raises what should end the whole run (a token refused for good, a database outage
    outlasting its retries)."""

    def __init__(
        self,
        fixture_id: uuid.UUID,
        *,
        source: Source,
        sink: Sink,
        writer: Writer,
        states: StateTracker,
        options: RunOptions,
        limiter: RateLimiter,
        retry: Retry,
        metrics: Metrics | None = None,
        betting: BettingWatch | None = None,
    ) -> None:
        self.fixture_id = fixture_id
        self._source = source
        self._sink = sink
        self._writer = writer
        self._states = states
        self._stats = states[fixture_id]
        self._options = options
        self._limiter = limiter
        self._retry = retry
        self._metrics = metrics
        self._attempt = 0  # reconnects since the last packet: the backoff's exponent
        self._refusals = 0  # of this fixture's token: reset by anything the feed sends
        self._last = 0  # the highest seq received on this connection (or the start)
        self._betting = betting
        self._signs = betting.add(fixture_id) if betting is not None else None

    async def run(self) -> None:
        """Keep the fixture streaming until its finished packet is stored."""
        stats, fixture_id = self._stats, self.fixture_id
        if stats.keying is None:  # decided once per fixture: by what is stored, or the feed
            numbered = await self._retry(lambda: self._sink.is_numbered(fixture_id))
            stats.keying = Keying(numbered)
        while True:
            start = await self._resume_position()
            try:
                if await self._stream_from(start):
                    return
                raise FeedUnavailable("the stream ended before the fixture finished")
            except FixtureNotFound as exc:
                self._states.set(fixture_id, State.NOT_FOUND, str(exc))
                log.error("fixture %s: %s; the other fixtures go on", fixture_id, exc)
                return
            except FrameTooLarge as exc:
                await self._blocked(exc)
            except AuthError as exc:
                await self._refused(exc)
            except FeedUnavailable as exc:
                await self._disconnected(exc)

    async def _resume_position(self) -> int:
        """``MAX(seq)`` once everything received is committed; then wait for a connect slot."""
        await self._writer.barrier()  # MAX(seq) must include everything received
        self._writer.resume(self.fixture_id)
        start: int = await self._retry(lambda: self._sink.max_seq(self.fixture_id))
        await self._limiter.wait()
        self._stats.connects += 1
        if self._stats.state != State.BLOCKED:  # blocked until a packet gets past the frame
            self._states.set(self.fixture_id, State.CONNECTING)
        log.info("fixture %s: connecting at startPosition=%d", self.fixture_id, start)
        self._last = self._stats.last_seq = start
        return start

    async def _stream_from(self, start: int) -> bool:
        """One connection: hand every frame to the writer; True once the finished packet is
        stored, False when the stream ends before it."""
        fixture_id, stats, writer = self.fixture_id, self._stats, self._writer
        numbering = _Numbering(start)
        frames = self._source.stream(
            fixture_id,
            start,
            speed="fast" if self._options.speed == "fast" else None,  # normal: the feed's default
            on_connected=self._connected,
            keying=stats.keying,
            pulse=self._signs.pulse if self._signs is not None else None,
        )
        async with contextlib.aclosing(frames):
            async for frame in frames:
                self._refusals = 0  # whatever it sends, the feed took the token
                if isinstance(frame, Rejected):
                    if self._keep_rejected():
                        await writer.put(fixture_id, frame)
                    else:  # counted in the database, in the transaction of its batch
                        await writer.count_unstored(fixture_id)
                    continue
                self._attempt = 0  # a packet: this connection works (junk does not count)
                if stats.state == State.BLOCKED:
                    self._states.set(fixture_id, State.CONNECTED)
                if numbering.first:  # once a connection: a 1-based replay, a foreign fixture
                    frame = await self._first(frame, numbering)
                frame, new = self._receive(frame, numbering)
                if not writer.offer(fixture_id, frame):  # full (the database away): wait
                    await writer.put(fixture_id, frame)
                if self._signs is not None:
                    self._judge(frame)
                if frame.finished and new:
                    await self._finish(frame)
                    return True
                if frame.finished:
                    log.warning(
                        "fixture %s: seq %d, sent again, says the fixture finished; "
                        "only a new packet can end it: reading on",
                        fixture_id,
                        frame.seq,
                    )
                del frame  # not kept while the next one is awaited (see FeedSource.stream)
        return False

    async def _first(self, frame: Action, numbering: _Numbering) -> Action:
        """The connection's first packet: is it a 1-based feed's replay of the stored packet at
        the start (then every unnumbered packet of the connection is shifted by one)? and is
        it of the fixture subscribed to?"""
        fixture_id = self.fixture_id
        numbering.first = False
        if (
            frame.fixture_seq_num is None
            and numbering.start > 0
            and await self._replayed(numbering.start, frame)
        ):
            numbering.shift = -1
        if frame.packet_fixture_id not in (None, str(fixture_id)):
            log.warning(
                "fixture %s: the feed sends packets of fixture %s; they are stored under the "
                "fixture subscribed to",
                fixture_id,
                frame.packet_fixture_id,
            )
        return frame

    def _receive(self, frame: Action, numbering: _Numbering) -> tuple[Action, bool]:
        """Number a packet (by position, a 1-based feed's replay shifts it), count a gap; the
        packet as numbered, and whether it is beyond everything received so far. No await: it
        runs for every packet."""
        stats = self._stats
        if numbering.shift and frame.fixture_seq_num is None:
            # a new Action: a parsed packet is never changed in place
            frame = dataclasses.replace(frame, seq=frame.seq + numbering.shift)
        stats.received += 1
        last = self._last
        if frame.seq > last + 1:
            stats.gaps += 1
            if self._metrics is not None:
                self._metrics.gaps.inc()
            log.warning(
                "fixture %s: gap: seq %d follows %d (%d missing)",
                self.fixture_id,
                frame.seq,
                last,
                frame.seq - last - 1,
            )
        self._last = stats.last_seq = max(last, frame.seq)
        return frame, frame.seq > last

    async def _replayed(self, start: int, frame: Action) -> bool:
        """Is this first packet, without a fixtureSeqNum, the stored packet at ``start``?

        A 1-based feed answers ``startPosition=N`` with packet N again: numbered by position
        it would be stored as N + 1, a duplicate, and every later packet one off.
        """
        stored = await self._retry(lambda: self._sink.payload_at(self.fixture_id, start))
        if stored is None:
            return False
        try:
            return bool(orjson.loads(stored) == orjson.loads(frame.payload))
        except (orjson.JSONDecodeError, RecursionError):  # nested beyond what Python compares
            return False

    def _keep_rejected(self) -> bool:
        """Store this rejected frame, or only count it? A burst, then a steady trickle, per
        fixture: enough to diagnose, never enough to fill the disk."""
        opts, stats = self._options, self._stats
        now = time.monotonic()
        if stats.rejected_allowance < 0:
            stats.rejected_allowance, stats.rejected_refilled = float(opts.rejected_burst), now
        refill = (now - stats.rejected_refilled) * opts.rejected_per_minute / 60
        stats.rejected_allowance = min(opts.rejected_burst, stats.rejected_allowance + refill)
        stats.rejected_refilled = now
        if stats.rejected_allowance >= 1:
            stats.rejected_allowance -= 1
            stats.rejected_throttled = False
            return True
        if not stats.rejected_throttled:  # the first of a run of them
            stats.rejected_throttled = True
            log.warning(
                "fixture %s: more rejected frames than %d at once (then %g a minute): the rest "
                "are counted (fixtures.rejected_unstored), not stored",
                self.fixture_id,
                opts.rejected_burst,
                opts.rejected_per_minute,
            )
        return False

    def _connected(self) -> None:
        if self._stats.state != State.BLOCKED:
            self._states.set(self.fixture_id, State.CONNECTED)
        if self._betting is not None and self._signs is not None:
            self._betting.connected(self._signs)

    def _judge(self, frame: Action) -> None:
        """What a packet tells the betting watch: late or not, the end of a catch-up, a change
        of collection status to look at once committed (a few attribute reads a packet)."""
        signs, watch = self._signs, self._betting
        assert signs is not None and watch is not None
        if signs.stale:  # a packet after a silence: open again
            watch.wake()
        limit, ts = watch.max_delay, frame.provider_ts
        if limit is not None and ts is not None:
            late = frame.received_at - ts > limit
            if signs.catching_up:
                if not late:  # the first packet of the present: the backlog is through
                    signs.catching_up = False
                    watch.wake()
            elif late is not signs.late:
                signs.late = late
                watch.wake()
        if frame.type_id == STATUS_UPDATED:
            watch.wake_after(self._writer.barrier(), signs)

    async def _finish(self, frame: Action) -> None:
        # its finished packet may be committed before the barrier returns: from now on the
        # fixture is no longer the lease balancer's to hand over (see Worker._poll_registry)
        self._stats.finishing = True
        await self._writer.barrier()
        self._stats.finished = True
        self._states.set(self.fixture_id, State.FINISHED)
        if is_dropped(frame.payload):
            log.warning(
                "fixture %s: the provider dropped the collection (CollectionDropped); the "
                "fixture ends unfinished at seq %d",
                self.fixture_id,
                frame.seq,
            )
        else:
            log.info(
                "fixture %s: finished at seq %d (%d packets this run)",
                self.fixture_id,
                frame.seq,
                self._stats.received,
            )

    async def _blocked(self, exc: FrameTooLarge) -> None:
        # every reconnect from MAX(seq) meets the same frame: say so, where operators look
        # (state, /readyz, metrics), and retry at the slowest pace, in case the provider fixes
        # the packet
        self._states.set(self.fixture_id, State.BLOCKED, str(exc))
        if self._metrics is not None:
            self._metrics.reconnects.labels(exc.reason).inc()
        delay = self._options.backoff_max
        log.error(
            "fixture %s: blocked at seq %d: %s; trying again in %.0f s",
            self.fixture_id,
            self._last,
            exc,
            delay,
        )
        await asyncio.sleep(delay)

    async def _refused(self, exc: AuthError) -> None:
        self._states.set(self.fixture_id, State.BACKING_OFF, str(exc))
        self._refusals += 1
        if self._refusals > self._options.auth_retries:
            raise exc
        delay = self._options.auth_retry_delay * self._refusals
        log.warning(
            "fixture %s: %s; trying again in %.0f s (%d of %d)",
            self.fixture_id,
            exc,
            delay,
            self._refusals,
            self._options.auth_retries,
        )
        await asyncio.sleep(delay)

    async def _disconnected(self, exc: FeedUnavailable) -> None:
        self._states.set(self.fixture_id, State.BACKING_OFF, str(exc))
        if self._metrics is not None:
            self._metrics.reconnects.labels(exc.reason).inc()
        opts = self._options
        delay = backoff_delay(self._attempt, opts.backoff_initial, opts.backoff_max)
        self._attempt += 1
        log.warning(
            "fixture %s: disconnected at seq %d: %s; reconnecting in %.1f s",
            self.fixture_id,
            self._last,
            exc,
            delay,
        )
        await asyncio.sleep(delay)


class _Numbering:
    """Per connection: where it started, whether the first packet is still to come, and the
    shift of a 1-based feed's replay (see :meth:`Follower._replayed`)."""

    __slots__ = ("first", "shift", "start")

    def __init__(self, start: int) -> None:
        self.start = start
        self.first = True
        self.shift = 0
