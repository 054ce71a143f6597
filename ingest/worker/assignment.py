"""Which of the registry's fixtures this worker streams, looked up again every poll.

Two policies behind one interface (as a consumer group has a coordinator, and a lone consumer a
trivial one): :class:`AllFixtures` (``ingest run --all`` alone: every enabled, unfinished fixture)
and :class:`LeasedFixtures` (several workers on one database: each claims its fair share of the
fixtures, renews its leases every third of their TTL, gives back finished ones and, when others
join, hands over what it holds beyond its share). The arithmetic of the handover is
:func:`excess`, pure.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, Protocol

from ingest.settings import RunOptions
from ingest.worker.ports import Leases, Sink

log = logging.getLogger(__name__)

# the worker's database retry: a call retried through an outage (see ingest.worker.retry)
Retry = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]


class Balancer(Protocol):
    poll_every: float  # seconds between polls

    async def poll(
        self, running: Collection[uuid.UUID], done: Collection[uuid.UUID]
    ) -> list[uuid.UUID]:
        """The fixtures to start now. ``running``: this worker's fixtures being streamed;
        ``done``: its fixtures whose task ended (finished). Fixtures that stop being this
        worker's are handed to the ``drop`` callback the balancer was made with."""
        ...

    async def release(self) -> None:
        """The run ends: give back everything held."""
        ...


def excess(held: Sequence[uuid.UUID], share: int, max_fixtures: int | None) -> list[uuid.UUID]:
    """What to hand over to other workers: the fixtures held beyond the fair share (capped by
    ``max_fixtures``), once this worker holds more than one over it (so that a share that does
    not divide evenly does not make fixtures move back and forth)."""
    cap = min(share, max_fixtures or share)
    return list(held[cap:]) if len(held) > cap + 1 else []


class AllFixtures:
    """No leases: every runnable fixture in the registry is this worker's."""

    def __init__(self, sink: Sink, options: RunOptions, retry: Retry) -> None:
        self._sink = sink
        self._retry = retry
        self.poll_every = options.registry_poll

    async def poll(
        self, running: Collection[uuid.UUID], done: Collection[uuid.UUID]
    ) -> list[uuid.UUID]:
        runnable: list[uuid.UUID] = await self._retry(self._sink.runnable_fixtures)
        return runnable

    async def release(self) -> None:
        return None


class LeasedFixtures:
    """Leases in the database shared with other workers (see :mod:`ingest.db.leases`)."""

    def __init__(
        self,
        leases: Leases,
        options: RunOptions,
        retry: Retry,
        drop: Callable[[uuid.UUID], None],
    ) -> None:
        self._leases = leases
        self._options = options
        self._retry = retry
        self._drop = drop
        self.held: set[uuid.UUID] = set()
        self.poll_every = min(options.registry_poll, options.lease_ttl / 3)

    def _hand_back(self, fixture_id: uuid.UUID) -> None:
        self.held.discard(fixture_id)
        self._drop(fixture_id)

    async def poll(
        self, running: Collection[uuid.UUID], done: Collection[uuid.UUID]
    ) -> list[uuid.UUID]:
        opts, leases, owner = self._options, self._leases, self._options.worker_id
        held = [f for f in self.held if f in running]
        finished = [f for f in self.held if f in done]
        if finished:  # finished: give them back (they are no longer runnable anyway)
            await self._retry(lambda: leases.release_leases(owner, finished))
            self.held.difference_update(finished)
        if held:
            kept = set(await self._retry(lambda: leases.renew_leases(owner, opts.lease_ttl, held)))
            for fixture_id in held:
                if fixture_id not in kept:
                    log.warning("fixture %s: lease lost to another worker; stopping", fixture_id)
                    self._hand_back(fixture_id)
            held = [f for f in held if f in kept]
            share = await self._retry(lambda: leases.fair_share(owner, opts.lease_ttl))
            handed = excess(held, share, opts.max_fixtures)
            if handed:  # others joined: hand some over so that the work spreads evenly
                log.info("releasing %d fixture(s) to other workers", len(handed))
                for fixture_id in handed:
                    self._hand_back(fixture_id)
                await self._retry(lambda: leases.release_leases(owner, handed))
                held = held[: len(held) - len(handed)]
        claimed = await self._retry(
            lambda: leases.claim_fixtures(owner, opts.lease_ttl, opts.max_fixtures, len(held))
        )
        claimed = list(claimed)
        if claimed:
            log.info("claimed %d fixture(s)", len(claimed))
            self.held.update(claimed)
        return claimed

    async def release(self) -> None:
        await self._leases.release_leases(self._options.worker_id)
        log.info("leases released")
