"""Each fixture's betting status as this worker sees its feed, written when it changes, and the
worker's proof of life, renewed for all its fixtures in one statement a second (or a third of
``--stale-after`` if that is shorter).

The worker's part of the status (README, Live betting status; the database's part, and the order
of precedence, are migration 0010's):

- ``feed_down``: the fixture has no open connection (connecting again, backing off, refused,
  blocked, unknown to the feed), or its connection is still catching up (below);
- ``feed_stale``: connected, but nothing (no packet, no heartbeat) for ``--stale-after`` seconds:
  the connection is left alone until ``--liveness-timeout``, suspending is cheap and
  reconnecting is not;
- ``feed_delayed``: the last packet arrived more than ``--max-delay`` seconds after its own
  ``timestamp`` (not at ``--speed fast``, nor during a catch-up);
- ``open`` otherwise, and ``closed`` once the finished packet is stored.

**Catch-up.** After a (re)connect the feed first sends what was missed, with the times it
happened: those packets are late by nature, so they are not judged. The catch-up ends with the
first packet whose timestamp is within ``--max-delay`` of its arrival, or when the connection
has been quiet for :attr:`RunOptions.catch_up_quiet` seconds (the backlog comes at once: a pause
means it is through); until then the fixture stays as it was (``feed_down`` after a
disconnect). On the run's first connection of a fixture nothing is written until the
connection is up and caught up or has failed: a restarted worker does not suspend a fixture it
is about to confirm open again, and writes no second ``open`` (the database skips a repeat).

What the follower does per packet is a few attribute reads and stores on the fixture's
:class:`Signs` (the arrival time itself is kept by the feed client, on the :class:`Pulse`);
everything else happens here, in one task, which wakes when a state changes, at the next moment
a fixture would turn stale, and once a second (a third of ``--stale-after`` if that is shorter)
to renew ``alive_at``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import Awaitable
from datetime import timedelta
from typing import TYPE_CHECKING

from ingest.errors import IngestError
from ingest.settings import RunOptions
from ingest.worker.ports import (
    CLOSED,
    OPEN,
    Betting,
    BettingBoard,
    Pulse,
    Reason,
    State,
    suspended,
)
from ingest.worker.progress import FixtureStats

if TYPE_CHECKING:  # metrics are made only when read (--metrics-port, --metrics-file)
    from ingest.ops.metrics import Metrics

log = logging.getLogger(__name__)

DOWN = suspended(Reason.FEED_DOWN)
STALE = suspended(Reason.FEED_STALE)
DELAYED = suspended(Reason.FEED_DELAYED)
_POLL = 0.1  # while a fixture is stale or catching up: how often its pulse is looked at
_RETRY = 1.0  # after a failed write (the database away): the next try


class Signs:
    """One fixture's signs of health, as the follower and the feed client leave them."""

    __slots__ = ("asked", "catching_up", "effective", "known", "late", "pulse", "recheck", "stale")

    def __init__(self) -> None:
        self.pulse = Pulse()  # when anything last arrived: kept by the feed client
        self.catching_up = False  # a connection's backlog is still coming
        self.late = False  # the last packet came more than --max-delay after its timestamp
        self.stale = False  # written as feed_stale: the next packet may reopen it
        self.known = False  # the run's first connection has come up and caught up, or failed
        self.effective: Betting | None = None  # the status in effect, as the database said
        self.asked: Betting | None = None  # the last change written (perhaps not taken)
        self.recheck = False  # a Status Updated packet committed: ask again at once


class BettingWatch:
    """Computes each fixture's status from its :class:`Signs` and state, and writes what
    changed to the :class:`BettingBoard` (with ``alive_at`` renewed once a second)."""

    def __init__(
        self,
        board: BettingBoard,
        stats: dict[uuid.UUID, FixtureStats],
        options: RunOptions,
        metrics: Metrics | None = None,
    ) -> None:
        self._board = board
        self._stats = stats
        self._options = options
        self._metrics = metrics
        self.signs: dict[uuid.UUID, Signs] = {}
        self._wake = asyncio.Event()
        self._waiting: set[asyncio.Task[None]] = set()  # wake-ups after a commit
        # the delay judged per packet: None at --speed fast (a backfill is late by design)
        self.max_delay: timedelta | None = (
            None if options.speed == "fast" else timedelta(seconds=options.max_delay)
        )
        self.writes = 0  # statements sent (for tests and the benchmark)
        self._renewals = 0

    def add(self, fixture_id: uuid.UUID) -> Signs:
        signs = self.signs.get(fixture_id)
        if signs is None:
            signs = self.signs[fixture_id] = Signs()
        return signs

    def wake(self, _fixture_id: uuid.UUID | None = None) -> None:
        self._wake.set()

    def connected(self, signs: Signs) -> None:
        """A connection is up (its token accepted): its backlog comes first."""
        signs.catching_up = self.max_delay is not None
        signs.late = False
        self._wake.set()

    def wake_after(self, done: Awaitable[None], signs: Signs) -> None:
        """Look again once ``done`` (the writer's barrier behind a Status Updated packet) is
        over: the provider's suspension is lifted in the database by that commit, and opening
        again is this watch's."""

        async def later() -> None:
            with contextlib.suppress(Exception):
                await done
            signs.recheck = True
            self._wake.set()

        task = asyncio.create_task(later())
        self._waiting.add(task)
        task.add_done_callback(self._waiting.discard)

    def wanted(self, stats: FixtureStats, signs: Signs, now: float) -> Betting | None:
        """The status the feed gives the fixture now (None: not known yet, or not ours)."""
        state = stats.state
        if stats.finished or state == State.FINISHED:
            return CLOSED
        if state == State.RELEASED:
            return None  # another worker's now
        if state == State.CONNECTED:
            quiet = now - signs.pulse.at
            if signs.catching_up:
                if quiet < self._options.catch_up_quiet:
                    return DOWN if signs.known else None
                signs.catching_up = False  # the backlog is through, late as it was
                signs.late = False
            signs.known = True
            if quiet > self._options.stale_after:
                return STALE
            return DELAYED if signs.late else OPEN
        if not signs.known and state in (State.STARTING, State.CONNECTING):
            return None
        signs.known = True
        return DOWN

    async def run_forever(self, worker: str) -> None:
        loop = asyncio.get_running_loop()
        opts = self._options
        # a renewal that comes once in stale_after would leave the view a moment each time
        # in which it reads worker_silent: at least three renewals within it
        renew_every = min(opts.betting_renew_every, opts.stale_after / 3)
        renew_at = loop.time()
        while True:
            self._wake.clear()  # what wakes it from here on is seen by the next look
            now = loop.time()
            renewal = now >= renew_at
            changes: dict[uuid.UUID, Betting] = {}
            alive: list[uuid.UUID] = []
            alive_signs: list[Signs] = []  # alive's, in the same order (no lookup by id)
            following: list[uuid.UUID] = []  # this worker's, known or not: not swept
            released: list[uuid.UUID] = []  # handed over: no longer confirmed by this worker
            next_look = math.inf
            watching = False
            # every fixture, every second: names looked up once, not per fixture
            wanted, signs_of, stale_after = self.wanted, self.signs, opts.stale_after
            connected, released_state = State.CONNECTED, State.RELEASED
            for fixture_id, stats in self._stats.items():
                signs = signs_of.get(fixture_id)
                if signs is None:
                    continue
                want = wanted(stats, signs, now)
                if want is None:
                    if stats.state != released_state:
                        following.append(fixture_id)
                    elif signs.effective not in (None, CLOSED):
                        released.append(fixture_id)
                    continue
                # a change not taken (the provider's suspension comes first) is asked again
                # once a second, or when a Status Updated packet of the fixture is committed
                if want != signs.effective and (want != signs.asked or renewal or signs.recheck):
                    changes[fixture_id] = want
                    signs.recheck = False
                if want != CLOSED:
                    alive.append(fixture_id)
                    alive_signs.append(signs)
                signs.stale = stale = want == STALE
                if stale or signs.catching_up:
                    watching = True
                elif stats.state == connected:
                    at = signs.pulse.at + stale_after
                    if at < next_look:
                        next_look = at
            if released and await self._release(worker, released):
                renew_at = min(renew_at, now + _RETRY)
            if changes or renewal:
                confirmed, confirmed_signs = alive, alive_signs
                if not renewal:  # only the changed fixtures are confirmed alive
                    confirmed = [f for f in changes if changes[f] != CLOSED]
                    confirmed_signs = [signs_of[f] for f in confirmed]
                written = await self._write(
                    worker,
                    changes,
                    confirmed,
                    confirmed_signs,
                    sweep=renewal,
                    own=following,
                    renewal=renewal,
                )
                if renewal:
                    renew_at = now + (renew_every if written else _RETRY)
                elif not written:
                    renew_at = min(renew_at, now + _RETRY)
            wait = min(next_look, renew_at) - loop.time()
            if watching:
                wait = min(wait, _POLL)
            # asyncio.timeout, not wait_for: wait_for (3.11) loses a cancellation that comes as
            # the event is set, which a stop does (its states change as it cancels this task)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.005)):
                    await self._wake.wait()

    async def _write(
        self,
        worker: str,
        changes: dict[uuid.UUID, Betting],
        alive: list[uuid.UUID],
        alive_signs: list[Signs],
        *,
        sweep: bool,
        own: list[uuid.UUID],
        renewal: bool,
    ) -> bool:
        try:
            self.writes += 1
            effective = await self._board.report_betting(
                worker, changes, alive, self._options.stale_after, sweep=sweep, own=own
            )
        except IngestError as exc:  # the database away: the next look writes it all
            log.debug("betting status not written: %s", exc)
            return False
        moved = False
        signs_of = self.signs
        # an alive fixture left out of the answer is open in the database: a second's renewal
        # of a thousand open fixtures answers nothing, and looks up none of them by its id
        for fixture_id, signs in zip(alive, alive_signs, strict=True):
            status = effective.get(fixture_id, OPEN) if effective else OPEN
            if status != signs.effective:
                self._took(fixture_id, signs, status)
                moved = True
        for fixture_id, want in changes.items():
            signs = signs_of[fixture_id]
            status = effective.get(fixture_id, OPEN)
            if status != signs.effective:
                self._took(fixture_id, signs, status)
                moved = True
            signs.asked = want
        self._renewals += renewal
        if moved or (renewal and self._renewals % 10 == 0):  # and a released fixture's leaving
            self._count()
        return True

    @staticmethod
    def _took(fixture_id: uuid.UUID, signs: Signs, status: Betting | None) -> None:
        """The status in effect moved: say so, and remember it."""
        if status is not None:
            log.info("fixture %s: betting %s", fixture_id, status)
        signs.effective = status

    async def _release(self, worker: str, fixture_ids: list[uuid.UUID]) -> bool:
        """Fixtures handed over to another worker (leases): this one no longer confirms them, so
        they read worker_silent until their new worker does (unless it already has). False
        when written; True when it is to be tried again."""
        try:
            await self._board.leave_betting(worker, fixture_ids)
        except IngestError as exc:
            log.debug("betting status of released fixtures not written: %s", exc)
            return True
        for fixture_id in fixture_ids:
            self.signs[fixture_id].effective = None
        self._count()
        return False

    def _count(self) -> None:
        if self._metrics is None:
            return
        counts = dict.fromkeys((r.value for r in Reason), 0)
        for fixture_id, signs in self.signs.items():
            status = signs.effective
            stats = self._stats.get(fixture_id)
            if status is None or stats is None or stats.state == State.RELEASED:
                continue
            if status.reason is not None:
                counts[status.reason] = counts.get(status.reason, 0) + 1
        for reason, count in counts.items():
            self._metrics.betting_suspended.labels(reason).set(count)

    async def leave(self, worker: str) -> None:
        """A clean stop: this worker no longer confirms its fixtures alive; say so at once."""
        for task in list(self._waiting):
            task.cancel()
        mine = [
            f
            for f, signs in self.signs.items()
            if signs.effective not in (None, CLOSED)
            and self._stats[f].state != State.RELEASED
            and not self._stats[f].finished
        ]
        await self._board.leave_betting(worker, mine)
