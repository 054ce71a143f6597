"""Orchestration: a supervisor of one follower task per fixture and a few named side tasks.

Exactly-once rests on three rules, kept by the parts this module puts together:

1. Every fixture (re)connects at ``startPosition = MAX(seq)``, asked of the store only after
   everything received so far is committed (a *barrier* through the writer's queue:
   :mod:`ingest.worker.follower`, :mod:`ingest.worker.writer`).
2. A fixture always goes to the same writer, which commits batches in the order packets were
   received, so ``MAX(seq)`` never runs ahead of a packet that is not stored. (Several writers
   let batches of different fixtures be in flight at once.)
3. Writes are idempotent, so whatever arrives twice is absorbed.

The side tasks: the writers, the state saver (:mod:`ingest.worker.tracker`), the summary watch
(:mod:`ingest.worker.reconcile`), the betting watch (:mod:`ingest.worker.betting`, with a
betting board), the progress log and the ``--max-runtime`` deadline. A writer that
stops, or a follower that fails, ends the run; the others are best effort. Which fixtures are
this worker's is :mod:`ingest.worker.assignment`' decision, asked every poll.

This module imports no driver: it talks to :class:`ingest.worker.ports.Source` and
:class:`ingest.worker.ports.Sink`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ingest.settings import RunOptions
from ingest.worker.assignment import AllFixtures, Balancer, LeasedFixtures
from ingest.worker.betting import BettingWatch
from ingest.worker.follower import Follower
from ingest.worker.ports import BettingBoard, Leases, Reconciler, Sink, Source, State
from ingest.worker.progress import FixtureStats, RunResult
from ingest.worker.reconcile import SummaryWatch
from ingest.worker.retry import RateLimiter, with_database_retries
from ingest.worker.tracker import StateTracker
from ingest.worker.writer import Buffer, Writer

if TYPE_CHECKING:  # metrics are made only when read (--metrics-port, --metrics-file)
    from ingest.ops.metrics import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

_DEADLINE = "max runtime"


def _done_task() -> asyncio.Task[None]:
    async def nothing() -> None:
        return None

    return asyncio.create_task(nothing())


class _Stopped(Exception):
    """A stop was asked for while the run waited on something else."""


class _SideTasks:
    """Named background tasks of a run: the *essential* ones end it when they end."""

    def __init__(self) -> None:
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.essential: set[asyncio.Task[Any]] = set()

    def start(self, name: str, work: Coroutine[Any, Any, Any], *, essential: bool = False) -> None:
        task = asyncio.create_task(work, name=name)
        self.tasks[name] = task
        if essential:
            self.essential.add(task)

    def cancel(self, *names: str) -> list[asyncio.Task[Any]]:
        cancelled = [self.tasks[n] for n in names if n in self.tasks]
        for task in cancelled:
            task.cancel()
        return cancelled


async def _bounded(limit: float, step: Awaitable[Any]) -> None:
    """A best-effort step of a stop: given up after ``limit`` seconds, its error ignored."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(limit):
            await step


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
        betting: BettingBoard | None = None,
    ) -> None:
        self._source = source
        self._sink = sink
        self._options = options or RunOptions()
        self._metrics = metrics
        self._stop = asyncio.Event()
        self._states = StateTracker(sink, self._options, metrics)
        # compares the provider's fixtureSummary with our views, off the write path
        self._summaries = SummaryWatch(reconciler, self._states.stats, self._options, metrics)
        # each fixture's betting status as the feed gives it, and this worker's proof of life
        self.betting = (
            BettingWatch(betting, self._states.stats, self._options, metrics)
            if betting is not None
            else None
        )
        if self.betting is not None:
            self._states.on_change = self.betting.wake
        # which fixtures are this worker's: with leases, its share of a registry others share
        self._balancer: Balancer = (
            LeasedFixtures(leases, self._options, self._db_retry, self._drop)
            if leases is not None
            else AllFixtures(sink, self._options, self._db_retry)
        )
        self.buffer = Buffer(self._options.max_buffer)  # shared: the bound is per process
        self._writers = [
            Writer(
                sink, self._states.stats, self._options, metrics,
                on_rewind=self._restart, buffer=self.buffer,
            )
            for _ in range(max(1, self._options.writers))
        ]  # fmt: skip
        if metrics is not None:
            metrics.buffer_bytes.set_function(lambda: self.buffer.used)
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
        result = RunResult(fixtures=self._states.stats)
        side = self._start_side_tasks()
        stop_wait = asyncio.create_task(self._stop.wait(), name="stop")
        error: BaseException | None = None
        try:
            await self._or_stop(self._start([*fixture_ids]))
            if follow_registry:
                await self._or_stop(self._poll_registry())
            if self.betting is not None:
                # once it knows its fixtures: its sweep of the fixtures whose worker went quiet
                # must not take a fixture it is about to confirm itself (a restart's)
                side.start("betting watch", self.betting.run_forever(self._options.worker_id))
            error = await self._supervise(side, stop_wait, result, follow_registry)
        except _Stopped:
            log.info("stopping: flushing what was received")
            result.stopped = True
        finally:
            stop_wait.cancel()
            await self._shut_down(side, stop_wait)
        if error is not None:
            raise error
        return result

    async def _supervise(
        self,
        side: _SideTasks,
        stop_wait: asyncio.Task[Any],
        result: RunResult,
        follow_registry: bool,
    ) -> BaseException | None:
        """Wait on the followers, the essential side tasks and the stop (polling the registry
        when following it) until the run is to end; the error that ends it, if one does."""
        next_poll = time.monotonic() + self._balancer.poll_every
        idle_logged = False
        while True:
            running = {t for t in self._followers.values() if not t.done()}
            if not running:
                if self._options.until_finished and not await self._or_stop(
                    self._registry_has_work(follow_registry)
                ):
                    log.info("every fixture has finished")
                    return None
                if not idle_logged and not follow_registry:
                    log.info("every fixture has finished; waiting to be stopped")
                    idle_logged = True
            done, _ = await asyncio.wait(
                {*running, *side.essential, stop_wait},
                timeout=max(next_poll - time.monotonic(), 0) if follow_registry else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
            ended, error = self._ended_by(done, side, stop_wait, result)
            if ended:
                return error
            if follow_registry and time.monotonic() >= next_poll:
                next_poll = time.monotonic() + self._balancer.poll_every
                await self._or_stop(self._poll_registry())

    @staticmethod
    def _ended_by(
        done: set[asyncio.Task[Any]],
        side: _SideTasks,
        stop_wait: asyncio.Task[Any],
        result: RunResult,
    ) -> tuple[bool, BaseException | None]:
        """Whether the tasks ``done`` end the run (a stop, the deadline, a writer that stopped,
        a follower that failed), and the error it ends with."""
        if stop_wait in done:
            log.info("stopping: flushing what was received")
            result.stopped = True
            return True, None
        if side.tasks.get(_DEADLINE) in done:
            log.info("--max-runtime reached: stopping")
            result.stopped = True
            return True, None
        stopped_writers = [t for t in side.essential if t in done]
        if stopped_writers:
            return True, stopped_writers[0].exception() or RuntimeError("a writer stopped")
        failed = [
            t.exception()
            for t in done
            if t is not stop_wait and not t.cancelled() and t.exception()
        ]  # a cancelled follower was restarted (see _restart)
        if failed:
            return True, failed[0]
        return False, None

    def _start_side_tasks(self) -> _SideTasks:
        side = _SideTasks()
        for number, writer in enumerate(self._writers, 1):
            side.start(f"writer {number}", writer.run(), essential=True)
        side.start("state saver", self._states.save_forever())
        side.start("summary watch", self._summaries.check_forever())
        side.start("progress", self._log_progress_forever())
        if self._options.max_runtime is not None:
            side.start(_DEADLINE, asyncio.sleep(self._options.max_runtime), essential=True)
        return side

    async def _shut_down(self, side: _SideTasks, stop_wait: asyncio.Task[Any]) -> None:
        """Followers first, then the writers flush what they hold, then the last states and
        summaries are saved and the leases given back: each step bounded in time."""
        best_effort = side.cancel(
            "state saver", "summary watch", "betting watch", "progress", _DEADLINE
        )
        interrupted = [f for f, t in self._followers.items() if not t.done()]
        followers = [self._followers[f] for f in interrupted]
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, stop_wait, *best_effort, return_exceptions=True)
        failed = [  # the error that ends the run (a refused token: exit 77, HTTP 400: 78)
            f for f, t in self._followers.items()
            if t.done() and not t.cancelled() and t.exception() is not None
        ]  # fmt: skip
        for fixture_id in [*interrupted, *failed]:  # not left "backing off" in the registry
            self._states.set(fixture_id, State.STOPPED)
        await asyncio.gather(
            *(
                self._shutdown_writer(writer, side.tasks[f"writer {number}"])
                for number, writer in enumerate(self._writers, 1)
            )
        )

        # the steps after the flush run side by side, each within its limit: a database that
        # has stopped answering costs the stop one second, not each step's limit in turn
        # (SIGTERM: < 5 s), and a slow step (the summary over every fixture) starves no other.
        # The states are saved before the leases go: a worker taking a fixture over must not
        # have its state overwritten by this one's "stopped"
        async def save_then_release() -> None:
            await _bounded(0.5, self._states.save())
            await _bounded(0.5, self._balancer.release())

        steps = [save_then_release(), _bounded(1.0, self._summaries.check())]
        if self.betting is not None:  # no longer confirmed alive: suspended at once
            steps.append(_bounded(0.5, self.betting.leave(self._options.worker_id)))
        await asyncio.gather(*steps)

    async def _shutdown_writer(self, writer: Writer, task: asyncio.Task[None]) -> None:
        if task.done():
            return
        try:
            async with asyncio.timeout(self._options.shutdown_timeout):
                await writer.close()
                await task
        except TimeoutError:
            log.warning(
                "could not store %d received packets in time; they are not lost: the next run "
                "fetches them again from the stored MAX(seq)",
                writer.pending,
            )
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

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
        runnable = await self._db_retry(self._sink.runnable_fixtures)
        # a fixture the feed does not know (404) ended here: it is done for --until-finished,
        # as when its id is given, not work that keeps the run going for ever
        unknown = {f for f, s in self._states.stats.items() if s.state == State.NOT_FOUND}
        return bool(set(runnable) - unknown)

    async def _poll_registry(self) -> None:
        # A fixture finishing (its finished packet received, perhaps committed already) no
        # longer counts as running, though its task may not have ended yet: the registry no
        # longer counts it as runnable either, and counting it as held would make the fair share
        # hand over a fixture still streaming, stopping its follower before it knows it finished.
        stats = self._states.stats
        running = {
            f
            for f, t in self._followers.items()
            if not t.done() and not (stats[f].finishing or stats[f].finished)
        }
        done = {f for f, t in self._followers.items() if t.done()}
        await self._start(await self._balancer.poll(running, done))

    def _drop(self, fixture_id: uuid.UUID) -> None:
        """Stop streaming a fixture now (its packets already received are still stored)."""
        task = self._followers.pop(fixture_id, None)
        if task is not None:
            task.cancel()
        self._states.set(fixture_id, State.RELEASED)

    def _restart(self, fixture_id: uuid.UUID) -> None:
        """Reconnect a fixture from the stored ``MAX(seq)`` (the database lost its last packets)."""
        task = self._followers.get(fixture_id)
        if task is None:
            return  # no longer ours (a lease handed over)
        task.cancel()  # a finished one too: its finished packet may be among those lost
        self._states[fixture_id].finished = self._states[fixture_id].finishing = False
        self._followers[fixture_id] = self._follow(fixture_id)

    async def _start(self, fixture_ids: Sequence[uuid.UUID]) -> None:
        """Start following fixtures not yet followed; finished ones are not reconnected."""
        new = [f for f in dict.fromkeys(fixture_ids) if f not in self._followers]
        if not new:
            return
        await self._db_retry(lambda: self._sink.register(new))
        rows = {r.fixture_id: r for r in await self._db_retry(lambda: self._sink.fixtures(new))}
        for fixture_id in new:
            stats = self._states.add(fixture_id)
            row = rows.get(fixture_id)
            if row is not None:
                stats.connects = row.connects  # the registry counts across runs
            if row is not None and row.finished:
                # as stored: a second run of a finished match is no new start of it
                self._states.restore(fixture_id, State.FINISHED, row.state_changed_at)
                stats.finished = True
                log.info(
                    "fixture %s: already finished (%d packets stored); not reconnecting",
                    fixture_id,
                    row.packets,
                )
                self._followers[fixture_id] = _done_task()
                continue
            self._followers[fixture_id] = self._follow(fixture_id)

    def _follow(self, fixture_id: uuid.UUID) -> asyncio.Task[None]:
        follower = Follower(
            fixture_id,
            source=self._source,
            sink=self._sink,
            writer=self._writers[fixture_id.int % len(self._writers)],
            states=self._states,
            options=self._options,
            limiter=self._limiter,
            retry=self._db_retry,
            metrics=self._metrics,
            betting=self.betting,
        )
        return asyncio.create_task(follower.run(), name=f"fixture {fixture_id}")

    async def _log_progress_forever(self) -> None:
        while True:
            await asyncio.sleep(self._options.progress_interval)
            self._states.log_progress([f for f, t in self._followers.items() if not t.done()])

    @property
    def stats(self) -> dict[uuid.UUID, FixtureStats]:
        return self._states.stats

    @property
    def refetched(self) -> int:
        """Packets fetched again because a failover lost them (or they were queued behind)."""
        return sum(w.refetched for w in self._writers)

    @property
    def disagreeing(self) -> set[uuid.UUID]:
        """Fixtures whose latest summary disagreed with our views at the last look."""
        return self._summaries.disagreeing

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
        why = self._states.unable_to_connect()
        return (False, why) if why else (True, "ok")

    def readiness(self) -> tuple[bool, str]:
        """:meth:`health`, and no fixture blocked by a frame over the size limit (for /readyz:
        a restart would not help a blocked fixture, so the watchdog does not hear of it)."""
        why = self._states.blocked()
        return (False, why) if why else self.health()

    async def _db_retry(self, call: Callable[[], Awaitable[T]]) -> T:
        def outage(since: float | None) -> None:
            if since is not None:  # whichever call sees it: every writer checks before writing
                for writer in self._writers:
                    writer.suspect = True

        return await with_database_retries(
            call, self._options, what="the registry", on_outage=outage
        )
