"""Settlement as events: which markets the stored packets decide, and the changes between states.

Pure logic, no I/O. A settlement pass (:meth:`ingest.settlement.ports.Ledger.settle`) reads a
fixture's relevant packets in seq order, folds them here one by one and appends the
:class:`Event` s this module derives. The market state after packet ``seq`` depends only on
the packets up to ``seq``, so the event log is the same whether the settler follows a match
live, catches up after a crash or replays a finished one: one event per change,
``decided_by_seq`` the packet that made it.

The rules follow the settlement views of migration 0003 (latest state per ``actionId``;
Cancelled and Deleted do not count; Pending is provisional; a side is the acting team's through
the Lineups in effect, by :class:`ingest.feed.vocabulary.Lineups`, else the side stored with
the packet). Folded packet by packet, the Lineups in effect are those of the packets so far:
a corrected Lineups settles each side's markets again at the packet that corrects it.
``tests/integration/test_market_rules.py`` holds these rules and the views equal on generated
matches with corrections; it names the two cases where they knowingly differ.

- ``frame_winner:<n>``: settled by frame n's Frame Ended in effect (its side, else its
  ``homePoints``/``awayPoints``); ``provisional`` while that Frame Ended is Pending.
- ``century_in_match`` / ``maximum_in_match``: ``yes`` as soon as an effective Break Ended of
  100+ / 147 exists (``provisional`` while every such break is Pending), ``no`` once the match
  has ended without one.
- ``match_winner``, ``correct_score``, ``highest_break_side``: once the match has ended (a
  ``finished`` packet that is not a drop); ``provisional`` while the ending packet, a Frame Ended
  in effect (winner, score) or the highest break (side) is Pending. The highest break's tie goes
  to the break made first (lowest first seq of its action).
- Once the match has ended, a market still undecided (a frame without a Frame Ended in effect)
  is void: nothing can decide it any more (until a correction does).
- A match the provider dropped (the latest collection status is ``CollectionDropped``) voids every
  market it has not settled; a later ``CollectingLive`` reopens them (``rollback_void``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ingest.feed.vocabulary import (
    BREAK_ENDED,
    CANCELLED,
    COLLECTING_LIVE,
    COLLECTION_DROPPED,
    DELETED,
    FRAME_ENDED,
    FRAME_STARTED,
    LINEUPS,
    PENDING,
    STATUS_UPDATED,
    LineupPacket,
    Lineups,
    Side,
    action_key,
)

# the action types settlement reads (with every packet of an action that was one of them, and
# every finished packet); the Lineups say which team is home
RELEVANT_TYPES = (LINEUPS, FRAME_STARTED, FRAME_ENDED, BREAK_ENDED, STATUS_UPDATED)
DROPPED, LIVE = COLLECTION_DROPPED, COLLECTING_LIVE

MATCH_MARKETS = (
    "match_winner",
    "correct_score",
    "century_in_match",
    "maximum_in_match",
    "highest_break_side",
)
KINDS = ("settle", "rollback", "void", "rollback_void")

Kind = Literal["settle", "rollback", "void", "rollback_void"]


@dataclass(frozen=True)
class Packet:
    """What settlement needs of one stored packet (the store selects only relevant ones)."""

    seq: int
    action_id: str | None
    type_id: int | None
    send_type_id: int | None
    period: int | None
    side: str | None  # as the write path stored it (by the Lineups in effect then)
    finished: bool
    metadata: Mapping[str, Any] | None = None
    summary_collection: str | None = None  # fixtureSummary.collectionStatus
    team_id: str | None = None
    lineup: tuple[str | None, str | None] | None = None  # a Lineups packet: home, away team ids


@dataclass(frozen=True)
class Decision:
    """A market's state: ``open``, ``settled`` (with outcome and certainty) or ``void``."""

    status: Literal["open", "settled", "void"]
    outcome: str | None = None
    certainty: str | None = None


OPEN = Decision("open")
VOID = Decision("void")


@dataclass(frozen=True)
class Event:
    market: str
    kind: Kind
    decided_by_seq: int
    outcome: str | None = None
    certainty: str | None = None


@dataclass
class _Action:
    packet: Packet
    first_seq: int

    @property
    def effective(self) -> bool:
        return self.packet.send_type_id not in (CANCELLED, DELETED)

    @property
    def pending(self) -> bool:
        return self.packet.send_type_id == PENDING


def _certainty(provisional: bool) -> str:
    return "provisional" if provisional else "confirmed"


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


@dataclass
class Match:
    """The effective state of one fixture, folded packet by packet."""

    actions: dict[str, _Action] = field(default_factory=dict)
    first_seq: int | None = None
    frames_seen: dict[int, int] = field(default_factory=dict)  # frame -> seq that opened it
    ended_by: _Action | None = None  # the finished packet that is not a drop
    collection: str | None = None
    lineups: Lineups = field(default_factory=Lineups)  # which team is home, so far

    def apply(self, packet: Packet) -> None:
        if self.first_seq is None:
            self.first_seq = packet.seq
        key = action_key(packet.action_id, packet.seq)
        known = self.actions.get(key)
        action = _Action(packet, known.first_seq if known else packet.seq)
        self.actions[key] = action
        if self.lineups.concerns(packet.type_id, packet.action_id):
            home, away = packet.lineup or (None, None)
            self.lineups.see(
                key, LineupPacket(packet.seq, home, away, packet.send_type_id, packet.type_id)
            )
        if (
            packet.period is not None
            and packet.period >= 1
            and packet.type_id
            in (
                FRAME_STARTED,
                FRAME_ENDED,
            )
        ):
            self.frames_seen.setdefault(packet.period, packet.seq)
        status = self._collection_of(packet)
        if status is not None:
            self.collection = status
        if packet.finished and status != DROPPED:
            self.ended_by = action

    @staticmethod
    def _collection_of(packet: Packet) -> str | None:
        if packet.type_id != STATUS_UPDATED and not packet.finished:
            return None
        meta = packet.metadata.get("collectionStatus") if packet.metadata else None
        return meta if isinstance(meta, str) else packet.summary_collection

    @property
    def dropped(self) -> bool:
        return self.collection == DROPPED

    def side_of(self, packet: Packet) -> Side | None:
        """The side of the team that made a packet, by the Lineups in effect now (as the views
        read every action's side through the fixture's current Lineups)."""
        return self.lineups.side(packet.team_id, packet.side)

    def markets(self) -> dict[str, int]:
        """Every market seen so far, with the packet that opened it."""
        if self.first_seq is None:
            return {}
        seen = {market: self.first_seq for market in MATCH_MARKETS}
        seen.update({f"frame_winner:{n}": seq for n, seq in self.frames_seen.items()})
        return seen

    def decisions(self) -> dict[str, Decision]:
        effective = [a for a in self.actions.values() if a.effective]
        # frames: the Frame Ended in effect with the latest packet decides
        frame_ends: dict[int, _Action] = {}
        for a in effective:
            p = a.packet
            if p.type_id == FRAME_ENDED and p.period is not None and p.period >= 1:
                current = frame_ends.get(p.period)
                if current is None or p.seq > current.packet.seq:
                    frame_ends[p.period] = a
        result: dict[str, Decision] = {}
        winners: dict[int, str] = {}
        for n in self.frames_seen:
            end = frame_ends.get(n)
            winner = _frame_winner(end.packet, self.side_of(end.packet)) if end else None
            if end is None or winner is None:
                result[f"frame_winner:{n}"] = OPEN
                continue
            winners[n] = winner
            result[f"frame_winner:{n}"] = Decision("settled", winner, _certainty(end.pending))

        breaks = [
            (score, a)
            for a in effective
            if a.packet.type_id == BREAK_ENDED
            and (score := _int((a.packet.metadata or {}).get("breakScore"))) is not None
        ]
        ended = self.ended_by is not None and not self.dropped
        end_pending = self.ended_by is not None and self.ended_by.pending
        for market, threshold in (("century_in_match", 100), ("maximum_in_match", 147)):
            deciding = [a for score, a in breaks if score >= threshold]
            if deciding:
                all_pending = all(a.pending for a in deciding)
                result[market] = Decision("settled", "yes", _certainty(all_pending))
            elif ended:
                result[market] = Decision("settled", "no", _certainty(end_pending))
            else:
                result[market] = OPEN

        if ended:
            home = sum(w == "home" for w in winners.values())
            away = sum(w == "away" for w in winners.values())
            frames_pending = end_pending or any(
                frame_ends[n].pending for n in winners if n in frame_ends
            )
            certainty = _certainty(frames_pending)
            result["correct_score"] = Decision("settled", f"{home}-{away}", certainty)
            result["match_winner"] = (
                Decision("settled", "home" if home > away else "away", certainty)
                if home != away
                else VOID  # a finished match without a winner: nothing to pay out
            )
            if breaks:
                _, best = max(breaks, key=lambda b: (b[0], -b[1].first_seq))
                side = self.side_of(best.packet)
                result["highest_break_side"] = (
                    Decision("settled", side, _certainty(end_pending or best.pending))
                    if side is not None
                    else VOID
                )
            else:
                result["highest_break_side"] = VOID  # no break at all: no outcome to settle
        else:
            for market in ("match_winner", "correct_score", "highest_break_side"):
                result[market] = OPEN

        if self.dropped or ended:
            # dropped: void whatever is not settled; ended: what the match left undecided (a
            # frame without a Frame Ended in effect) can no longer be decided
            result = {m: (d if d.status == "settled" else VOID) for m, d in result.items()}
        return result


def _frame_winner(packet: Packet, side: Side | None) -> str | None:
    """A Frame Ended's winner: the side that won it, else the one with more points."""
    if side is not None:
        return side
    meta = packet.metadata or {}
    home, away = _int(meta.get("homePoints")), _int(meta.get("awayPoints"))
    if home is None or away is None or home == away:
        return None
    return "home" if home > away else "away"


def changes(before: Decision, after: Decision, market: str, seq: int) -> Iterator[Event]:
    """The events that take a market from one state to the next (none if equal)."""
    if before == after:
        return
    if before.status == "settled":
        if after.status == "settled":  # a new outcome or certainty: settled again
            yield Event(market, "settle", seq, after.outcome, after.certainty)
            return
        yield Event(market, "rollback", seq)
    elif before.status == "void":
        yield Event(market, "rollback_void", seq)
    if after.status == "settled":
        yield Event(market, "settle", seq, after.outcome, after.certainty)
    elif after.status == "void":
        yield Event(market, "void", seq)


@dataclass
class Replay:
    """The events of a fixture's packets after ``checkpoint``, and the markets they opened."""

    events: list[Event]
    markets: dict[str, int]  # market -> opening seq (every market seen up to the last packet)
    decisions: dict[str, Decision]  # the state after the last packet
    ended: bool  # the match has ended (not dropped)


def replay(packets: Iterable[Packet], checkpoint: int) -> Replay:
    """Fold ``packets`` (in seq order, from the fixture's first) and return the events decided
    by those after ``checkpoint``: the events up to it were written with the checkpoint."""
    match = Match()
    state: dict[str, Decision] | None = None
    events: list[Event] = []
    for packet in packets:
        if packet.seq > checkpoint and state is None:
            state = match.decisions()
        match.apply(packet)
        if state is None:
            continue
        after = match.decisions()
        for market in sorted(after.keys() | state.keys()):
            events.extend(
                changes(state.get(market, OPEN), after.get(market, OPEN), market, packet.seq)
            )
        state = after
    final = match.decisions()
    return Replay(events, match.markets(), final, match.ended_by is not None and not match.dropped)
