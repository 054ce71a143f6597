"""The table during a frame: the balls on it, what is on, and the frame's score (no randomness).

The rules as the generator plays them: a visit starts on a red while reds remain, a red makes a
colour "on", and once the reds are gone the colours go down in order (yellow 2 to black 7). A tie
after the last black re-spots it, for one more black.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ingest.feed.vocabulary import Side

BALL_NAMES: dict[int, str] = {
    1: "Red",
    2: "Yellow",
    3: "Green",
    4: "Brown",
    5: "Blue",
    6: "Pink",
    7: "Black",
}
# the keys of a Break Ended's ``pottedBalls``, by ball value
POTTED_BALL_KEYS: dict[int, str] = {
    1: "redBalls",
    2: "yellowBalls",
    3: "greenBalls",
    4: "brownBalls",
    5: "blueBalls",
    6: "pinkBalls",
    7: "blackBalls",
}


@dataclass
class Table:
    """The balls on the table, from the point of view of the rules, and the frame's points."""

    reds: int
    colour_due: bool = False  # a red was just potted: any colour is on
    next_colour: int = 2  # colours phase: the lowest colour left; 8 = table cleared
    respot: bool = False  # re-spotted black after a tie
    racked: int = field(init=False)  # the reds the frame began with
    points: dict[Side, int] = field(init=False)

    def __post_init__(self) -> None:
        self.racked = self.reds
        self.points = {"home": 0, "away": 0}

    def in_colours_phase(self) -> bool:
        return self.reds == 0 and not self.colour_due

    def remaining(self) -> int:
        """Most points still available on the table (snookers aside)."""
        if self.respot:
            return 7
        if not self.in_colours_phase():
            return self.reds * 8 + (7 if self.colour_due else 0) + 27
        return sum(range(self.next_colour, 8))

    def final_black(self) -> bool:
        return self.respot or (self.in_colours_phase() and self.next_colour == 7)

    def tied(self) -> bool:
        return self.points["home"] == self.points["away"]

    def pot_ball_on(self) -> bool:
        """The ball on went down: the next one is on. True when it was the last colour."""
        if self.colour_due:
            self.colour_due = False
        elif self.reds > 0:
            self.reds -= 1
            self.colour_due = True
        else:
            self.next_colour += 1
            return self.next_colour == 8
        return False

    def respot_black(self) -> None:
        """A tie after the last black: the black is spotted again, and is the only ball on."""
        self.respot = True
        self.next_colour = 7

    def end_visit(self) -> None:
        """The next visit starts on a red (or on the lowest colour)."""
        self.colour_due = False
