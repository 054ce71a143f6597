"""``ingest status``: which fixtures are flowing, at a glance (from the fixtures table)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ingest.ports import FixtureRow

STATE_STYLE = {
    "connected": "green",
    "connecting": "cyan",
    "backing off": "yellow",
    "finished": "dim",
    "stopped": "red",
}


def rows_as_dicts(
    rows: Sequence[FixtureRow],
    rates: dict[Any, float],
    now: datetime,
    mismatches: dict[Any, list[dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    disagree = mismatches or {}
    return [
        {
            "fixture_id": str(r.fixture_id),
            "state": r.state or ("finished" if r.finished else "never run"),
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
        }
        for r in rows
    ]


def table(entries: list[dict[str, Any]], title: str) -> Table:
    t = Table(title=title, title_justify="left")
    for column, justify in (
        ("fixture", "left"), ("state", "left"), ("seq", "right"), ("packets/s", "right"),
        ("last packet", "right"), ("reconnects", "right"), ("finished", "left"),
        ("summary", "left"), ("last error", "left"),
    ):  # fmt: skip
        t.add_column(column, justify=justify)  # type: ignore[arg-type]
    for e in entries:
        age = e["last_packet_age_s"]
        t.add_row(
            e["fixture_id"],
            f"[{STATE_STYLE.get(e['state'], '')}]{e['state']}[/]"
            if e["state"] in STATE_STYLE
            else e["state"],
            str(e["seq"]),
            f"{e['packets_per_s']:.1f}",
            "-" if age is None else _age(age),
            str(e["reconnects"]),
            "yes" if e["finished"] else "",
            _summary_cell(e.get("summary_mismatches") or []),
            (e["last_error"] or "")[:60],
        )
    return t


def _summary_cell(fields: list[str]) -> str:
    if not fields:
        return ""
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
    return f"{len(entries)} fixtures: {parts}; {rate:.1f} packets/s{warning}"


async def watch(
    fetch: Any,
    out: TextIO,
    *,
    once: bool,
    as_json: bool,
    interval: float,
    disagreements: Any = None,
) -> None:
    """Show the table; refresh it in place every ``interval`` seconds unless ``once``.

    ``disagreements(fixture_ids)`` returns the summary mismatches of those fixtures; it is asked
    only about fixtures whose packet count changed since the last look (the answer depends only
    on the stored rows), so a refresh stays cheap however many fixtures there are.
    """
    previous: dict[Any, tuple[int, datetime]] = {}
    checked: dict[Any, int] = {}  # fixture -> packets when its summary was last compared
    mismatches: dict[Any, list[dict[str, Any]]] = {}

    async def sample() -> list[dict[str, Any]]:
        rows: list[FixtureRow] = await fetch()
        now = datetime.now(UTC)
        if disagreements is not None:
            changed = [r.fixture_id for r in rows if checked.get(r.fixture_id) != r.packets]
            if changed:
                found = await disagreements(changed)
                for r in rows:
                    if r.fixture_id in changed:
                        checked[r.fixture_id] = r.packets
                        mismatches[r.fixture_id] = found.get(r.fixture_id, [])
        rates = {}
        for r in rows:
            if r.fixture_id in previous:
                packets, at = previous[r.fixture_id]
                elapsed = (now - at).total_seconds()
                rates[r.fixture_id] = (r.packets - packets) / elapsed if elapsed > 0 else 0.0
            previous[r.fixture_id] = (r.packets, now)
        return rows_as_dicts(rows, rates, now, mismatches)

    if once:
        await sample()
        await asyncio.sleep(1.0)  # packets/s needs two looks: this one is a second apart
        entries = await sample()
        if as_json:
            out.write(json.dumps(entries, indent=2) + "\n")
        else:
            Console(file=out, width=160).print(table(entries, summary(entries)))
        return
    console = Console(file=out)
    entries = await sample()
    with Live(table(entries, summary(entries)), console=console, auto_refresh=False) as live:
        while True:
            await asyncio.sleep(interval)
            entries = await sample()
            live.update(table(entries, summary(entries)), refresh=True)
