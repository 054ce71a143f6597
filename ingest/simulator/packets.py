"""Packet emission: each action numbered, stamped and folded into the ``fixtureSummary`` it carries.

Every packet carries a ``fixtureSummary`` that reflects the *effective* state after that packet:
the effective state of an action is its latest packet, and actions whose latest packet is
Cancelled (3) or Deleted (4) do not count; Pending (1), Updated (2), Confirmed (5) and
Restored (6) do. Frame points in ``periods`` are therefore always the sum of the effective Ball
Potted points of a side plus the effective foul points awarded to it. A correction is a new
packet for the same ``actionId`` (:meth:`Packets.resend`).
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ingest.feed.vocabulary import (
    ACTION_TYPES,
    BALL_POTTED,
    CANCELLED,
    CONFIRMED,
    DELETED,
    FOUL,
    SEND_TYPES,
    Side,
)
from ingest.simulator.shots import Player
from ingest.simulator.table import BALL_NAMES

_MICRO = 1_000_000


def random_uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def format_ts(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_clock(seconds: int) -> str:
    minutes, secs = divmod(max(seconds, 0), 60)
    return f"{minutes:02d}:{secs:02d}"


class Clock:
    """The match's time: ``now`` moves on by amounts drawn from the match's ``timing``."""

    def __init__(self, rng: random.Random, now: datetime) -> None:
        self.rng = rng
        self.now = now

    def advance(self, low: float, high: float) -> None:
        self.now += timedelta(microseconds=round(self.rng.uniform(low, high) * _MICRO))


@dataclass
class Summary:
    """What the fixtureSummary shows; frame points come from the effective actions."""

    home_frames: int = 0
    away_frames: int = 0
    current_period: int = 0
    status: str = "Scheduled"
    collection_status: str = "CollectionScheduled"
    clock_running: bool = False
    frozen_clock: int = 0
    frame_started_at: datetime | None = None
    home_in_possession: bool = True
    finished: bool = False
    reason: tuple[str, int] | None = None
    periods: list[dict[str, Any]] = field(default_factory=list)

    def clock_seconds(self, now: datetime) -> int:
        """The frame clock at ``now``."""
        if self.clock_running and self.frame_started_at is not None:
            return int((now - self.frame_started_at).total_seconds())
        return self.frozen_clock

    def as_json(self, now: datetime) -> dict[str, Any]:
        clock = format_clock(self.clock_seconds(now))
        return {
            "homeTeamScore": self.home_frames,
            "awayTeamScore": self.away_frames,
            "currentPeriod": self.current_period,
            "currentStatus": self.status,
            "collectionStatus": self.collection_status,
            "currentClockTime": clock,
            "currentClockState": "Running" if self.clock_running else "Stopped",
            "isHomeTeamInPossesion": self.home_in_possession,
            "isTied": self.home_frames == self.away_frames,
            "finished": self.finished,
            "reason": self.reason[0] if self.reason else None,
            "reasonId": self.reason[1] if self.reason else None,
            "periods": [dict(p) for p in self.periods],
        }


class Packets:
    """The packets of one match, in stream order: :meth:`emit` a new action, :meth:`resend` a
    correction. Identifiers come from the match's ``ids``, times from its :class:`Clock`."""

    def __init__(
        self,
        fixture_id: uuid.UUID,
        ids: random.Random,
        clock: Clock,
        summary: Summary,
        players: Mapping[Side, Player],
    ) -> None:
        self.fixture_id = fixture_id
        self.ids = ids
        self.clock = clock
        self.summary = summary
        self.players = players
        self.team_side = {p.team_id: p.side for p in players.values()}
        self.sent: list[dict[str, Any]] = []
        self.latest: dict[str, dict[str, Any]] = {}  # actionId -> latest fixtureAction

    def emit(
        self,
        type_id: int,
        *,
        send: int = CONFIRMED,
        side: Side | None = None,
        ball: int | None = None,
        metadata: dict[str, Any] | None = None,
        related: Iterable[str] = (),
        finished: bool = False,
    ) -> dict[str, Any]:
        """A new action, sent now; its ``fixtureAction``."""
        fa = self._action(type_id, send, side, ball, metadata, related)
        return self._publish(fa, finished=finished)

    def resend(self, original: dict[str, Any], send: int, **changes: Any) -> dict[str, Any]:
        """A correction: a new packet for the same actionId (same data unless changed)."""
        self.clock.advance(1.0, 8.0)
        fa = json.loads(json.dumps(original))
        fa.update(changes)
        fa["sendType"] = SEND_TYPES[send]
        fa["sendTypeId"] = send
        return self._publish(fa)

    def _action(
        self,
        type_id: int,
        send: int,
        side: Side | None,
        ball: int | None,
        metadata: dict[str, Any] | None,
        related: Iterable[str],
    ) -> dict[str, Any]:
        fa: dict[str, Any] = {
            "fixtureId": str(self.fixture_id),
            "actionId": str(random_uuid(self.ids)),
            "fixtureSeqNum": 0,
            "timelineSequence": 0.0,
            "timestamp": "",
            "period": self.summary.current_period,
            "clockTime": format_clock(self.summary.clock_seconds(self.clock.now)),
            "fixtureActionType": ACTION_TYPES[type_id],
            "fixtureActionTypeId": type_id,
        }
        if ball is not None:
            fa["fixtureActionSubType"] = BALL_NAMES[ball]
            fa["fixtureActionSubTypeId"] = ball
        fa["sendType"] = SEND_TYPES[send]
        fa["sendTypeId"] = send
        fa["relatedFixtureActionIds"] = list(related)
        if side is not None:
            player = self.players[side]
            fa["team"] = {"id": player.team_id, "name": player.name}
            fa["player"] = {"id": player.player_id, "name": player.name}
        fa["metadata"] = metadata if metadata is not None else {}
        return fa

    def _publish(self, fa: dict[str, Any], *, finished: bool = False) -> dict[str, Any]:
        """Number ``fa``, fold it into the effective state and append the packet."""
        seq = len(self.sent) + 1
        fa["fixtureSeqNum"] = seq
        fa["timelineSequence"] = float(seq)
        fa["timestamp"] = format_ts(self.clock.now)
        previous = self.latest.get(fa["actionId"])
        if previous is not None:
            self._apply(self._contribution(previous), -1)
        self._apply(self._contribution(fa), +1)
        self.latest[fa["actionId"]] = fa
        packet = {
            "traceId": f"{self.ids.getrandbits(128):032x}",
            "version": 3,
            "finished": finished,
            "fixtureAction": fa,
            "fixtureSummary": self.summary.as_json(self.clock.now),
        }
        self.summary.reason = None  # a reason is shown on the packet where the interval starts
        self.sent.append(packet)
        return fa

    def _contribution(self, fa: dict[str, Any]) -> tuple[int, Side, int] | None:
        """(frame, side credited, points) of an action in effect, else None."""
        if fa["sendTypeId"] in (CANCELLED, DELETED):
            return None
        type_id = fa["fixtureActionTypeId"]
        if type_id == BALL_POTTED:
            side = self.team_side[fa["team"]["id"]]
            return fa["period"], side, int(fa["metadata"]["points"])
        if type_id == FOUL:
            awarded: Side = fa["metadata"]["awardedTo"]
            return fa["period"], awarded, int(fa["metadata"]["foulPoints"])
        return None

    def _apply(self, contribution: tuple[int, Side, int] | None, sign: int) -> None:
        if contribution is None:
            return
        frame, side, points = contribution
        period = self.summary.periods[frame - 1]
        key = "homeTeamScore" if side == "home" else "awayTeamScore"
        period[key] += sign * points
