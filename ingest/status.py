"""``ingest status``: which fixtures are flowing, at a glance (from the fixtures table)."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from rich import box
from rich.console import Console
from rich.live import Live
from rich.measure import Measurement
from rich.table import Table

from ingest.worker.ports import FixtureRow

STATE_STYLE = {  # every ingest.worker.ports.State
    "starting": "cyan",
    "connecting": "cyan",
    "connected": "green",
    "backing off": "yellow",
    "blocked": "bold red",
    "finished": "dim",
    "not found": "red",
    "stopped": "red",
    "released": "dim",
}


def rows_as_dicts(
    rows: Sequence[FixtureRow],
    rates: dict[Any, float],
    now: datetime,
    mismatches: dict[Any, list[dict[str, Any]]] | None = None,
    scores: dict[Any, dict[str, Any]] | None = None,
    betting: dict[Any, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    disagree = mismatches or {}
    boards = scores or {}
    bets = betting or {}
    return [
        {
            "fixture_id": str(r.fixture_id),
            **_score_fields(boards.get(r.fixture_id, {})),
            "state": r.state or ("finished" if r.finished else "never run"),
            **_betting_fields(bets.get(r.fixture_id), now),
            "enabled": r.enabled,
            "finished": r.finished,
            "seq": r.last_seq,
            "packets": r.packets,
            "packets_per_s": round(rates.get(r.fixture_id, 0.0), 2),
            "last_packet_age_s": (
                round((now - r.last_packet_at).total_seconds(), 1) if r.last_packet_at else None
            ),
            "connects": r.connects,
            "reconnects": max(r.connects - 1, 0),
            "last_error": r.last_error,
            # fields where the provider's latest fixtureSummary disagrees with our views
            "summary_mismatches": [m["field"] for m in disagree.get(r.fixture_id, [])],
            # our score against the provider's fixtureSummary: None until a packet is stored
            "summary_agrees": (None if r.packets == 0 else not disagree.get(r.fixture_id)),
        }
        for r in rows
    ]


def _betting_fields(row: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    """The fixture_betting view's: open, suspended (with a reason) or closed, and since when."""
    if row is None:
        return {"betting_status": None, "betting_reason": None, "betting_since": None}
    since = row.get("since")
    return {
        "betting_status": row.get("status"),
        "betting_reason": row.get("reason"),
        "betting_since": since.isoformat() if since is not None else None,
    }


def _score_fields(board: dict[str, Any]) -> dict[str, Any]:
    return {
        "home_player": board.get("home_player"),
        "away_player": board.get("away_player"),
        "home_frames": board.get("home_frames"),
        "away_frames": board.get("away_frames"),
        "best_of": board.get("best_of"),
        "match_status": board.get("status"),
        "current_frame": board.get("current_frame"),
        "frame_home_points": board.get("home_points"),
        "frame_away_points": board.get("away_points"),
    }


def table(entries: list[dict[str, Any]], title: str, width: int = 160) -> Table:
    """The status table in ``width`` columns: players' names and the last error are shortened at
    word boundaries, and on a narrow terminal the least needed columns are left out (``--format
    json`` always has every field)."""
    cells = []
    for e in entries:
        age = e["last_packet_age_s"]
        cells.append(
            {
                "fixture": e["fixture_id"][:8],
                "frame": _frame_cell(e),
                "state": e["state"],
                "betting": _betting_cell(e),
                "seq": str(e["seq"]),
                "pkt/s": f"{e['packets_per_s']:.1f}",
                "last pkt": "-" if age is None else _age(age),
                "reconn": str(e["reconnects"]),
                "summary": _summary_cell(e),
            }
        )
    longest = max([len(_match_cell(e, 10**6)) for e in entries] + [len("match")])
    wanted = min(longest, 24) + len("last error")  # the least room for the two long texts
    columns = list(COLUMNS)
    room = max(width - _measure(title, columns, cells), 0)
    for optional in OPTIONAL:
        if room >= wanted:
            break
        columns.remove(optional)
        room = max(width - _measure(title, columns, cells), 0)
    match_room = max(min(longest, room - len("last error")), min(longest, 12))
    error_room = max(room - match_room, len("last error"))
    t = _empty(title, columns)
    for e, row in zip(entries, cells, strict=True):
        row["match"] = _match_cell(e, match_room)
        row["last error"] = shorten(e["last_error"] or "", error_room)
        style = STATE_STYLE.get(e["state"])
        if style:
            row["state"] = f"[{style}]{e['state']}[/]"
        t.add_row(*(row[c] for c in columns))
    return t


COLUMNS = ("fixture", "match", "frame", "state", "betting", "seq", "pkt/s", "last pkt",
           "reconn", "summary", "last error")  # fmt: skip
# left out in this order when narrow (the betting status stays in --format json)
OPTIONAL = ("reconn", "pkt/s", "seq", "last pkt", "fixture", "betting")
RIGHT = {"seq", "pkt/s", "last pkt", "reconn"}


def _empty(title: str, columns: list[str]) -> Table:
    t = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False
    )
    for name in columns:
        t.add_column(name, justify="right" if name in RIGHT else "left", no_wrap=True)
    return t


def _measure(title: str, columns: list[str], cells: list[dict[str, str]]) -> int:
    """The width of the table without the text of its two long columns (their headers
    included)."""
    t = _empty(title, columns)
    for row in cells:
        t.add_row(*(row.get(c, "") for c in columns))
    console = Console(width=10**4)
    return Measurement.get(console, console.options, t).maximum - len("match") - len("last error")


def shorten(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, cut at a word boundary with an ellipsis (inside
    a word only when its first word alone is longer than the room)."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    if width <= 1:
        return "\u2026"[:width]
    cut = text[: width - 1]
    space = cut.rfind(" ")
    if text[width - 1] != " " and space > 0:
        cut = cut[:space]
    return cut.rstrip(" ,;:-(") + "\u2026"


def _match_cell(e: dict[str, Any], room: int) -> str:
    """``Wilson 5-3 Jones``: full names when they fit, else surnames, else shortened."""
    home, away = e.get("home_player"), e.get("away_player")
    if home is None and away is None and not (e.get("home_frames") or e.get("away_frames")):
        return ""  # nothing known yet
    score = f" {e.get('home_frames') or 0}-{e.get('away_frames') or 0} "
    home, away = home or "home", away or "away"
    for h, a in ((home, away), (home.split()[-1], away.split()[-1])):
        if len(h) + len(score) + len(a) <= room:
            return h + score + a
    each = max((room - len(score)) // 2, 1)
    return shorten(home.split()[-1], each) + score + shorten(away.split()[-1], each)


def _frame_cell(e: dict[str, Any]) -> str:
    frame = e.get("current_frame")
    if frame is None:
        return ""
    return f"{frame}: {e.get('frame_home_points') or 0}-{e.get('frame_away_points') or 0}"


BETTING_STYLE = {"open": "green", "suspended": "bold yellow", "closed": "dim"}


def _betting_cell(e: dict[str, Any]) -> str:
    status, reason = e.get("betting_status"), e.get("betting_reason")
    if status is None:
        return ""
    text = f"{status} ({reason})" if reason else status
    style = BETTING_STYLE.get(status)
    return f"[{style}]{text}[/]" if style else text


def _summary_cell(e: dict[str, Any]) -> str:
    fields: list[str] = e.get("summary_mismatches") or []
    if not fields:
        return "[green]agrees[/]" if e.get("summary_agrees") else ""
    shown = ", ".join(fields[:2]) + (", ..." if len(fields) > 2 else "")
    return f"[bold red]DISAGREES[/] ({shown})"


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"


def summary(entries: list[dict[str, Any]]) -> str:
    states: dict[str, int] = {}
    for e in entries:
        states[e["state"]] = states.get(e["state"], 0) + 1
    rate = sum(e["packets_per_s"] for e in entries)
    parts = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    disagree = sum(bool(e.get("summary_mismatches")) for e in entries)
    warning = f"; {disagree} disagree with the provider's summary" if disagree else ""
    open_ = sum(e.get("betting_status") == "open" for e in entries)
    suspended = sum(e.get("betting_status") == "suspended" for e in entries)
    betting = f"; betting {open_} open, {suspended} suspended" if open_ or suspended else ""
    return f"{len(entries)} fixtures: {parts}; {rate:.1f} packets/s{betting}{warning}"


async def watch(
    fetch: Any,
    out: TextIO,
    *,
    once: bool,
    as_json: bool,
    interval: float,
    disagreements: Any = None,
    scores: Any = None,
    width: int | None = None,
    betting: Any = None,
) -> None:
    """Show the table; refresh it in place every ``interval`` seconds unless ``once``.

    ``disagreements(fixture_ids)`` returns the summary mismatches of those fixtures; it is asked
    only about fixtures whose packet count changed since the last look (the answer depends only
    on the stored rows), so a refresh stays cheap however many fixtures there are.
    ``scores(fixture_ids)`` returns players, frames and the current frame's points, asked the
    same way. ``betting(fixture_ids)`` returns the ``fixture_betting`` view's rows, asked at
    every look (a fixture's betting status changes without a packet). ``width``: the
    terminal's, unless given.
    """
    looks = _Looks(fetch, disagreements, scores, betting)
    if once:
        await looks.take()
        await asyncio.sleep(1.0)  # packets/s needs two looks: this one is a second apart
        entries = await looks.take()
        if as_json:
            out.write(json.dumps(entries, indent=2) + "\n")
        else:
            columns = width or shutil.get_terminal_size((160, 24)).columns
            console = Console(file=out, width=columns, highlight=False)
            console.print(table(entries, summary(entries), columns))
        return
    console = Console(file=out, width=width, highlight=False)
    entries = await looks.take()
    with Live(
        table(entries, summary(entries), console.width), console=console, auto_refresh=False
    ) as live:
        while True:
            await asyncio.sleep(interval)
            entries = await looks.take()
            live.update(table(entries, summary(entries), console.width), refresh=True)


class _Looks:
    """Successive looks at the fixtures: packets/s since the previous look, and the summary
    mismatches and scores read again only for fixtures whose packet count changed."""

    def __init__(self, fetch: Any, disagreements: Any, scores: Any, betting: Any = None) -> None:
        self._fetch = fetch
        self._disagreements = disagreements
        self._scores = scores
        self._betting = betting
        self._previous: dict[Any, tuple[int, datetime]] = {}
        self._checked: dict[Any, int] = {}  # fixture -> packets when its summary was compared
        self._mismatches: dict[Any, list[dict[str, Any]]] = {}
        self._boards: dict[Any, dict[str, Any]] = {}

    async def take(self) -> list[dict[str, Any]]:
        rows: list[FixtureRow] = await self._fetch()
        now = datetime.now(UTC)
        await self._read_changed(rows)
        bets = await self._betting([r.fixture_id for r in rows]) if self._betting else {}
        rates = {}
        for r in rows:
            if r.fixture_id in self._previous:
                packets, at = self._previous[r.fixture_id]
                elapsed = (now - at).total_seconds()
                rates[r.fixture_id] = (r.packets - packets) / elapsed if elapsed > 0 else 0.0
            self._previous[r.fixture_id] = (r.packets, now)
        return rows_as_dicts(rows, rates, now, self._mismatches, self._boards, bets)

    async def _read_changed(self, rows: list[FixtureRow]) -> None:
        checked = self._checked
        changed = [r.fixture_id for r in rows if checked.get(r.fixture_id) != r.packets]
        if not changed:
            return
        disagreements, scores = self._disagreements, self._scores
        found = await disagreements(changed) if disagreements is not None else {}
        scored = await scores(changed) if scores is not None else {}
        for r in rows:
            if r.fixture_id in changed:
                checked[r.fixture_id] = r.packets
                self._mismatches[r.fixture_id] = found.get(r.fixture_id, [])
                self._boards[r.fixture_id] = scored.get(r.fixture_id, {})
