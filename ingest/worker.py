"""Orchestration: one task per fixture reading its feed, writers committing batches.

Exactly-once rests on three rules kept here:

1. Every fixture (re)connects at ``startPosition = MAX(seq)``, asked of the store only after
   everything received so far is committed (a *barrier* through the writer's queue).
2. A fixture always goes to the same writer, which commits batches in the order packets were
   received, so ``MAX(seq)`` never runs ahead of a packet that is not stored. (Several writers
   let batches of different fixtures be in flight at once.)
3. Writes are idempotent, so whatever arrives twice is absorbed.

This module knows neither aiohttp nor SQLAlchemy: it talks to :class:`ingest.ports.Source` and
:class:`ingest.ports.Sink`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

import orjson

from ingest.config import RunOptions
from ingest.errors import (
    AuthError,
    FeedUnavailable,
    FixtureNotFound,
    FrameTooLarge,
    IngestError,
)
from ingest.leases import AllFixtures, Balancer, LeasedFixtures
from ingest.metrics import Metrics
from ingest.packet import Action, Keying, Rejected
from ingest.ports import FixtureState, Leases, Reconciler, Sink, Source
from ingest.retry import RateLimiter, backoff_delay, with_database_retries
from ingest.stats import FixtureStats, RunResult
from ingest.writer import Writer

log = logging.getLogger(__name__)

T = TypeVar("T")


def _done_task() -> asyncio.Task[None]:
    async def nothing() -> None:
        return None

    return asyncio.create_task(nothing())


class _Stopped(Exception):
    """A stop was asked for while the run waited on something else."""


class Worker:
    """Streams fixtures from a :class:`Source` into a :class:`Sink` until done or stopped."""

    def __init__(
        self,
        source: Source,
        sink: Sink,
        options: RunOptions | None = None,
        metrics: Metrics | None = None,
        leases: Leases | None = None,
        reconciler: Reconciler | None = None,
    ) -> None:
        self._source = source
        # compares the provider's fixtureSummary with our views, off the write path
        self._reconciler = reconciler
        self._reconciled: dict[uuid.UUID, int] = {}  # fixture -> packets stored when compared
        self._disagreeing: set[uuid.UUID] = set()
        self._sink = sink
        self._options = options or RunOptions()
        # with leases, the registry is shared with other workers
        # which fixtures are this worker's: with leases, its share of a registry others share
        self._balancer: Balancer = (
            LeasedFixtures(leases, self._options, self._db_retry, self._drop)
            if leases is not None
            else AllFixtures(sink, self._options, self._db_retry)
        )
        self._metrics = metrics
        self._stop = asyncio.Event()
        self._stats: dict[uuid.UUID, FixtureStats] = {}
        self._writers = [
            Writer(sink, self._stats, self._options, metrics, on_rewind=self._restart)
            for _ in range(max(1, self._options.writers))
        ]
        self._limiter = RateLimiter(self._options.connect_rate)
        self._followers: dict[uuid.UUID, asyncio.Task[None]] = {}

    def stop(self) -> None:
        """Ask the run to end: flush what was received, close the sockets, return."""
        self._stop.set()

    async def run(
        self, fixture_ids: Sequence[uuid.UUID], *, follow_registry: bool = False
    ) -> RunResult:
        """Stream ``fixture_ids`` and, with ``follow_registry``, the registry's enabled and
        unfinished fixtures, looked up again every ``registry_poll`` seconds: all of them, or
        with leases this worker's fair share of them (renewed every third of the lease TTL)."""
        opts = self._options
        result = RunResult(fixtures=self._stats)
        writers = [asyncio.create_task(w.run(), name="writer") for w in self._writers]
        saver = asyncio.create_task(self._save_states_forever(), name="state saver")
        reconciler = asyncio.create_task(self._reconcile_forever(), name="reconciler")
        stop_wait = asyncio.create_task(self._stop.wait(), name="stop")
        deadline = None if opts.max_runtime is None else time.monotonic() + opts.max_runtime
        poll_every = self._balancer.poll_every
        next_poll = time.monotonic() + poll_every
        next_progress = time.monotonic() + opts.progress_interval
        error: BaseException | None = None
        try:
            await self._or_stop(self._start([*fixture_ids]))
            if follow_registry:
                await self._or_stop(self._poll_registry())
            idle_logged = False
            while True:
                running = {t for t in self._followers.values() if not t.done()}
                if (
                    not running
                    and opts.until_finished
                    and not await self._or_stop(self._registry_has_work(follow_registry))
                ):
                    log.info("every fixture has finished")
                    break
                if not running and not idle_logged and not follow_registry:
                    log.info("every fixture has finished; waiting to be stopped")
                    idle_logged = True
                wake = min(next_progress, next_poll if follow_registry else next_progress)
                if deadline is not None:
                    wake = min(wake, deadline)
                done, _ = await asyncio.wait(
                    {*running, *writers, stop_wait},
                    timeout=max(wake - time.monotonic(), 0),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if stop_wait in done:
                    log.info("stopping: flushing what was received")
                    result.stopped = True
                    break
                stopped_writers = [w for w in writers if w in done]
                if stopped_writers:
                    error = stopped_writers[0].exception() or RuntimeError("a writer stopped")
                    break
                failed = [
                    t.exception()
                    for t in done
                    if t is not stop_wait and not t.cancelled() and t.exception()
                ]  # a cancelled follower was restarted (see _restart)
                if failed:
                    error = failed[0]
                    break
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    log.info("--max-runtime reached: stopping")
                    result.stopped = True
                    break
                if follow_registry and now >= next_poll:
                    next_poll = now + poll_every
                    await self._or_stop(self._poll_registry())
                if now >= next_progress:
                    next_progress = now + opts.progress_interval
                    self._log_progress()
        except _Stopped:
            log.info("stopping: flushing what was received")
            result.stopped = True
        finally:
            stop_wait.cancel()
            saver.cancel()
            reconciler.cancel()
            interrupted = [f for f, t in self._followers.items() if not t.done()]
            followers = [self._followers[f] for f in interrupted]
            for task in followers:
                task.cancel()
            await asyncio.gather(*followers, stop_wait, saver, reconciler, return_exceptions=True)
            for fixture_id in interrupted:
                self._set_state(fixture_id, "stopped")
            await asyncio.gather(
                *(self._shutdown_writer(w, t) for w, t in zip(self._writers, writers, strict=True))
            )
            with contextlib.suppress(Exception):
                async with asyncio.timeout(0.5):
                    await self._save_states()
            with contextlib.suppress(Exception):  # the last packets' summary, once
                async with asyncio.timeout(1.0):
                    await self._reconcile()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(0.5):
                    await self._balancer.release()
        if error is not None:
            raise error
        return result

    async def _replayed(self, fixture_id: uuid.UUID, start: int, frame: Action) -> bool:
        """Is this first packet, without a fixtureSeqNum, the stored packet at ``start``?

        A 1-based feed answers ``startPosition=N`` with packet N again: numbered by position
        it would be stored as N + 1, a duplicate, and every later packet one off.
        """
        stored = await self._db_retry(lambda: self._sink.payload_at(fixture_id, start))
        if stored is None:
            return False
        try:
            return bool(orjson.loads(stored) == orjson.loads(frame.payload))
        except (orjson.JSONDecodeError, RecursionError):  # nested beyond what Python compares
            return False

    async def _or_stop(self, work: Awaitable[T]) -> T:
        """Await ``work`` unless a stop comes first (then raise :class:`_Stopped`): registry
        calls retry through database outages, and a SIGTERM must not wait for them."""
        task = asyncio.ensure_future(work)
        stop = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise _Stopped
        return task.result()

    async def _registry_has_work(self, follow_registry: bool) -> bool:
        """With the registry: are some fixtures still unfinished (perhaps streamed by others)?"""
        if not follow_registry:
            return False
        return bool(await self._db_retry(self._sink.runnable_fixtures))

    async def _poll_registry(self) -> None:
        running = {f for f, t in self._followers.items() if not t.done()}
        done = {f for f, t in self._followers.items() if t.done()}
        await self._start(await self._balancer.poll(running, done))

    def _drop(self, fixture_id: uuid.UUID) -> None:
        """Stop streaming a fixture now (its packets already received are still stored)."""
        task = self._followers.pop(fixture_id, None)
        if task is not None:
            task.cancel()
        self._set_state(fixture_id, "released")

    def _restart(self, fixture_id: uuid.UUID) -> None:
        """Reconnect a fixture from the stored ``MAX(seq)`` (the database lost its last packets)."""
        task = self._followers.get(fixture_id)
        if task is None:
            return  # no longer ours (a lease handed over)
        task.cancel()  # a finished one too: its finished packet may be among those lost
        self._stats[fixture_id].finished = False
        self._followers[fixture_id] = asyncio.create_task(
            self._follow(fixture_id), name=f"fixture {fixture_id}"
        )

    @property
    def refetched(self) -> int:
        """Packets fetched again because a failover lost them (or they were queued behind)."""
        return sum(w.refetched for w in self._writers)

    async def _start(self, fixture_ids: Sequence[uuid.UUID]) -> None:
        """Start following fixtures not yet followed; finished ones are not reconnected."""
        new = [f for f in dict.fromkeys(fixture_ids) if f not in self._followers]
        if not new:
            return
        await self._db_retry(lambda: self._sink.register(new))
        rows = {r.fixture_id: r for r in await self._db_retry(lambda: self._sink.fixtures(new))}
        for fixture_id in new:
            stats = self._stats.setdefault(fixture_id, FixtureStats())
            row = rows.get(fixture_id)
            if row is not None and row.finished:
                stats.finished = True
                log.info(
                    "fixture %s: already finished (%d packets stored); not reconnecting",
                    fixture_id,
                    row.packets,
                )
                self._followers[fixture_id] = _done_task()
                continue
            self._followers[fixture_id] = asyncio.create_task(
                self._follow(fixture_id), name=f"fixture {fixture_id}"
            )

    @property
    def stats(self) -> dict[uuid.UUID, FixtureStats]:
        return self._stats

    def health(self) -> tuple[bool, str]:
        """Healthy unless a writer has been unable to commit for a minute, or a fixture has been
        unable to connect for two minutes (what the systemd watchdog hears: a restart may help)."""
        now = time.monotonic()
        for writer in self._writers:
            if writer.outage_since is not None and now - writer.outage_since > 60:
                return (
                    False,
                    f"the database has been unavailable for {now - writer.outage_since:.0f} s",
                )
        wall = time.time()
        for fixture_id, stats in self._stats.items():
            if stats.state == "backing off" and wall - stats.state_since > 120:
                return False, f"fixture {fixture_id} cannot connect: {stats.last_error}"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        """:meth:`health`, and no fixture blocked by a frame over the size limit (for /readyz:
        a restart would not help a blocked fixture, so the watchdog does not hear of it)."""
        for fixture_id, stats in self._stats.items():
            if stats.state == "blocked":
                return False, f"fixture {fixture_id} is blocked: {stats.last_error}"
        return self.health()

    def _set_state(self, fixture_id: uuid.UUID, state: str, error: str | None = None) -> None:
        stats = self._stats[fixture_id]
        if self._metrics is not None and (stats.state == "connected") != (state == "connected"):
            self._metrics.connected.inc(1 if state == "connected" else -1)
        if self._metrics is not None and (stats.state == "blocked") != (state == "blocked"):
            self._metrics.blocked.inc(1 if state == "blocked" else -1)
        if state != stats.state:
            stats.state, stats.state_since = state, time.time()
        if error is not None:
            stats.last_error = error
        stats.state_saved = False

    async def _save_states(self) -> None:
        changed = [f for f, s in self._stats.items() if not s.state_saved]
        if not changed:
            return
        for fixture_id in changed:
            self._stats[fixture_id].state_saved = True
        states = [
            FixtureState(
                fixture_id=f,
                state=self._stats[f].state,
                since=datetime.fromtimestamp(self._stats[f].state_since, UTC),
                connects=self._stats[f].connects,
                last_error=self._stats[f].last_error,
                rejected_unstored=self._stats[f].rejected_unstored - self._stats[f].unstored_saved,
            )
            for f in changed
        ]
        try:
            await self._sink.save_states(states)
        except BaseException:  # an error, or cancelled at shutdown: try again next time
            for fixture_id in changed:
                self._stats[fixture_id].state_saved = False
            raise
        for state in states:
            self._stats[state.fixture_id].unstored_saved += state.rejected_unstored

    async def _save_states_forever(self) -> None:
        while True:
            await asyncio.sleep(self._options.state_interval)
            try:
                await self._save_states()
            except IngestError as exc:  # states are for people: never worth stopping for
                log.debug("fixture states not saved: %s", exc)

    async def _reconcile(self) -> None:
        """Compare the fixtures that stored packets since the last look with the provider's
        summary; warn once when a fixture starts to disagree and once when it agrees again."""
        if self._reconciler is None:
            return
        changed = [f for f, s in self._stats.items() if self._reconciled.get(f) != s.stored]
        if not changed:
            return
        stored = {f: self._stats[f].stored for f in changed}
        found = await self._reconciler.fixtures_in_disagreement(changed)
        for fixture_id in changed:
            self._reconciled[fixture_id] = stored[fixture_id]
            rows = found.get(fixture_id)
            if rows and fixture_id not in self._disagreeing:
                self._disagreeing.add(fixture_id)
                log.warning(
                    "fixture %s: the provider's fixtureSummary at seq %d disagrees with our "
                    "views: %s; settlement holds this fixture until they agree",
                    fixture_id,
                    rows[0]["seq"],
                    "; ".join(
                        f"{r['field']} ours {r['ours']} provider {r['provider']}" for r in rows
                    ),
                )
            elif not rows and fixture_id in self._disagreeing:
                self._disagreeing.discard(fixture_id)
                log.warning(
                    "fixture %s: the provider's fixtureSummary agrees with our views again "
                    "(seq %d)",
                    fixture_id,
                    self._stats[fixture_id].last_seq,
                )
        if self._metrics is not None:
            self._metrics.summary_disagreements.set(len(self._disagreeing))

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self._options.summary_interval)
            try:
                await self._reconcile()
            except IngestError as exc:  # an alarm, not the write path: never worth stopping for
                log.debug("summaries not compared: %s", exc)

    @property
    def disagreeing(self) -> set[uuid.UUID]:
        """Fixtures whose latest summary disagreed with our views at the last look."""
        return set(self._disagreeing)

    def _log_progress(self) -> None:
        for fixture_id, task in self._followers.items():
            if task.done():
                continue
            stats = self._stats[fixture_id]
            log.info(
                "fixture %s: progress: seq %d, %d packets received, %d stored, %d duplicates, "
                "%d rejected (%d of them over the rate, counted only), %d connects",
                fixture_id,
                stats.last_seq,
                stats.received,
                stats.stored,
                stats.duplicates,
                stats.rejected + stats.rejected_unstored,
                stats.rejected_unstored,
                stats.connects,
            )

    def _writer_for(self, fixture_id: uuid.UUID) -> Writer:
        return self._writers[fixture_id.int % len(self._writers)]

    async def _shutdown_writer(self, queue: Writer, writer: asyncio.Task[None]) -> None:
        if writer.done():
            return
        try:
            async with asyncio.timeout(self._options.shutdown_timeout):
                await queue.close()
                await writer
        except TimeoutError:
            log.warning(
                "could not store %d received packets in time; they are not lost: the next run "
                "fetches them again from the stored MAX(seq)",
                queue.pending,
            )
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer

    async def _follow(self, fixture_id: uuid.UUID) -> None:
        """Keep one fixture streaming until its finished packet is stored."""
        stats = self._stats[fixture_id]
        writer = self._writer_for(fixture_id)
        attempt = 0
        refusals = 0  # of this fixture's token: reset by any packet
        expected_id = str(fixture_id)
        if stats.keying is None:  # decided once per fixture: by what is stored, or the feed
            numbered = await self._db_retry(lambda: self._sink.is_numbered(fixture_id))
            stats.keying = Keying(numbered)
        while True:
            await writer.barrier()  # MAX(seq) must include everything received
            writer.resume(fixture_id)
            start = await self._db_retry(lambda: self._sink.max_seq(fixture_id))
            await self._limiter.wait()
            stats.connects += 1
            if stats.state != "blocked":  # blocked until a packet gets past the frame
                self._set_state(fixture_id, "connecting")
            log.info("fixture %s: connecting at startPosition=%d", fixture_id, start)
            last = stats.last_seq = start
            shift = 0  # -1 when a 1-based feed replays the last stored packet (see _replayed)
            first = True
            try:
                frames = self._source.stream(
                    fixture_id,
                    start,
                    speed=self._options.speed,
                    on_connected=lambda: self._connected(fixture_id),
                    keying=stats.keying,
                )
                async with contextlib.aclosing(frames):
                    async for frame in frames:
                        refusals = 0  # whatever it sends, the feed took the token
                        if isinstance(frame, Rejected):
                            if self._keep_rejected(fixture_id):
                                await writer.put(fixture_id, frame)
                            continue
                        attempt = 0  # a packet: this connection works (junk does not count)
                        if stats.state == "blocked":
                            self._set_state(fixture_id, "connected")
                        if frame.fixture_seq_num is None:
                            if (
                                first
                                and start > 0
                                and await self._replayed(fixture_id, start, frame)
                            ):
                                shift = -1
                            frame.seq += shift
                        if first and frame.packet_fixture_id not in (None, expected_id):
                            log.warning(
                                "fixture %s: the feed sends packets of fixture %s; they are "
                                "stored under the fixture subscribed to",
                                fixture_id,
                                frame.packet_fixture_id,
                            )
                        first = False
                        stats.received += 1
                        new = frame.seq > last
                        if frame.seq > last + 1:
                            stats.gaps += 1
                            if self._metrics is not None:
                                self._metrics.gaps.inc()
                            log.warning(
                                "fixture %s: gap: seq %d follows %d (%d missing)",
                                fixture_id,
                                frame.seq,
                                last,
                                frame.seq - last - 1,
                            )
                        last = stats.last_seq = max(last, frame.seq)
                        await writer.put(fixture_id, frame)
                        if frame.finished and new:
                            await self._finish(fixture_id, frame)
                            return
                        if frame.finished:
                            log.warning(
                                "fixture %s: seq %d, sent again, says the fixture finished; "
                                "only a new packet can end it: reading on",
                                fixture_id,
                                frame.seq,
                            )
                raise FeedUnavailable("the stream ended before the fixture finished")
            except FixtureNotFound as exc:
                self._set_state(fixture_id, "not found", str(exc))
                log.error("fixture %s: %s; the other fixtures go on", fixture_id, exc)
                return
            except FrameTooLarge as exc:
                # every reconnect from MAX(seq) meets the same frame: say so, where operators
                # look (state, /readyz, metrics), and retry at the slowest pace, in case the
                # provider fixes the packet
                self._set_state(fixture_id, "blocked", str(exc))
                if self._metrics is not None:
                    self._metrics.reconnects.labels(exc.reason).inc()
                delay = self._options.backoff_max
                log.error(
                    "fixture %s: blocked at seq %d: %s; trying again in %.0f s",
                    fixture_id,
                    last,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
            except AuthError as exc:
                self._set_state(fixture_id, "backing off", str(exc))
                refusals += 1
                if refusals > self._options.auth_retries:
                    raise
                delay = self._options.auth_retry_delay * refusals
                log.warning(
                    "fixture %s: %s; trying again in %.0f s (%d of %d)",
                    fixture_id,
                    exc,
                    delay,
                    refusals,
                    self._options.auth_retries,
                )
                await asyncio.sleep(delay)
            except FeedUnavailable as exc:
                self._set_state(fixture_id, "backing off", str(exc))
                if self._metrics is not None:
                    self._metrics.reconnects.labels(exc.reason).inc()
                delay = backoff_delay(
                    attempt, self._options.backoff_initial, self._options.backoff_max
                )
                attempt += 1
                log.warning(
                    "fixture %s: disconnected at seq %d: %s; reconnecting in %.1f s",
                    fixture_id,
                    last,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    def _keep_rejected(self, fixture_id: uuid.UUID) -> bool:
        """Store this rejected frame, or only count it? A burst, then a steady trickle, per
        fixture: enough to diagnose, never enough to fill the disk."""
        opts, stats = self._options, self._stats[fixture_id]
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
                fixture_id,
                opts.rejected_burst,
                opts.rejected_per_minute,
            )
        stats.rejected_unstored += 1
        stats.state_saved = False
        if self._metrics is not None:
            self._metrics.rejected_unstored.inc()
        return False

    def _connected(self, fixture_id: uuid.UUID) -> None:
        if self._stats[fixture_id].state != "blocked":
            self._set_state(fixture_id, "connected")

    async def _finish(self, fixture_id: uuid.UUID, frame: Action) -> None:
        stats = self._stats[fixture_id]
        await self._writer_for(fixture_id).barrier()
        stats.finished = True
        self._set_state(fixture_id, "finished")
        if '"CollectionDropped"' in frame.payload:
            log.warning(
                "fixture %s: the provider dropped the collection (CollectionDropped); the "
                "fixture ends unfinished at seq %d",
                fixture_id,
                frame.seq,
            )
        else:
            log.info(
                "fixture %s: finished at seq %d (%d packets this run)",
                fixture_id,
                frame.seq,
                stats.received,
            )

    async def _db_retry(self, call: Callable[[], Awaitable[T]]) -> T:
        def outage(since: float | None) -> None:
            if since is not None:  # whichever call sees it: every writer checks before writing
                for writer in self._writers:
                    writer.suspect = True

        return await with_database_retries(
            call, self._options, what="the registry", on_outage=outage
        )
