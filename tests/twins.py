"""In-memory twins of the worker's ports and of the settler's, for unit tests of pure
orchestration logic.

They are held to the same contract tests as the real parts
(``tests/integration/test_ports_contract.py``: :class:`MemorySink` beside the PostgreSQL store,
:class:`MemorySource` beside the websocket client on a real feed;
``tests/integration/test_ledger_contract.py``: :class:`MemoryLedger` beside
``SettlementStore``; :class:`MemoryBettingBoard` beside the store's betting status, in the
ports contract), so a unit test that passes on a twin says something about the real thing.
They keep only what the contract promises: a sink absorbs duplicates and records a differing
replay as a conflict; a source yields the packets from ``startPosition`` on, keyed as the real
client keys them; a ledger notifies each stored batch and settles a fixture's new packets once.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from ingest.errors import AuthError, FeedUnavailable, FixtureNotFound
from ingest.feed.packet import Action, Control, Keying, Rejected, classify
from ingest.feed.vocabulary import LINEUPS, LineupPacket, Lineups, action_key
from ingest.settlement.markets import Event, Packet, replay
from ingest.settlement.ports import Progress, Settled
from ingest.worker.ports import (
    CLOSED,
    OPEN,
    Betting,
    FixtureRow,
    Pulse,
    Reason,
    SavedState,
    WriteResult,
    suspended,
)


@dataclass
class _Fixture:
    enabled: bool = True
    finished: bool = False
    added: int = 0
    state: SavedState | None = None
    owner: str | None = None
    rejected_unstored: int = 0
    rejected_batch: uuid.UUID | None = None


@dataclass
class MemorySink:
    """A :class:`ingest.worker.ports.Sink` in a dict; ``fail_writes``: raise it on next writes."""

    rows: dict[tuple[uuid.UUID, int], Action] = field(default_factory=dict)
    conflicts: list[tuple[uuid.UUID, int]] = field(default_factory=list)
    rejected: list[tuple[uuid.UUID, Rejected]] = field(default_factory=list)
    registry: dict[uuid.UUID, _Fixture] = field(default_factory=dict)
    batches: list[int] = field(default_factory=list)  # the size of every write
    fail_writes: list[BaseException] = field(default_factory=list)

    async def write(
        self,
        actions: Sequence[tuple[uuid.UUID, Action]],
        rejected: Sequence[tuple[uuid.UUID, Rejected]] = (),
        *,
        unstored: Mapping[uuid.UUID, int] | None = None,
        batch: uuid.UUID | None = None,
        server: object = None,
    ) -> WriteResult:
        await asyncio.sleep(0)  # a write is a suspension point, as a round trip is
        if self.fail_writes:
            raise self.fail_writes.pop(0)
        self.batches.append(len(actions) + len(rejected))
        result = WriteResult()
        for fixture_id, action in actions:
            key = (fixture_id, action.seq)
            stored = self.rows.get(key)
            if stored is None:
                self.rows[key] = action
                result.inserted[fixture_id] = result.inserted.get(fixture_id, 0) + 1
                entry = self.registry.setdefault(fixture_id, _Fixture(added=len(self.registry)))
                entry.finished = entry.finished or action.finished
            elif (
                orjson.loads(stored.payload) != orjson.loads(action.payload)
                and key not in self.conflicts
            ):
                self.conflicts.append(key)
                result.conflicts.append(key)
        # the rejected frames stored and counted once per batch token, as the database does
        batch = batch or uuid.uuid4()
        counts = dict.fromkeys((f for f, _ in rejected), 0) | dict(unstored or {})
        fresh = set()
        for fixture_id, count in counts.items():
            entry = self.registry.setdefault(fixture_id, _Fixture(added=len(self.registry)))
            if entry.rejected_batch != batch:
                entry.rejected_batch = batch
                entry.rejected_unstored += count
                fresh.add(fixture_id)
        kept = [(f, r) for f, r in rejected if f in fresh]
        self.rejected.extend(kept)
        result.rejected = len(kept)
        return result

    def seqs(self, fixture_id: uuid.UUID) -> list[int]:
        return sorted(seq for f, seq in self.rows if f == fixture_id)

    async def max_seq(self, fixture_id: uuid.UUID) -> int:
        return max(self.seqs(fixture_id), default=0)

    async def max_seqs(self, fixture_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        return {f: await self.max_seq(f) for f in fixture_ids}

    async def payload_at(self, fixture_id: uuid.UUID, seq: int) -> str | None:
        action = self.rows.get((fixture_id, seq))
        return action.payload if action is not None else None

    async def is_numbered(self, fixture_id: uuid.UUID) -> bool | None:
        seqs = self.seqs(fixture_id)
        if not seqs:
            return None
        return self.rows[(fixture_id, seqs[-1])].fixture_seq_num is not None

    async def register(self, fixture_ids: Sequence[uuid.UUID], *, enable: bool = False) -> int:
        added = 0
        for fixture_id in dict.fromkeys(fixture_ids):
            entry = self.registry.get(fixture_id)
            if entry is None:
                self.registry[fixture_id] = _Fixture(added=len(self.registry))
                added += 1
            elif enable and not entry.enabled:
                entry.enabled = True
                added += 1
        return added

    async def fixtures(self, fixture_ids: Sequence[uuid.UUID] | None = None) -> list[FixtureRow]:
        chosen = [f for f in self.registry if fixture_ids is None or f in fixture_ids]
        rows = []
        for fixture_id in sorted(chosen, key=lambda f: (self.registry[f].added, f)):
            entry, seqs = self.registry[fixture_id], self.seqs(fixture_id)
            state = entry.state
            rows.append(
                FixtureRow(
                    fixture_id,
                    entry.enabled,
                    entry.finished,
                    max(seqs, default=0),
                    len(seqs),
                    None,
                    state.state if state else None,
                    state.since if state else None,
                    state.connects if state else 0,
                    state.last_error if state else None,
                    entry.owner,
                )
            )
        return rows

    async def runnable_fixtures(self) -> list[uuid.UUID]:
        return [row.fixture_id for row in await self.fixtures() if row.enabled and not row.finished]

    async def save_states(self, states: Sequence[SavedState]) -> None:
        for state in states:
            if state.fixture_id in self.registry:
                self.registry[state.fixture_id].state = state


@dataclass
class MemoryLeases:
    """A :class:`ingest.worker.ports.Leases` for several workers over one :class:`MemorySink`: the
    same fair share as the database (runnable fixtures over live workers, rounded up)."""

    sink: MemorySink
    workers: set[str] = field(default_factory=set)

    def _runnable(self) -> list[uuid.UUID]:
        return [f for f, e in self.sink.registry.items() if e.enabled and not e.finished]

    async def fair_share(self, owner: str, ttl: float) -> int:
        live = len(self.workers | {owner})
        return -(-len(self._runnable()) // live)

    async def claim_fixtures(
        self, owner: str, ttl: float, max_fixtures: int | None, held: int
    ) -> list[uuid.UUID]:
        self.workers.add(owner)
        room = min(max_fixtures or 2**31, await self.fair_share(owner, ttl)) - held
        free = [f for f in self._runnable() if self.sink.registry[f].owner is None]
        claimed = free[: max(0, room)]
        for fixture_id in claimed:
            self.sink.registry[fixture_id].owner = owner
        return claimed

    async def renew_leases(
        self, owner: str, ttl: float, fixture_ids: Sequence[uuid.UUID]
    ) -> list[uuid.UUID]:
        self.workers.add(owner)
        return [f for f in fixture_ids if self.sink.registry[f].owner == owner]

    async def release_leases(
        self, owner: str, fixture_ids: Sequence[uuid.UUID] | None = None
    ) -> None:
        for fixture_id, entry in self.sink.registry.items():
            if entry.owner == owner and (fixture_ids is None or fixture_id in fixture_ids):
                entry.owner = None
        if fixture_ids is None:
            self.workers.discard(owner)


@dataclass
class MemorySource:
    """A :class:`ingest.worker.ports.Source` over recorded packets (JSON text, as sent by the feed).

    Each connection yields the fixture's packets from ``start_position`` on, numbered and keyed
    as the real client does (:class:`Keying`), and stays open after the last one (the caller
    decides what a finished packet ends). ``drop_after``: a connection ends
    (:class:`FeedUnavailable`) after this many packets. ``script``: per fixture, the positions
    each successive connection serves instead (to replay or skip packets); ``connects`` records
    every ``start_position`` asked for.
    """

    packets: dict[uuid.UUID, list[bytes]]
    drop_after: int | None = None
    script: dict[uuid.UUID, list[list[int]]] = field(default_factory=dict)
    connects: list[tuple[uuid.UUID, int]] = field(default_factory=list)
    unknown: set[uuid.UUID] = field(default_factory=set)  # the feed answers HTTP 404
    refuse_token: bool = False  # the feed refuses the token, as after its expiry

    async def stream(
        self,
        fixture_id: uuid.UUID,
        start_position: int,
        *,
        speed: str | None = None,
        on_connected: Callable[[], None] | None = None,
        keying: Keying | None = None,
        pulse: Pulse | None = None,
    ) -> AsyncGenerator[Action | Rejected, None]:
        self.connects.append((fixture_id, start_position))
        pulse = pulse if pulse is not None else Pulse()
        loop = asyncio.get_running_loop()
        pulse.at = loop.time()
        if self.refuse_token:
            raise AuthError("the feed refused the access token")
        if fixture_id in self.unknown:
            raise FixtureNotFound(f"the feed does not know fixture {fixture_id} (HTTP 404)")
        packets = self.packets.get(fixture_id)
        if packets is None:
            raise FeedUnavailable(f"no such fixture {fixture_id}", reason="http")
        plan = self.script.get(fixture_id)
        positions = plan.pop(0) if plan else list(range(start_position + 1, len(packets) + 1))
        if on_connected is not None:
            on_connected()
        keying = keying or Keying()
        keying.begin(start_position)
        position = start_position
        for sent, index in enumerate(positions):
            if self.drop_after is not None and sent >= self.drop_after:
                raise FeedUnavailable("dropped by the twin", reason="closed")
            await asyncio.sleep(0)
            frame = classify(
                packets[index - 1], binary=False, position=position + 1, received_at=_now()
            )
            if isinstance(frame, Control):
                pulse.at = loop.time()
                continue
            if isinstance(frame, Rejected):
                yield frame
                continue
            position += 1
            passed = keying.accept(frame)
            if keying.holding or any(isinstance(p, Action) for p in passed):
                pulse.at = loop.time()
            for item in passed:
                yield item
        await asyncio.Event().wait()  # a live connection with nothing new (yet)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class MemoryBettingBoard:
    """A :class:`ingest.worker.ports.BettingBoard` in dicts, with the database's rules (migration
    0010): a repeat of the latest status is skipped, ``closed`` is final, the provider's
    suspension comes first, and ``worker_silent`` is not written for a fixture confirmed alive.
    :meth:`stored` is what the trigger on ``actions`` does with a stored packet."""

    events: list[tuple[uuid.UUID, Betting]] = field(default_factory=list)
    latest: dict[uuid.UUID, Betting] = field(default_factory=dict)
    alive: dict[uuid.UUID, tuple[float, float]] = field(default_factory=dict)  # at, stale after
    provider: dict[uuid.UUID, str | None] = field(default_factory=dict)  # suspended / dropped
    finished: set[uuid.UUID] = field(default_factory=set)
    clock: Callable[[], float] = field(default=lambda: asyncio.get_running_loop().time())

    def _fresh(self, fixture_id: uuid.UUID) -> bool:
        at = self.alive.get(fixture_id)
        return at is not None and at[0] + at[1] >= self.clock()

    def _insert(self, fixture_id: uuid.UUID, betting: Betting) -> None:
        if betting != CLOSED:
            if fixture_id in self.finished or self.provider.get(fixture_id) == "dropped":
                return
            provider_first = betting.reason != Reason.PROVIDER_SUSPENDED
            if self.provider.get(fixture_id) == "suspended" and provider_first:
                return
            if betting.reason == Reason.WORKER_SILENT and self._fresh(fixture_id):
                return
        if self.latest.get(fixture_id) == betting:
            return
        self.latest[fixture_id] = betting
        self.events.append((fixture_id, betting))

    def stored(self, fixture_id: uuid.UUID, action: Action) -> None:
        """A packet stored: a Status Updated one states the provider's collection status."""
        status = None
        if action.type_id == 22:
            packet = json.loads(action.payload)
            meta = (packet.get("fixtureAction") or {}).get("metadata") or {}
            said = meta.get("collectionStatus")
            summary = (packet.get("fixtureSummary") or {}).get("collectionStatus")
            status = said if isinstance(said, str) else summary
        if status == "CollectionSuspended":
            self.provider[fixture_id] = "suspended"
            self._insert(fixture_id, suspended(Reason.PROVIDER_SUSPENDED))
        elif status == "CollectionDropped":
            self.provider[fixture_id] = "dropped"
        elif status == "CollectingLive":
            self.provider[fixture_id] = None
        if action.finished:
            self.finished.add(fixture_id)
        if action.finished or status == "CollectionDropped":
            self._insert(fixture_id, CLOSED)

    async def report_betting(
        self,
        worker: str,
        changes: dict[uuid.UUID, Betting],
        alive: Sequence[uuid.UUID],
        stale_after: float,
        *,
        sweep: bool = False,
        own: Sequence[uuid.UUID] = (),
    ) -> dict[uuid.UUID, Betting | None]:
        await asyncio.sleep(0)
        for fixture_id in sorted(changes):
            self._insert(fixture_id, changes[fixture_id])
        for fixture_id in alive:
            self.alive[fixture_id] = (self.clock(), stale_after)
        if sweep:
            for fixture_id, latest in sorted(self.latest.items()):
                if (
                    latest.is_open
                    and not self._fresh(fixture_id)
                    and fixture_id not in (*alive, *own)
                ):
                    self._insert(fixture_id, suspended(Reason.WORKER_SILENT))
        answer: dict[uuid.UUID, Betting | None] = {f: self.latest.get(f) for f in changes}
        for fixture_id in alive:
            if fixture_id not in answer and self.latest.get(fixture_id) != OPEN:
                answer[fixture_id] = self.latest.get(fixture_id)
        return answer

    async def leave_betting(self, worker: str, fixture_ids: Sequence[uuid.UUID]) -> None:
        for fixture_id in sorted(fixture_ids):
            self.alive.pop(fixture_id, None)
            self._insert(fixture_id, suspended(Reason.WORKER_SILENT))

    def of(self, fixture_id: uuid.UUID) -> list[Betting]:
        return [b for f, b in self.events if f == fixture_id]


@dataclass
class MemorySubscription:
    """A :class:`ingest.settlement.ports.Subscription`; set ``lost`` to break it."""

    channel: str
    on_payload: Callable[[str], None]
    lost: bool = False
    closed: bool = False

    async def ping(self) -> bool:
        await asyncio.sleep(0)  # a round trip
        return not self.lost

    async def close(self) -> None:
        self.closed = True


@dataclass
class MemoryLedger:
    """A :class:`ingest.settlement.ports.Ledger` over a :class:`MemorySink`.

    :meth:`write` is the worker's write (the sink's) followed by its ``NOTIFY ingest_actions``
    per fixture. A pass (:meth:`settle`) replays the fixture's packets as the database side
    reads them (the side the write path would have stored, from the Lineups in effect then)
    and appends the events after its checkpoint. ``holds``: fixture -> why it may not be
    settled now; ``fail_settles``: raised by the next passes, before they change anything.
    """

    sink: MemorySink = field(default_factory=MemorySink)
    holds: dict[uuid.UUID, str] = field(default_factory=dict)
    events: dict[uuid.UUID, list[Event]] = field(default_factory=dict)
    markets: dict[uuid.UUID, dict[str, int]] = field(default_factory=dict)
    checkpoints: dict[uuid.UUID, int] = field(default_factory=dict)
    subscriptions: list[MemorySubscription] = field(default_factory=list)
    fail_settles: list[BaseException] = field(default_factory=list)
    passes: int = 0  # settle calls that committed
    hold_checks: int = 0  # fixtures_on_hold calls

    async def write(
        self,
        actions: Sequence[tuple[uuid.UUID, Action]],
        rejected: Sequence[tuple[uuid.UUID, Rejected]] = (),
    ) -> WriteResult:
        before = set(self.sink.rows)
        result = await self.sink.write(actions, rejected)
        for fixture_id in result.inserted:
            new = [a for f, a in actions if f == fixture_id and (f, a.seq) not in before]
            payload = {"fixture_id": str(fixture_id), "max_seq": max(a.seq for a in new),
                       "inserted": result.inserted[fixture_id],
                       "finished": any(a.finished for a in new)}  # fmt: skip
            self.notify("ingest_actions", json.dumps(payload))
        return result

    def notify(self, channel: str, payload: str) -> None:
        for subscription in list(self.subscriptions):
            if subscription.channel == channel and not (subscription.lost or subscription.closed):
                subscription.on_payload(payload)

    async def listen(self, channel: str, on_payload: Callable[[str], None]) -> MemorySubscription:
        await asyncio.sleep(0)
        subscription = MemorySubscription(channel, on_payload)
        self.subscriptions.append(subscription)
        return subscription

    async def followed(self, fixture_ids: Sequence[uuid.UUID], follow_all: bool) -> list[uuid.UUID]:
        ids = list(dict.fromkeys(fixture_ids))
        if follow_all:
            registry = self.sink.registry
            enabled = sorted((f for f, e in registry.items() if e.enabled),
                             key=lambda f: (registry[f].added, f))  # fmt: skip
            ids += [f for f in enabled if f not in ids]
        return ids

    async def progress(self, fixture_ids: Sequence[uuid.UUID]) -> list[Progress]:
        rows = []
        for fixture_id in fixture_ids:
            entry = self.sink.registry.get(fixture_id)
            rows.append(
                Progress(
                    fixture_id,
                    max(self.sink.seqs(fixture_id), default=0),
                    entry is not None and entry.finished,
                    self.checkpoints.get(fixture_id, 0),
                )
            )
        return rows

    async def fixtures_on_hold(self, fixture_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
        self.hold_checks += 1
        return {f: self.holds[f] for f in fixture_ids if f in self.holds}

    async def settle(self, fixture_id: uuid.UUID) -> Settled:
        await asyncio.sleep(0)
        if self.fail_settles:
            raise self.fail_settles.pop(0)
        packets = self.packets(fixture_id)
        last_seq = packets[-1].seq if packets else 0
        checkpoint = self.checkpoints.get(fixture_id, 0)
        result = replay(packets, checkpoint)
        if last_seq <= checkpoint:
            return Settled(fixture_id, [], checkpoint, checkpoint, result.ended)
        opened = self.markets.setdefault(fixture_id, {})
        for market, seq in result.markets.items():
            opened.setdefault(market, seq)
        self.events.setdefault(fixture_id, []).extend(result.events)
        self.checkpoints[fixture_id] = last_seq
        self.passes += 1
        return Settled(fixture_id, result.events, last_seq, checkpoint, result.ended)

    def packets(self, fixture_id: uuid.UUID) -> list[Packet]:
        """Every stored packet of the fixture in seq order, as settlement reads it."""
        lineups, packets = Lineups(), []
        for seq in self.sink.seqs(fixture_id):
            action = self.sink.rows[(fixture_id, seq)]
            stored_side = None  # what the write path stores in actions.side
            if lineups.concerns(action.type_id, action.action_id):
                home, away = action.lineup or (None, None)
                lineups.see(
                    action_key(action.action_id, seq),
                    LineupPacket(seq, home, away, action.send_type_id, action.type_id),
                )
            elif action.team_id is not None:
                stored_side = lineups.sides.get(action.team_id)
            packets.append(_settlement_packet(action, stored_side))
        return packets


def _settlement_packet(action: Action, stored_side: str | None) -> Packet:
    packet = orjson.loads(action.payload)
    fa, summary = packet.get("fixtureAction"), packet.get("fixtureSummary")
    metadata = fa.get("metadata") if isinstance(fa, dict) else None
    collection: Any = summary.get("collectionStatus") if isinstance(summary, dict) else None
    if collection is not None and not isinstance(collection, str):
        collection = json.dumps(collection)  # as PostgreSQL's #>> shows a JSON value
    return Packet(
        seq=action.seq,
        action_id=action.action_id,
        type_id=action.type_id,
        send_type_id=action.send_type_id,
        period=action.period,
        side=stored_side,
        finished=action.finished,
        metadata=metadata if isinstance(metadata, dict) else None,
        summary_collection=collection,
        team_id=action.team_id,
        lineup=(action.lineup or (None, None)) if action.type_id == LINEUPS else None,
    )
