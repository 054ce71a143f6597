"""``ingest settle``: the settlement consumer.

It catches up from its checkpoints, then reacts to ``NOTIFY ingest_actions`` (sent by the worker
with every committed batch): each notified fixture is settled in one pass, its events and its
checkpoint together (:meth:`~ingest.settlement.ports.Ledger.settle`). No polling on the hot
path; a slow timer (``idle_check``) only checks the LISTEN connection, and with ``--all`` the
registry. After a lost LISTEN connection it reconnects and catches up again, so nothing notified
meanwhile is missed. Orchestration only: it talks to a :class:`~ingest.settlement.ports.Ledger`
(PostgreSQL's is :class:`ingest.db.settlement.SettlementStore`), and imports no driver.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from ingest.errors import DatabaseUnavailable
from ingest.ops.metrics import SettlerMetrics
from ingest.settings import SettleOptions
from ingest.settlement.ports import Ledger, Settled, Subscription
from ingest.worker.retry import with_database_retries

log = logging.getLogger(__name__)
T = TypeVar("T")
CHANNEL = "ingest_actions"


class Settler:
    """Settles the fixtures it follows as their packets are stored, through a :class:`Ledger`."""

    def __init__(self, ledger: Ledger, options: SettleOptions, metrics: SettlerMetrics) -> None:
        self._ledger = ledger
        self._options = options
        self._metrics = metrics
        self._wake = asyncio.Event()
        self._notified: dict[uuid.UUID, float] = {}  # fixture -> when first notified
        self._stopping = False
        self._listener: Subscription | None = None
        self._held: set[uuid.UUID] = set()
        self._said_waiting = False  # --until-finished said once what it waits for
        self.events_written = 0

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def health(self) -> tuple[bool, str]:
        if self._listener is None or self._listener.lost:
            return False, "not listening for ingest_actions"
        return True, "listening"

    def _on_notify(self, payload: str) -> None:
        try:
            fixture_id = uuid.UUID(str(json.loads(payload)["fixture_id"]))
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed ingest_actions notification: %.200s", payload)
            return
        self._notified.setdefault(fixture_id, time.monotonic())
        self._wake.set()

    async def _retry(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        return await with_database_retries(call, self._options.retry, what=what)

    async def run(self, fixture_ids: Sequence[uuid.UUID], *, follow_all: bool) -> int:
        """Settle until stopped (or, with ``until_finished``, until all is settled): exit 0."""
        following: list[uuid.UUID] = []
        try:
            while not self._stopping:
                if self._listener is None or self._listener.lost:
                    if self._listener is not None:
                        self._metrics.reconnects.inc()
                        log.warning("the LISTEN connection was lost: reconnecting, catching up")
                        lost, self._listener = self._listener, None
                        await lost.close()
                    self._listener = await self._retry(
                        lambda: self._ledger.listen(CHANNEL, self._on_notify), "listening"
                    )
                    # listening first, then catching up: nothing committed in between is missed
                    following = await self._retry(
                        lambda: self._ledger.followed(fixture_ids, follow_all), "reading fixtures"
                    )
                    self._metrics.followed.set(len(following))
                    await self._catch_up(following)
                    log.info("settling %d fixture(s); listening for %s", len(following), CHANNEL)
                if self._notified:
                    notified, self._notified = self._notified, {}
                    if follow_all:
                        following += [f for f in notified if f not in following]
                        self._metrics.followed.set(len(following))
                    await self._settle([f for f in notified if f in following], notified)
                if self._options.until_finished and await self._all_done(following):
                    log.info("every fixture has finished and is settled: done")
                    return 0
                if self._notified:
                    continue
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self._options.idle_check)
                except TimeoutError:
                    if self._listener is not None and not await self._listener.ping():
                        continue
                    if follow_all:
                        known = await self._retry(
                            lambda: self._ledger.followed([], True), "reading fixtures"
                        )
                        new = [f for f in known if f not in following]
                        if new:
                            following += new
                            self._metrics.followed.set(len(following))
                            await self._catch_up(new)
                    if self._held:
                        await self._catch_up(list(self._held))
            return 0
        finally:
            if self._listener is not None:
                listener, self._listener = self._listener, None
                await listener.close()

    async def _catch_up(self, fixture_ids: Sequence[uuid.UUID]) -> None:
        rows = await self._retry(lambda: self._ledger.progress(fixture_ids), "reading progress")
        behind = [r.fixture_id for r in rows if r.behind]
        if behind:
            log.info("catching up %d fixture(s)", len(behind))
        await self._settle(behind, {})

    async def _settle(
        self, fixture_ids: Sequence[uuid.UUID], notified: dict[uuid.UUID, float]
    ) -> None:
        if not fixture_ids:
            return
        reasons = await self._retry(lambda: self._ledger.fixtures_on_hold(fixture_ids), "holds")
        held = set(reasons)
        for fixture_id in held - self._held:
            log.warning("fixture %s is on hold, its settlement waits: %s", fixture_id,
                        reasons[fixture_id])  # fmt: skip
        for fixture_id in (self._held & set(fixture_ids)) - held:
            log.info("fixture %s: no longer on hold; settling", fixture_id)
        self._held = (self._held - set(fixture_ids)) | held
        self._metrics.held.set(len(self._held))
        for fixture_id in fixture_ids:
            if fixture_id in held or self._stopping:
                continue
            done = await self._retry(self._settler_of(fixture_id), f"settling {fixture_id}")
            self._metrics.passes.inc()
            if fixture_id in notified:
                self._metrics.lag_seconds.observe(time.monotonic() - notified[fixture_id])
            for event in done.events:
                self._metrics.events.labels(event.kind).inc()
                log.debug(
                    "fixture %s %s %s %s %s (seq %d)", fixture_id, event.market, event.kind,
                    event.outcome or "", event.certainty or "", event.decided_by_seq,
                )  # fmt: skip
            self.events_written += len(done.events)
            if done.events:
                log.info(
                    "fixture %s: %d settlement event(s), seq %d..%d",
                    fixture_id, len(done.events), done.previous + 1, done.checkpoint,
                )  # fmt: skip

    def _settler_of(self, fixture_id: uuid.UUID) -> Callable[[], Awaitable[Settled]]:
        return lambda: self._ledger.settle(fixture_id)

    async def _all_done(self, following: Sequence[uuid.UUID]) -> bool:
        try:
            rows = await self._ledger.progress(following)
        except DatabaseUnavailable:
            return False
        waiting = [r.fixture_id for r in rows if r.fixture_id in self._held and r.finished]
        if not all(r.done or r.fixture_id in waiting for r in rows):
            return False
        if waiting and not self._said_waiting:
            log.warning(
                "--until-finished: everything else is settled; waiting for %d fixture(s) on hold "
                "(%s): they are settled once the provider's summary and our views agree again "
                "(see README, Reconciliation)",
                len(waiting), ", ".join(str(f) for f in waiting),
            )  # fmt: skip
            self._said_waiting = True
        return not waiting
