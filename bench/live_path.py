"""``python -m bench.live_path [--packets N] [--fixtures N] [--repeat N]``: our own CPU on the
live path, part by part, where the footprint scenario's whole-process figure is too noisy to
show a change of a few per cent.

* ``statement``: a one-packet batch's statement alone (``fetchrow`` on a plain connection);
* ``script``: the ``script`` reference's statement for the same packet (``bench/script.py``);
* ``writer``: a one-packet batch through the worker's writer (``Writer._flush``: the store's
  write path, the result, the fixture's figures), as a live feed's packet goes;
* ``betting``: the betting watch's look at ``--fixtures`` connected fixtures, with the
  second's renewal (the board in memory: the statement's own cost is the database's).

CPU of this process (``time.process_time``) per packet or per look: the best of ``--repeat``
and every run, on a database of its own (embedded, or ``INGEST_BENCH_DATABASE_URL``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from bench.harness import Databases, asyncpg_url
from ingest.db import actions as write_path
from ingest.db.store import Store
from ingest.feed.packet import Action, classify
from ingest.settings import RunOptions
from ingest.worker.betting import BettingWatch
from ingest.worker.ports import Betting, State
from ingest.worker.progress import FixtureStats
from ingest.worker.writer import Writer

DEMO = Path(__file__).resolve().parents[1] / "ingest" / "simulator" / "data" / "demo-match.jsonl"
SCRIPT = """
    INSERT INTO actions (fixture_id, seq, payload, received_at)
    SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::jsonb[], $4::timestamptz[])
    ON CONFLICT (fixture_id, seq) DO NOTHING
"""


def packets(count: int, fixtures: int) -> list[tuple[uuid.UUID, Action]]:
    """``count`` packets of the demo match, numbered anew, spread over ``fixtures`` fixtures."""
    lines = [line for line in DEMO.read_text().splitlines() if line.strip()]
    ids = [uuid.uuid4() for _ in range(fixtures)]
    out = []
    for i in range(count):
        seq = i // fixtures + 1
        packet = json.loads(lines[seq % len(lines)])
        packet["fixtureAction"]["fixtureSeqNum"] = seq
        frame = classify(
            json.dumps(packet).encode(), binary=False, position=seq, received_at=datetime.now(UTC)
        )
        assert isinstance(frame, Action)
        out.append((ids[i % fixtures], frame))
    return out


async def per_packet(
    each: Callable[[tuple[uuid.UUID, Action]], Awaitable[object]],
    items: Sequence[tuple[uuid.UUID, Action]],
    sql: asyncpg.Connection,
    repeat: int,
) -> list[float]:
    """CPU microseconds per packet, a figure per run (the tables emptied before each)."""
    for item in items[:200]:  # warm: statements prepared, codecs loaded
        await each(item)
    figures = []
    for _ in range(repeat):
        await sql.execute("TRUNCATE actions, action_conflicts, fixtures CASCADE")
        started = time.process_time()
        for item in items:
            await each(item)
        figures.append((time.process_time() - started) / len(items) * 1e6)
    return figures


async def write_parts(url: str, count: int, repeat: int) -> dict[str, list[float]]:
    items = packets(count, 200)
    store = Store.connect(url)
    sql = await asyncpg.connect(asyncpg_url(url))
    writer = Writer(store, {f: FixtureStats() for f, _ in items}, RunOptions())
    try:

        async def statement(item: tuple[uuid.UUID, Action]) -> object:
            fixture_id, action = item
            return await sql.fetchrow(
                write_path._INSERT_ACTION, fixture_id, *write_path._values(action), None
            )

        async def script(item: tuple[uuid.UUID, Action]) -> object:
            fixture_id, action = item
            return await sql.execute(
                SCRIPT, [fixture_id], [action.seq], [action.payload], [action.received_at]
            )

        async def writer_path(item: tuple[uuid.UUID, Action]) -> object:
            await writer._flush([item])
            return None

        return {
            "statement": await per_packet(statement, items, sql, repeat),
            "script": await per_packet(script, items, sql, repeat),
            "writer": await per_packet(writer_path, items, sql, repeat),
        }
    finally:
        await sql.close()
        await store.close()


class _Board:
    """A betting board in memory that answers every renewal "all open" (the usual answer)."""

    def __init__(self) -> None:
        self.reports = 0

    async def report_betting(
        self,
        worker: str,
        changes: dict[uuid.UUID, Betting],
        alive: Sequence[uuid.UUID],
        stale_after: float,
        *,
        sweep: bool = False,
        own: Sequence[uuid.UUID] = (),
    ) -> dict[uuid.UUID, Betting | None]:
        self.reports += 1
        return {}

    async def leave_betting(self, worker: str, fixture_ids: Sequence[uuid.UUID]) -> None:
        pass


async def betting_look(fixtures: int, seconds: float) -> float:
    """CPU microseconds per look (each with its renewal) at ``fixtures`` connected fixtures."""
    loop = asyncio.get_running_loop()
    board = _Board()
    stats = {uuid.uuid4(): FixtureStats(state=State.CONNECTED) for _ in range(fixtures)}
    watch = BettingWatch(board, stats, dataclasses.replace(RunOptions(), betting_renew_every=0.002))
    for fixture_id in stats:
        signs = watch.add(fixture_id)
        signs.pulse.at, signs.known = loop.time() + 3600, True  # never stale while measured
    task = asyncio.create_task(watch.run_forever("bench"))
    try:
        await asyncio.sleep(0.3)  # the first looks write the changes: not measured
        cpu, reports = time.process_time(), board.reports
        await asyncio.sleep(seconds)
        cpu, reports = time.process_time() - cpu, board.reports - reports
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return cpu / max(1, reports) * 1e6


async def main_async(args: argparse.Namespace) -> None:
    dbs = Databases()
    try:
        parts = await write_parts(await dbs.fresh(), args.packets, args.repeat)
    finally:
        await dbs.drop_all()
    look = [await betting_look(args.fixtures, 2.0) for _ in range(args.repeat)]
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    print(f"{args.packets:,} one-packet batches over 200 fixtures, {args.repeat} runs on the "
          f"{loop} loop (CPU of this process: the best, and every run)")  # fmt: skip
    for name, figures in parts.items():
        shown = ", ".join(f"{f:.1f}" for f in figures)
        print(f"{name:10} {min(figures):6.1f} us a packet  ({shown})")
    shown = ", ".join(f"{f:.0f}" for f in look)
    print(f"{'betting':10} {min(look):6.0f} us a look at {args.fixtures:,} fixtures  ({shown})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=3000)
    parser.add_argument("--fixtures", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    try:  # the worker's own loop where it is installed (ingest run's default)
        import uvloop
    except ImportError:
        asyncio.run(main_async(args))
    else:
        uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
