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
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import orjson

from ingest.errors import (
    AuthError,
    DatabaseUnavailable,
    FeedUnavailable,
    FixtureNotFound,
    FrameTooLarge,
    IngestError,
    TemporaryError,
)
from ingest.metrics import Metrics
from ingest.packet import Action, Keying, Rejected
from ingest.ports import FixtureState, Leases, Reconciler, Sink, Source, WriteResult

log = logging.getLogger(__name__)

_Item = tuple[uuid.UUID, Action | Rejected]
T = TypeVar("T")


@dataclass
class RunOptions:
    until_finished: bool = False
    max_runtime: float | None = None
    speed: str | None = None
    batch_size: int = 500
    writers: int = 2  # batches in flight at once (each fixture always uses the same writer)
    queue_size: int = 10_000
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    db_give_up_after: float = 600.0  # a database outage longer than this ends the run (exit 75)
    shutdown_timeout: float = 3.0  # how long a stop may spend flushing (all steps: < 5 s)
    connect_rate: float = 4.0  # connection attempts per second, all fixtures together (0: no limit)
    auth_retries: int = 2  # a refused token is tried again this many times, spaced out ...
    auth_retry_delay: float = 2.0  # ... by this many seconds times the attempt number
    registry_poll: float = 10.0  # --all: how often to look for new fixtures
    progress_interval: float = 60.0  # how often to log a progress line per fixture
    state_interval: float = 2.0  # how often changed fixture states are saved
    worker_id: str = "worker"  # the lease owner name, with --all (host:pid by default)
    lease_ttl: float = 30.0  # a lease lasts this long unless renewed (every third of it)
    max_fixtures: int | None = None  # with --all: claim at most this many
    rejected_burst: int = 100  # rejected frames stored per fixture at once ...
    rejected_per_minute: float = 1.0  # ... then this many a minute; the rest are only counted
    summary_interval: float = 10.0  # how often fixtures with new packets are reconciled


@dataclass
class FixtureStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejected_unstored: int = 0  # over the rate: counted, not stored
    unstored_saved: int = 0  # of rejected_unstored, how many the registry has counted
    rejected_allowance: float = -1.0  # stored rejected frames still allowed (-1: a full burst)
    rejected_refilled: float = 0.0  # monotonic time of the allowance's last refill
    rejected_throttled: bool = False  # the last rejected frame was only counted
    keying: Keying | None = None  # by fixtureSeqNum or by position: decided once
    conflicts: int = 0
    gaps: int = 0
    connects: int = 0
    last_seq: int = 0
    finished: bool = False
    # starting, connecting, connected, backing off, blocked (a frame over the size limit),
    # finished, not found, stopped, released (to another worker)
    state: str = "starting"
    state_since: float = field(default_factory=time.time)
    last_error: str | None = None
    state_saved: bool = False


@dataclass
class RunResult:
    fixtures: dict[uuid.UUID, FixtureStats] = field(default_factory=dict)
    stopped: bool = False  # by a signal or --max-runtime, rather than by every fixture finishing

    @property
    def all_finished(self) -> bool:
        return all(s.finished for s in self.fixtures.values())


def _done_task() -> asyncio.Task[None]:
    async def nothing() -> None:
        return None

    return asyncio.create_task(nothing())


async def with_database_retries(
    call: Callable[[], Awaitable[T]],
    options: RunOptions,
    *,
    what: str,
    on_outage: Callable[[float | None], None] | None = None,
) -> T:
    """Call, retrying with backoff while the database is unavailable; give up (exit 75) after
    ``db_give_up_after`` seconds. ``on_outage`` hears when an outage starts (monotonic time)
    and ends (None)."""
    attempt = 0
    started: float | None = None
    while True:
        try:
            result = await call()
        except DatabaseUnavailable as exc:
            now = time.monotonic()
            if started is None:
                started = now
                log.warning("%s: database unavailable, retrying: %s", what, exc)
                if on_outage is not None:
                    on_outage(now)
            elif now - started > options.db_give_up_after:
                raise TemporaryError(
                    f"the database has been unavailable for {now - started:.0f} s: {exc}"
                ) from None
            await asyncio.sleep(
                backoff_delay(attempt, options.backoff_initial, options.backoff_max)
            )
            attempt += 1
            continue
        if started is not None:
            log.info("%s: database back after %.1f s", what, time.monotonic() - started)
            if on_outage is not None:
                on_outage(None)
        return result


def backoff_delay(attempt: int, initial: float, cap: float) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, initial * 2**attempt)]."""
    return random.uniform(0, min(cap, initial * (2 ** min(attempt, 30))))


class Writer:
    """Commits what the fixture tasks received, in order, in batches.

    A batch is whatever is queued when the writer gets to it, up to ``batch_size``: under load
    batches grow, and a lone packet on an idle socket is committed at once (no timer on the
    latency path). While the database is down the queue fills up and ``put`` blocks, which stops
    the fixture tasks reading their sockets: backpressure instead of unbounded memory.
    """

    def __init__(
        self,
        sink: Sink,
        stats: dict[uuid.UUID, FixtureStats],
        options: RunOptions,
        metrics: Metrics | None = None,
        on_rewind: Callable[[uuid.UUID], None] | None = None,
    ):
        self._sink = sink
        self._stats = stats
        self._options = options
        self._metrics = metrics
        self.outage_since: float | None = None  # monotonic time the database went away
        # Failover: the database that answers after an outage may lack the last commits (a
        # standby promoted under asynchronous replication). What this writer committed is
        # checked against it before anything else is written (see _check_rewind).
        self._committed: dict[uuid.UUID, int] = {}  # fixture -> highest seq committed
        self.suspect = False  # an outage was seen: check what survived before writing
        self._discarding: set[uuid.UUID] = set()  # rewound: drop their packets until resumed
        self._on_rewind = on_rewind
        self.refetched = 0  # packets the database lost or this writer dropped: fetched again
        self._queue: asyncio.Queue[_Item | asyncio.Future[None] | None] = asyncio.Queue(
            options.queue_size
        )

    async def put(self, fixture_id: uuid.UUID, frame: Action | Rejected) -> None:
        await self._queue.put((fixture_id, frame))

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
            entry = await self._queue.get()
            while True:
                if entry is None:
                    closing = True
                elif isinstance(entry, asyncio.Future):
                    waiters.append(entry)
                else:
                    items.append(entry)
                if closing or len(items) >= self._options.batch_size or self._queue.empty():
                    break
                entry = self._queue.get_nowait()
            try:
                if items:
                    await self._flush(items)
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
        rejected = [(f, r) for f, r in items if isinstance(r, Rejected)]
        started = time.monotonic()
        result, actions = await self._write(
            [(f, a) for f, a in items if isinstance(a, Action)], rejected
        )
        for fixture_id, action in actions:
            if action.seq > self._committed.get(fixture_id, 0):
                self._committed[fixture_id] = action.seq
        if self._metrics is not None:
            self._observe(items, actions, result, time.monotonic() - started)
        received: dict[uuid.UUID, int] = {}
        for fixture_id, _ in actions:
            received[fixture_id] = received.get(fixture_id, 0) + 1
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
        m.packets_stored.inc(inserted)
        m.duplicates.inc(len(actions) - inserted - sum(result.unstorable.values()))
        m.rejected.inc(result.rejected)
        m.conflicts.inc(len(result.conflicts))
        m.batch_size.observe(len(items))
        m.commit_seconds.observe(seconds)
        now = datetime.now(UTC)
        for _, action in actions:
            m.lag_seconds.observe((now - action.received_at).total_seconds())
        if actions:
            m.last_packet.set(now.timestamp())

    async def _write(
        self,
        actions: list[tuple[uuid.UUID, Action]],
        rejected: Sequence[tuple[uuid.UUID, Rejected]],
    ) -> tuple[WriteResult, list[tuple[uuid.UUID, Action]]]:
        """Write (retrying through outages); returns the result and the actions written."""

        def outage(since: float | None) -> None:
            self.outage_since = since
            if since is not None:
                self.suspect = True

        async def attempt() -> tuple[WriteResult, list[tuple[uuid.UUID, Action]]]:
            if self.suspect:
                await self._check_rewind()
            kept = [(f, a) for f, a in actions if f not in self._discarding]
            self.refetched += len(actions) - len(kept)
            return await self._sink.write(kept, rejected), kept

        return await with_database_retries(
            attempt, self._options, what=f"storing {len(actions)} packets", on_outage=outage
        )

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


class _Stopped(Exception):
    """A stop was asked for while the run waited on something else."""


class RateLimiter:
    """Spaces out connection attempts across every fixture (the provider asks for <= 5/s)."""

    def __init__(self, per_second: float) -> None:
        self._interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next = 0.0

    async def wait(self) -> None:
        if not self._interval:
            return
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + self._interval
        if slot > now:
            await asyncio.sleep(slot - now)


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
        self._leases = leases  # with leases, the registry is shared with other workers
        self._leased: set[uuid.UUID] = set()
        self._options = options or RunOptions()
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
        poll_every = opts.registry_poll
        if self._leases is not None:
            poll_every = min(poll_every, opts.lease_ttl / 3)
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
            if self._leases is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(0.5):
                        await self._leases.release_leases(opts.worker_id)
                        log.info("leases released")
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
        if self._leases is None:
            await self._start(await self._db_retry(self._sink.runnable_fixtures))
            return
        opts, leases = self._options, self._leases
        held = [f for f in self._leased if not self._followers[f].done()]
        done = [f for f in self._leased if self._followers[f].done()]
        if done:  # finished: give them back (they are no longer runnable anyway)
            await self._db_retry(lambda: leases.release_leases(opts.worker_id, done))
            self._leased.difference_update(done)
        if held:
            kept = set(
                await self._db_retry(
                    lambda: leases.renew_leases(opts.worker_id, opts.lease_ttl, held)
                )
            )
            for fixture_id in held:
                if fixture_id not in kept:
                    log.warning("fixture %s: lease lost to another worker; stopping", fixture_id)
                    self._drop(fixture_id)
            held = [f for f in held if f in kept]
            share = await self._db_retry(lambda: leases.fair_share(opts.worker_id, opts.lease_ttl))
            cap = min(share, opts.max_fixtures or share)
            excess = held[cap:] if len(held) > cap + 1 else []
            if excess:  # others joined: hand some over so that the work spreads evenly
                log.info("releasing %d fixture(s) to other workers", len(excess))
                for fixture_id in excess:
                    self._drop(fixture_id)
                await self._db_retry(lambda: leases.release_leases(opts.worker_id, excess))
                held = held[:cap]
        claimed = await self._db_retry(
            lambda: leases.claim_fixtures(
                opts.worker_id, opts.lease_ttl, opts.max_fixtures, len(held)
            )
        )
        if claimed:
            log.info("claimed %d fixture(s)", len(claimed))
            self._leased.update(claimed)
            await self._start(claimed)

    def _drop(self, fixture_id: uuid.UUID) -> None:
        """Stop streaming a fixture now (its packets already received are still stored)."""
        task = self._followers.pop(fixture_id, None)
        if task is not None:
            task.cancel()
        self._leased.discard(fixture_id)
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
