"""The ground truth of a generated match: what really happened, for tests to compare with."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ingest.feed.vocabulary import Side
from ingest.simulator.shots import Player


@dataclass
class FrameRecord:
    number: int
    home_points: int = 0
    away_points: int = 0
    winner: Side | None = None
    conceded: bool = False
    respotted_black: bool = False


@dataclass
class Truth:
    """Kept as the match is played: its frames, completed breaks, fouls and pots per side."""

    frames: list[FrameRecord] = field(default_factory=list)
    breaks: list[dict[str, Any]] = field(default_factory=list)
    fouls: dict[Side, int] = field(default_factory=lambda: {"home": 0, "away": 0})
    pots: dict[Side, int] = field(default_factory=lambda: {"home": 0, "away": 0})

    def as_json(
        self,
        *,
        fixture_id: uuid.UUID,
        best_of: int,
        reds: int,
        players: Mapping[Side, Player],
        winner: Side,
        frames_won: tuple[int, int],
        packets: int,
    ) -> dict[str, Any]:
        return {
            "fixture_id": str(fixture_id),
            "best_of": best_of,
            "reds": reds,
            **{
                side: {"team_id": p.team_id, "player_id": p.player_id, "name": p.name}
                for side, p in players.items()
            },
            "winner": winner,
            "home_frames": frames_won[0],
            "away_frames": frames_won[1],
            "frames": [
                {
                    "frame_number": f.number,
                    "home_points": f.home_points,
                    "away_points": f.away_points,
                    "winner": f.winner,
                    "conceded": f.conceded,
                    "respotted_black": f.respotted_black,
                }
                for f in self.frames
            ],
            "breaks": list(self.breaks),
            "fouls": dict(self.fouls),
            "pots": dict(self.pots),
            "packets": packets,
        }
