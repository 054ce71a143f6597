"""``ingest report``: one match for a person (rich tables), for scripts (JSON), or as a picture."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from ingest.errors import ConfigError

MIN_BREAK = 50  # breaks shown in the report


def to_json(report: dict[str, Any]) -> str:
    def default(value: object) -> str:
        if isinstance(value, uuid.UUID | datetime):
            return str(value) if isinstance(value, uuid.UUID) else value.isoformat()
        raise TypeError(type(value).__name__)

    slim = {
        "match": _without(report["match"], "payload", "metadata"),
        "frames": [_without(f, "payload", "metadata") for f in report["frames"]],
        "breaks": [_without(b, "payload", "metadata") for b in report["breaks"]],
        "players": [_without(p, "payload", "metadata") for p in report["players"]],
        "summary_mismatches": report.get("mismatches", []),
    }
    return json.dumps(slim, indent=2, default=default) + "\n"


def _without(row: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in keys}


def render(report: dict[str, Any], out: TextIO, *, width: int | None = None) -> None:
    console = Console(file=out, width=width or 100, highlight=False, soft_wrap=False)
    match = report["match"]
    names = {"home": match.get("home_player") or "Home", "away": match.get("away_player") or "Away"}
    _print_header(console, match, names, report.get("mismatches") or [])
    console.print(_frames_table(report["frames"], names))
    big = [b for b in report["breaks"] if (b.get("break_score") or 0) >= MIN_BREAK]
    if big:
        console.print(_breaks_table(big, names))
    else:
        console.print(f"No break of {MIN_BREAK} or more.")
    console.print(_players_table(report["players"], names))


def _print_header(
    console: Console,
    match: dict[str, Any],
    names: dict[str, str],
    mismatches: list[dict[str, Any]],
) -> None:
    """The scoreline, the winner, the fixture, and any disagreement with the provider."""
    home, away = names["home"], names["away"]
    status = match.get("status") or ""
    best_of = f"best of {match['best_of']}" if match.get("best_of") else ""
    score = f"{match.get('home_frames', 0)} - {match.get('away_frames', 0)}"
    console.print(f"[bold]{home}  {score}  {away}[/bold]   {best_of}, {status}".rstrip(", "))
    if match.get("winner"):
        console.print(f"Winner: [bold]{names[match['winner']]}[/bold]")
    if match.get("provisional"):
        console.print("[yellow]Includes provisional (Pending) actions.[/yellow]")
    console.print(f"Fixture {match['fixture_id']}")
    if mismatches:
        console.print(
            f"[bold red]Disagrees with the provider's summary at seq {mismatches[0]['seq']}:"
            "[/bold red] "
            + "; ".join(
                f"{m['field']} ours {m['ours'] or 'none'}, provider {m['provider'] or 'none'}"
                for m in mismatches
            )
        )


def _frames_table(rows: list[dict[str, Any]], names: dict[str, str]) -> Table:
    frames = Table(title="Frames", title_justify="left")
    frames.add_column("Frame", justify="right")
    frames.add_column(names["home"], justify="right")
    frames.add_column(names["away"], justify="right")
    frames.add_column("Winner")
    frames.add_column("Note")
    for f in rows:
        note = []
        if f.get("conceded"):
            note.append("conceded")
        if not f.get("finished"):
            note.append("in play")
        if f.get("provisional"):
            note.append("provisional")
        frames.add_row(
            str(f["frame_number"]),
            str(f.get("home_points") or 0),
            str(f.get("away_points") or 0),
            names.get(f.get("winner") or "", "-"),
            ", ".join(note),
        )
    return frames


def _breaks_table(big: list[dict[str, Any]], names: dict[str, str]) -> Table:
    breaks = Table(title=f"Breaks of {MIN_BREAK} and more", title_justify="left")
    breaks.add_column("Frame", justify="right")
    breaks.add_column("Player")
    breaks.add_column("Break", justify="right")
    for b in big:
        score_text = str(b["break_score"])
        if b["break_score"] >= 100:
            score_text = f"[bold]{score_text}[/bold]"
        player = b.get("player_name") or names.get(b.get("side") or "", "?")
        breaks.add_row(str(b.get("frame_number") or "-"), player, score_text)
    return breaks


def _players_table(rows: list[dict[str, Any]], names: dict[str, str]) -> Table:
    players = Table(title="Players", title_justify="left")
    players.add_column("")
    for column in ("Frames", "Points", "Pots", "Fouls", "Highest", "50+", "100+"):
        players.add_column(column, justify="right")
    for p in rows:
        players.add_row(
            p.get("player_name") or names.get(p.get("side") or "", "?"),
            str(p.get("frames_won") or 0),
            str(p.get("points_scored") or 0),
            str(p.get("pots") or 0),
            str(p.get("fouls") or 0),
            str(p.get("highest_break") or "-"),
            str(p.get("breaks_50_plus") or 0),
            str(p.get("centuries") or 0),
        )
    return players


def plot(report: dict[str, Any], path: Path) -> None:
    """Frame-by-frame: frames won so far (top) and each frame's points (bottom)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise ConfigError("--plot needs matplotlib: pip install 'snooker-ingest[plot]'") from None
    match = report["match"]
    home = match.get("home_player") or "Home"
    away = match.get("away_player") or "Away"
    frames = report["frames"]
    numbers = [f["frame_number"] for f in frames]
    home_won, away_won, h, a = [], [], 0, 0
    for f in frames:
        h += f.get("winner") == "home"
        a += f.get("winner") == "away"
        home_won.append(h)
        away_won.append(a)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    top.step([0, *numbers], [0, *home_won], where="post", label=home, color="#c0392b", lw=2.5)
    top.step([0, *numbers], [0, *away_won], where="post", label=away, color="#2471a3", lw=2.5)
    if match.get("frames_to_win"):
        top.axhline(match["frames_to_win"], color="grey", ls=":", lw=1, label="frames to win")
    top.set_ylabel("frames won")
    top.yaxis.set_major_locator(MaxNLocator(integer=True))
    top.legend(loc="upper left")
    top.set_title(
        f"{home} {match.get('home_frames', 0)} - {match.get('away_frames', 0)} {away}"
        + (f"  (best of {match['best_of']})" if match.get("best_of") else "")
    )
    width = 0.4
    bottom.bar([n - width / 2 for n in numbers], [f.get("home_points") or 0 for f in frames],
               width, label=home, color="#c0392b")  # fmt: skip
    bottom.bar([n + width / 2 for n in numbers], [f.get("away_points") or 0 for f in frames],
               width, label=away, color="#2471a3")  # fmt: skip
    points = {(f["frame_number"], "home"): f.get("home_points") or 0 for f in frames}
    points |= {(f["frame_number"], "away"): f.get("away_points") or 0 for f in frames}
    for b in report["breaks"]:  # centuries, over the bar of the frame they were made in
        if (b.get("break_score") or 0) >= 100 and b.get("frame_number") and b.get("side"):
            x = b["frame_number"] + (-width / 2 if b["side"] == "home" else width / 2)
            y = points.get((b["frame_number"], b["side"]), b["break_score"])
            bottom.annotate(f"{b['break_score']}", (x, y), xytext=(0, 2),
                            textcoords="offset points", ha="center", va="bottom",
                            fontsize=8, fontweight="bold")  # fmt: skip
    bottom.set_xlabel("frame")
    bottom.set_ylabel("points in the frame (centuries marked)")
    bottom.set_xticks(numbers)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
