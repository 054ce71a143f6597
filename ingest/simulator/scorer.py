"""The scorer's mistakes and their corrections, each a new packet for the same ``actionId``.

A pot is sometimes sent Pending then Confirmed, with the wrong colour then Updated, or Deleted by
mistake then Restored; a foul that did not happen is sent and then Cancelled or Deleted; a Frame
Ended can be taken back (Cancelled) and Restored. Corrections are always resolved by the
packet(s) immediately following the original one, so ordering effective actions by the
sequence number of their first packet gives the real order of play. Frame Ended (unless
``frame_end_corrections`` asks), Match Ended, Break Ended, Striker and Frame Started/Conceded
packets are never corrected. The mistakes draw from the match's ``noise`` alone: the match
played is the same with corrections on or off.
"""

from __future__ import annotations

import random
from typing import Any

from ingest.feed.vocabulary import (
    BALL_POTTED,
    CANCELLED,
    CONFIRMED,
    DELETED,
    FOUL,
    PENDING,
    RESTORED,
    UPDATED,
    Side,
)
from ingest.simulator.packets import Packets
from ingest.simulator.shots import opponent
from ingest.simulator.table import BALL_NAMES


class Scorer:
    """Sends what the scorer at the table records, mistakes and corrections included."""

    def __init__(self, packets: Packets, noise: random.Random, *, mistakes: bool) -> None:
        self.packets = packets
        self.noise = noise
        self.mistakes = mistakes

    def pot(self, side: Side, ball: int, break_score: int) -> str:
        """Send a Ball Potted (with its correction packets, if any); its actionId."""
        packets = self.packets
        roll = self.noise.random() if self.mistakes else 1.0
        if roll < 0.05:  # sent Pending, then Confirmed
            fa = packets.emit(
                BALL_POTTED, send=PENDING, side=side, ball=ball, metadata=_pot(ball, break_score)
            )
            packets.resend(fa, CONFIRMED)
        elif roll < 0.065 and ball >= 2:  # wrong colour sent, then Updated to the right one
            wrong = self.noise.choice([b for b in range(2, 8) if b != ball and abs(b - ball) <= 2])
            fa = packets.emit(
                BALL_POTTED,
                side=side,
                ball=wrong,
                metadata=_pot(wrong, break_score - ball + wrong),
            )
            packets.resend(
                fa,
                UPDATED,
                fixtureActionSubType=BALL_NAMES[ball],
                fixtureActionSubTypeId=ball,
                metadata=_pot(ball, break_score),
            )
        elif roll < 0.0665:  # deleted by mistake, then Restored
            fa = packets.emit(BALL_POTTED, side=side, ball=ball, metadata=_pot(ball, break_score))
            packets.resend(fa, DELETED)
            packets.resend(fa, RESTORED)
        else:
            fa = packets.emit(BALL_POTTED, side=side, ball=ball, metadata=_pot(ball, break_score))
        return str(fa["actionId"])

    def spurious_foul(self, side: Side) -> None:
        """Now and then, a foul that did not happen: Pending then Cancelled, or Confirmed then
        Deleted."""
        if not self.mistakes:
            return
        roll = self.noise.random()
        if roll >= 0.008:
            return
        self.packets.clock.advance(2.0, 10.0)
        metadata = {"foulPoints": 4, "awardedTo": opponent(side)}
        if roll < 0.004:
            fa = self.packets.emit(FOUL, send=PENDING, side=side, metadata=metadata)
            self.packets.resend(fa, CANCELLED)
        else:
            fa = self.packets.emit(FOUL, side=side, metadata=metadata)
            self.packets.resend(fa, DELETED)

    def take_back_frame_end(
        self, ended: dict[str, Any], period: dict[str, Any], winner: Side
    ) -> None:
        """Frame Ended, Cancelled (the summary shows the frame unfinished), then Restored."""
        st, step = self.packets.summary, {"home": (1, 0), "away": (0, 1)}[winner]
        period["isFinished"], period["winner"] = False, None
        st.home_frames, st.away_frames = st.home_frames - step[0], st.away_frames - step[1]
        self.packets.resend(ended, CANCELLED)
        period["isFinished"], period["winner"] = True, winner
        st.home_frames, st.away_frames = st.home_frames + step[0], st.away_frames + step[1]
        self.packets.resend(ended, RESTORED)


def _pot(value: int, running: int) -> dict[str, Any]:
    return {"points": value, "breakScore": running}
