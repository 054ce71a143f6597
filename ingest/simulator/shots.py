"""The shot model: how a player's visit to the table goes (randomness from the match's ``game``).

Each player has a pot probability (a per-match level in 0.85-0.92, +-0.015 per player). A visit
is a safety, a foul or a scoring chance; the first pot of a chance is harder, and a player in
rhythm (6+ pots) pots slightly more. After a red the black is usually taken, a bit more often
while a maximum is on. A player needing snookers concedes three times in four.

Nothing here makes a packet: :func:`play_visit` says what happened (the balls potted, the foul
that ended the visit) and updates the :class:`Table`; the match sends the packets for it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ingest.feed.vocabulary import Side
from ingest.simulator.table import Table

# The colour chosen after a red (index = ball value), by weight.
_COLOUR_CHOICE = (2, 3, 4, 5, 6, 7)
_COLOUR_WEIGHTS = (2, 2, 4, 12, 18, 62)


def opponent(side: Side) -> Side:
    return "away" if side == "home" else "home"


@dataclass
class Player:
    """One side of the match: who they are in the packets, and how well they play."""

    side: Side
    name: str
    team_id: str
    player_id: str
    skill: float  # probability of potting the next ball once in a break


@dataclass
class Visit:
    """What one visit to the table did."""

    balls: list[int] = field(default_factory=list)  # the balls potted, in order (by value)
    foul_points: int = 0  # the foul that ended the visit; 0: no foul
    frame_over: bool = False
    respot_started: bool = False

    @property
    def fouled(self) -> bool:
        return self.foul_points != 0


def play_visit(rng: random.Random, player: Player, table: Table, *, break_off: bool) -> Visit:
    """Play one visit of ``player``: the balls it pots and the foul ending it go into the table's
    state and points, and are returned for the packets."""
    visit = Visit()
    if break_off:
        if rng.random() < 0.03:
            visit.foul_points = 4
    elif table.respot:
        roll = rng.random()
        if roll < 0.3:
            visit.balls.append(7)
            table.points[player.side] += 7
            visit.frame_over = True
        elif roll < 0.36:
            visit.foul_points = 7
    else:
        roll = rng.random()
        chance = 0.30 + (player.skill - 0.82) * 2.0
        if roll < 0.06:
            visit.foul_points = foul_value(rng, choose_ball(rng, table))
        elif roll < 0.06 + chance:
            _scoring_chance(rng, player, table, visit)
    if visit.foul_points:
        _foul(table, player.side, visit)
    table.end_visit()
    return visit


def _scoring_chance(rng: random.Random, player: Player, table: Table, visit: Visit) -> None:
    """Pot until a miss (perhaps a foul), the table is cleared or the black is re-spotted."""
    skill = player.skill
    p = skill - 0.12  # the first pot is the hard one
    maximum_on = table.reds == table.racked
    while True:
        maximum_on = maximum_on and all(b in (1, 7) for b in visit.balls)
        ball = choose_ball(rng, table, maximum_on)
        if rng.random() >= p:
            if rng.random() < 0.07:
                visit.foul_points = foul_value(rng, ball)
            return
        visit.balls.append(ball)
        table.points[player.side] += ball
        if table.pot_ball_on():  # the table is cleared
            if table.tied():
                table.respot_black()
                visit.respot_started = True
            else:
                visit.frame_over = True
            return
        p = skill if len(visit.balls) < 6 else min(0.97, skill + 0.025)  # in rhythm


def _foul(table: Table, side: Side, visit: Visit) -> None:
    """The foul's points go to the opponent; on the last black it ends the frame, or re-spots
    the black when it leaves the scores tied."""
    final_black = table.final_black() and not visit.respot_started
    table.points[opponent(side)] += visit.foul_points
    if final_black:
        if table.tied():  # fouled the last black into a tie
            table.respot = True
            visit.respot_started = True
        else:
            visit.frame_over = True


def choose_ball(rng: random.Random, table: Table, maximum_on: bool = False) -> int:
    """The ball the player goes for."""
    if table.respot:
        return 7
    if table.colour_due:
        if maximum_on and rng.random() < 0.35:  # a maximum is on: favour the black
            return 7
        return rng.choices(_COLOUR_CHOICE, weights=_COLOUR_WEIGHTS)[0]
    if table.reds > 0:
        return 1
    return table.next_colour


def foul_value(rng: random.Random, ball_on: int) -> int:
    """Foul points: the value of the ball on or of a ball involved, at least 4."""
    value = ball_on
    if rng.random() < 0.15:
        value = max(value, rng.randint(2, 7))
    return max(4, min(7, value))


def concession(rng: random.Random, table: Table) -> Side | None:
    """The side that concedes the frame after a visit, if one does: the one needing snookers,
    three times in four (never on a re-spotted black)."""
    if table.respot:
        return None
    points = table.points
    trailing: Side = "home" if points["home"] < points["away"] else "away"
    deficit = abs(points["home"] - points["away"])
    if deficit > table.remaining() and rng.random() < 0.75:
        return trailing
    return None
