"""The status table: names and errors shortened at word boundaries to fit the terminal."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from rich.console import Console

from ingest.status import rows_as_dicts, shorten, summary, table
from ingest.worker.ports import FixtureRow

ERROR = (
    "the feed sent a frame of 80,000,000 bytes at seq 412, over the 64 MiB limit, "
    "before the fixture finished; retrying every 30 s in case the provider fixes it"
)


def test_shorten_cuts_at_a_word_boundary() -> None:
    assert shorten("before the fixture finished", 100) == "before the fixture finished"
    assert shorten("before the fixture finished", 22) == "before the fixture…"
    assert shorten("before the fixture finished", 19) == "before the fixture…"
    assert shorten("before the fixture finished", 18) == "before the…"
    assert shorten("before the fixture finished", 8) == "before…"
    assert shorten("Supercalifragilistic", 8) == "Superca…"  # one long word: cut inside it
    assert shorten("a  spaced\n  text", 20) == "a spaced text"
    for width in range(1, len(ERROR) + 2):
        cut = shorten(ERROR, width)
        assert len(cut) <= width
        if cut != ERROR and len(cut) > 1:
            kept = cut.removesuffix("…")
            assert ERROR.startswith(kept)
            assert ERROR[len(kept)] in " ,;" or " " not in kept, cut


def entries() -> list[dict[str, object]]:
    now = datetime.now(UTC)
    rows = [
        FixtureRow(
            fixture_id=__import__("uuid").UUID(int=n),
            enabled=True,
            finished=False,
            last_seq=100 * n,
            packets=100 * n,
            last_packet_at=now,
            state="blocked" if n == 1 else "connected",
            connects=3,
            last_error=ERROR if n == 1 else None,
        )
        for n in (1, 2)
    ]
    scores = {
        rows[0].fixture_id: {"home_player": "Christopher Wakelin", "away_player": "Mark Selby",
                             "home_frames": 5, "away_frames": 3, "current_frame": 9,
                             "home_points": 45, "away_points": 12, "status": "in play"},
        rows[1].fixture_id: {"home_player": "Mark Wilson", "away_player": "Joe O'Connor",
                             "home_frames": 0, "away_frames": 0, "current_frame": 1,
                             "home_points": 7, "away_points": 0, "status": "in play"},
    }  # fmt: skip
    mismatches = {rows[1].fixture_id: [{"field": "home_frames"}]}
    return rows_as_dicts(rows, {}, now, mismatches, scores)  # type: ignore[return-value]


def render(width: int) -> list[str]:
    found = entries()
    out = io.StringIO()
    Console(file=out, width=width, highlight=False).print(table(found, summary(found), width))
    return out.getvalue().splitlines()


def test_the_table_shows_the_match_and_fits_the_terminal() -> None:
    wide = "\n".join(render(300))
    assert "Christopher Wakelin 5-3 Mark Selby" in wide and "9: 45-12" in wide
    assert "DISAGREES (home_frames)" in wide and "agrees" in wide
    assert ERROR in wide and "00000000" in wide
    for width in (160, 120, 100, 80):
        lines = render(width)
        assert all(len(line.rstrip()) <= width for line in lines), (width, lines)
        text = "\n".join(lines)
        assert "5-3" in text and "Selby" in text and "9: 45-12" in text, text
        assert "…" not in text or "fixtur…" not in text  # never cut inside a word
    assert "Wakelin 5-3 Selby" in "\n".join(render(100))  # surnames when full names do not fit


def test_the_json_fields() -> None:
    [blocked, other] = entries()
    assert blocked["home_player"] == "Christopher Wakelin" and blocked["home_frames"] == 5
    assert (blocked["current_frame"], blocked["frame_home_points"]) == (9, 45)
    assert blocked["summary_agrees"] is True and other["summary_agrees"] is False
    assert blocked["reconnects"] == 2 and blocked["last_error"] == ERROR  # JSON: never shortened


def test_every_fixture_state_has_a_style() -> None:
    from ingest.status import STATE_STYLE
    from ingest.worker.ports import State

    assert set(STATE_STYLE) == set(State)
