"""``python -m bench.betting [--quick] [--part NAME]``: what the betting status costs and how
fast it moves (README, Live betting status).

Parts:

- ``trigger``: the write path's time per batch with the ``actions`` trigger of migration 0010
  enabled and disabled, in the same database, alternately: 500-packet batches by statement and
  by COPY, and one-packet batches (a live feed's usual), plus ``EXPLAIN ANALYZE``'s own figure
  for the trigger on a 500-row statement.
- ``latency``: the real ``ingest run`` on a live simulator, another connection listening on
  ``betting_status``: from the last packet or heartbeat of a stalled feed to the ``suspended``
  NOTIFY (target: stale-after + 0.5 s), from the first packet after it to ``open`` (0.5 s), and
  from a SIGKILL of the worker to the ``fixture_betting`` view reading ``worker_silent``
  (stale-after + 1 s).
- ``cpu``: 1,000 live fixtures (a packet and a heartbeat each every 5 s), the worker's CPU with
  the betting status against a run with it off (a baseline of this
  benchmark only: ``python -m bench.betting --worker-without-betting run ...`` is ``ingest run``
  with no betting board): target 5% more at most.

The database is embedded unless ``INGEST_BENCH_DATABASE_URL`` names a server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil

from bench.harness import (
    TOKEN,
    Databases,
    asyncpg_url,
    free_port,
    make_matches,
    paced,
    process_env,
)
from ingest.db.store import Store
from ingest.feed.packet import Action, classify
from ingest.simulator.generator import MatchSpec, generate_match, to_jsonl

_ROOT = Path(__file__).resolve().parents[1]


# -- trigger --------------------------------------------------------------------------------


def _actions(fixture: uuid.UUID, first: int, count: int) -> list[tuple[uuid.UUID, Action]]:
    """Packets of a generated match (payloads of the real size), numbered from ``first``."""
    lines = _LINES
    now = datetime.now(UTC)
    out = []
    for i in range(count):
        seq = first + i
        packet = json.loads(lines[i % len(lines)])
        packet["fixtureAction"]["fixtureSeqNum"] = seq
        packet["finished"] = False
        packet["fixtureSummary"]["finished"] = False
        frame = classify(json.dumps(packet).encode(), binary=False, position=seq, received_at=now)
        assert isinstance(frame, Action)
        out.append((fixture, frame))
    return out


_LINES = [
    line
    for line in to_jsonl(generate_match(MatchSpec(seed=5, best_of=7)).packets).splitlines()
    if '"fixtureActionTypeId":22' not in line  # a plain batch: the trigger's usual case
]


async def trigger_cost(dbs: Databases, rounds: int) -> dict[str, Any]:
    url = await dbs.fresh()
    store = Store.connect(url)
    admin = await asyncpg.connect(asyncpg_url(url))
    timings: dict[str, dict[bool, list[float]]] = {
        "statement_500": {True: [], False: []},
        "copy_500": {True: [], False: []},
        "single": {True: [], False: []},
    }
    next_seq: dict[uuid.UUID, int] = {}

    async def batch(kind: str, enabled: bool) -> None:
        fixture = uuid.uuid4() if kind != "single" else _SINGLE[enabled]
        first = next_seq.get(fixture, 0) + 1
        count = 1 if kind == "single" else 500
        rows = _actions(fixture, first, count)
        next_seq[fixture] = first + count - 1
        store.writes.copy_at = 64 if kind == "copy_500" else 10**9
        started = time.perf_counter()
        await store.write(rows)
        timings[kind][enabled].append(time.perf_counter() - started)

    try:
        await store.write(_actions(uuid.uuid4(), 1, 10))  # warm the pool and the plans
        for number in range(rounds):
            for enabled in (True, False) if number % 2 else (False, True):  # no order favoured
                state = "ENABLE" if enabled else "DISABLE"
                await admin.execute(f"ALTER TABLE actions {state} TRIGGER betting_on_actions")
                for kind in timings:
                    for _ in range(1 if kind != "single" else 20):
                        await batch(kind, enabled)
        await admin.execute("ALTER TABLE actions ENABLE TRIGGER betting_on_actions")
        explained = await explain_trigger(admin)
    finally:
        await admin.close()
        await store.close()
    result: dict[str, Any] = {"rounds": rounds, "explain_trigger_ms": explained}
    for kind, by in timings.items():
        on, off = statistics.median(by[True]), statistics.median(by[False])
        rows = 1 if kind == "single" else 500
        result[kind] = {
            "with_trigger_ms": on * 1000,
            "without_ms": off * 1000,
            "per_row_us": (on - off) / rows * 1e6,
        }
    return result


_SINGLE = {True: uuid.uuid4(), False: uuid.uuid4()}


async def explain_trigger(conn: asyncpg.Connection) -> dict[str, float]:
    """The trigger's own time as ``EXPLAIN ANALYZE`` reports it, on the write path's own
    statements (warm: the median of several in one session), and the whole
    one-packet statement's time with the trigger and without."""
    from ingest.db import actions
    from ingest.db.engine import _setup

    await _setup(conn)
    rows = iter(_actions(uuid.uuid4(), 1, 7000))

    async def explain(sql: str, *args: Any) -> Any:
        plan = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, *args)
        return (plan if isinstance(plan, list) else json.loads(plan))[0]

    def trigger_ms(plan: Any) -> float:
        times = [t["Time"] for t in plan.get("Triggers", []) if t["Trigger Name"] == _TRIGGER]
        return float(times[0]) if times else 0.0

    single: dict[str, list[float]] = {"with": [], "without": [], "trigger": []}
    batch: list[float] = []
    for _ in range(5):
        for state in ("ENABLE", "DISABLE"):
            await conn.execute(f"ALTER TABLE actions {state} TRIGGER {_TRIGGER}")
            for i in range(41):
                fixture, action = next(rows)
                plan = await explain(actions._INSERT_ACTION, fixture, *actions._values(action))
                if i:  # the first one plans again after the ALTER
                    single["with" if state == "ENABLE" else "without"].append(
                        plan["Execution Time"]
                    )
                    if state == "ENABLE":
                        single["trigger"].append(trigger_ms(plan))
        await conn.execute(f"ALTER TABLE actions ENABLE TRIGGER {_TRIGGER}")
        chunk = [next(rows) for _ in range(500)]
        columns = [[f for f, _ in chunk]]
        columns += [list(c) for c in zip(*(actions._values(a) for _, a in chunk), strict=True)]
        batch.append(trigger_ms(await explain(actions._INSERT_ACTIONS, *columns)))
    return {
        "trigger_500_rows_ms": statistics.median(batch),
        "trigger_1_row_ms": statistics.median(single["trigger"]),
        "statement_1_row_with_ms": statistics.median(single["with"]),
        "statement_1_row_without_ms": statistics.median(single["without"]),
    }


_TRIGGER = "betting_on_actions"


# -- latency --------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _simulator(
    recording: Path, port: int, *extra: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    env = {**os.environ, "INGEST_TOKEN": TOKEN, "INGEST_LOG_LEVEL": "WARNING"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ingest", "feed", "serve", "--port", str(port),
        "--recording", str(recording), *extra, env=env, cwd=_ROOT,
    )  # fmt: skip
    try:
        await _wait_for_http(f"http://127.0.0.1:{port}/_control/stats")
        yield proc
    finally:
        proc.terminate()
        await proc.wait()


async def _wait_for_http(url: str, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout), aiohttp.ClientSession() as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)


async def _faults(port: int, **faults: Any) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{port}/_control/faults", json=faults) as response,
    ):
        response.raise_for_status()


async def latency(dbs: Databases, tries: int, stale_after: float) -> dict[str, Any]:
    """Stall the feed; time the suspension and the reopening as a listener sees them; then
    SIGKILL the worker and time the view."""
    generated = generate_match(MatchSpec(seed=11, best_of=35, suspensions=False))
    fixture = generated.fixture_id
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-betting-{os.getpid()}"
    folder.mkdir(exist_ok=True)
    recording = folder / "match.jsonl"
    recording.write_text(to_jsonl(generated.packets))
    url = await dbs.fresh()
    port = free_port()
    heartbeat = stale_after / 3
    stalls: list[float] = []
    opens: list[float] = []
    silent: list[float] = []
    heard: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
    listener = await asyncpg.connect(asyncpg_url(url))
    await listener.add_listener(
        "betting_status", lambda *a: heard.put_nowait((time.time(), json.loads(a[3])))
    )
    # the match played 20 times faster from its first frame on: a packet every second or so
    times = [_ts(p) for p in generated.packets]
    first_frame = next(t for p, t in zip(generated.packets, times, strict=True)
                       if p["fixtureAction"]["fixtureActionTypeId"] == 6)  # fmt: skip
    offset = str(first_frame - times[0] - 1)
    sim_args = ("--live", "--time-scale", "20", "--live-offset", offset,
                "--heartbeat-interval", str(heartbeat))  # fmt: skip
    env = {
        **process_env(url, f"ws://127.0.0.1:{port}"),
        "INGEST_STALE_AFTER": str(stale_after),
        "INGEST_LIVENESS_TIMEOUT": str(stale_after * 3),
    }
    try:
        async with _simulator(recording, port, *sim_args):
            for _ in range(tries):
                worker = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "ingest", "run", str(fixture), env=env, cwd=_ROOT
                )
                try:
                    await _until_view(listener, fixture, "open", 30)
                    while not heard.empty():
                        heard.get_nowait()
                    for _ in range(2):
                        stall, reopen = await _one_stall(port, fixture, heard, stale_after)
                        stalls.append(stall)
                        opens.append(reopen)
                    killed = time.time()
                    worker.send_signal(signal.SIGKILL)
                    await worker.wait()
                    gone = await _until_view(listener, fixture, "worker_silent", 30)
                    silent.append(gone - killed)
                finally:
                    if worker.returncode is None:
                        worker.kill()
                        await worker.wait()
                while not heard.empty():
                    heard.get_nowait()
    finally:
        await listener.close()
    return {
        "stale_after": stale_after,
        "stall_to_suspended_s": _spread(stalls),
        "packet_to_open_s": _spread(opens),
        "sigkill_to_worker_silent_s": _spread(silent),
        "targets_met": max(stalls) <= stale_after + 0.5
        and max(opens) <= 0.5
        and max(silent) <= stale_after + 1,
    }


def _spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "max": max(values), "n": len(values)}


async def _until(
    heard: asyncio.Queue[tuple[float, dict[str, Any]]], match: Any, timeout: float
) -> tuple[float, dict[str, Any]]:
    async with asyncio.timeout(timeout):
        while True:
            at, event = await heard.get()
            if match(event):
                return at, event


async def _one_stall(
    port: int,
    fixture: uuid.UUID,
    heard: asyncio.Queue[tuple[float, dict[str, Any]]],
    stale_after: float,
) -> tuple[float, float]:
    """A stall of 2 x stale-after (below the liveness timeout): the seconds from the last thing
    sent before it to the suspended NOTIFY, and from the first thing sent after it (a packet or
    a heartbeat) to the open NOTIFY, both as another connection hears them."""
    await _faults(port, fixture_id=str(fixture), stall_now=stale_after * 2)
    last_sent = (await _stats(port, fixture))["last_sent_at"]  # nothing is sent meanwhile
    at, _ = await _until(heard, lambda e: e["reason"] == "feed_stale", stale_after * 4)
    opened, _ = await _until(heard, lambda e: e["status"] == "open", stale_after * 6)
    resumed = (await _stats(port, fixture))["first_after_stall_at"]
    return at - last_sent, opened - resumed


async def _stats(port: int, fixture: uuid.UUID) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/_control/stats") as response,
    ):
        stats: dict[str, Any] = (await response.json())[str(fixture)]
        return stats


async def _until_view(
    conn: asyncpg.Connection, fixture: uuid.UUID, what: str, timeout: float
) -> float:
    """Poll fixture_betting until it reads ``what`` (a status or a reason); the time it did."""
    async with asyncio.timeout(timeout):
        while True:
            row = await conn.fetchrow(
                "SELECT status, reason FROM fixture_betting WHERE fixture_id = $1", fixture
            )
            if row is not None and what in (row[0], row[1]):
                return time.time()
            await asyncio.sleep(0.02)  # polling the view is what a reader without LISTEN does


def _ts(packet: dict[str, Any]) -> float:
    return datetime.fromisoformat(packet["fixtureAction"]["timestamp"]).timestamp()


# -- cpu --------------------------------------------------------------------------------------


async def cpu_cost(dbs: Databases, fixtures: int, warmup: float, measure: float) -> dict[str, Any]:
    """The worker's CPU-seconds a minute at 1,000 live fixtures, betting status on and off."""
    every = 5.0
    matches = paced(make_matches(40_000, fixtures, 7), every)
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-betting-cpu-{os.getpid()}"
    folder.mkdir(exist_ok=True)
    args: list[str] = []
    for match in matches:
        path = folder / f"{match.fixture_id}.jsonl"
        path.write_text("\n".join(match.lines) + "\n")
        args += ["--recording", str(path)]
    port = free_port()
    result: dict[str, Any] = {"fixtures": fixtures, "seconds": measure}
    live = ("--live", "--time-scale", "1", "--live-offset", str(4 * every))
    env = {**os.environ, "INGEST_TOKEN": TOKEN, "INGEST_LOG_LEVEL": "WARNING"}
    sim = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ingest", "feed", "serve", "--port", str(port),
        "--heartbeat-interval", str(every), *live, *args, env=env, cwd=_ROOT,
    )  # fmt: skip
    try:
        await _wait_for_http(f"http://127.0.0.1:{port}/_control/stats", timeout=300)
        for label, betting in (("on", "on"), ("off", "off"), ("on_again", "on")):
            url = await dbs.fresh()
            worker_env = process_env(url, f"ws://127.0.0.1:{port}")
            entry = ["-m", "ingest"] if betting == "on" else ["-m", "bench.betting", _WITHOUT]
            worker = await asyncio.create_subprocess_exec(
                sys.executable, *entry, "run", "--connect-rate", "0",
                *(str(m.fixture_id) for m in matches), env=worker_env, cwd=_ROOT,
            )  # fmt: skip
            try:
                proc = psutil.Process(worker.pid)
                await asyncio.sleep(warmup)  # connect and catch up: not measured
                before = sum(proc.cpu_times()[:2])
                await asyncio.sleep(measure)  # the measurement's own duration
                result[f"cpu_s_per_min_{label}"] = (
                    (sum(proc.cpu_times()[:2]) - before) / measure * 60
                )
                if betting == "on":
                    conn = await asyncpg.connect(asyncpg_url(url))
                    try:
                        result[f"open_{label}"] = await conn.fetchval(
                            "SELECT count(*) FROM fixture_betting WHERE status = 'open'"
                        )
                    finally:
                        await conn.close()
            finally:
                worker.terminate()
                await worker.wait()
    finally:
        sim.terminate()
        await sim.wait()
    on = (result["cpu_s_per_min_on"] + result["cpu_s_per_min_on_again"]) / 2
    result["extra_cpu_ratio"] = on / result["cpu_s_per_min_off"] - 1
    result["targets_met"] = result["extra_cpu_ratio"] <= 0.05
    return result


# -- main -------------------------------------------------------------------------------------


def render(results: dict[str, Any]) -> str:
    lines = []
    if "trigger" in results:
        r = results["trigger"]
        for kind, label in (("statement_500", "500 rows, statement"),
                            ("copy_500", "500 rows, COPY"), ("single", "1 row")):  # fmt: skip
            k = r[kind]
            lines.append(
                f"trigger   {label:20} {k['with_trigger_ms']:7.2f} ms with, "
                f"{k['without_ms']:7.2f} ms without: {k['per_row_us']:+.2f} us a row"
            )
        e = r["explain_trigger_ms"]
        lines.append(
            f"trigger   EXPLAIN ANALYZE (medians): the trigger takes "
            f"{e['trigger_500_rows_ms']:.3f} ms of a 500-row batch, "
            f"{e['trigger_1_row_ms']:.3f} ms of a one-packet statement "
            f"({e['statement_1_row_with_ms']:.3f} ms with it, "
            f"{e['statement_1_row_without_ms']:.3f} ms without)"
        )
    if "latency" in results:
        r = results["latency"]
        s, o, k = r["stall_to_suspended_s"], r["packet_to_open_s"], r["sigkill_to_worker_silent_s"]
        lines.append(
            f"latency   stale-after {r['stale_after']:g} s: stall to suspended median "
            f"{s['median']:.2f} s, max {s['max']:.2f} s (target {r['stale_after'] + 0.5:g}); "
            f"packet to open median {o['median'] * 1000:.0f} ms, max {o['max'] * 1000:.0f} ms "
            f"(target 500); SIGKILL to worker_silent median {k['median']:.2f} s, max "
            f"{k['max']:.2f} s (target {r['stale_after'] + 1:g})  "
            f"{'met' if r['targets_met'] else 'MISSED'}"
        )
    if "cpu" in results:
        r = results["cpu"]
        lines.append(
            f"cpu       {r['fixtures']} live fixtures: {r['cpu_s_per_min_on']:.2f} / "
            f"{r['cpu_s_per_min_on_again']:.2f} CPU-s a minute with the betting status, "
            f"{r['cpu_s_per_min_off']:.2f} without: {r['extra_cpu_ratio']:+.1%}  "
            f"{'met' if r['targets_met'] else 'MISSED'} (<= +5%)"
        )
    return "\n".join(lines)


PARTS = ["trigger", "latency", "cpu"]


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    dbs = Databases()
    results: dict[str, Any] = {"database": dbs.description}
    parts = args.part or PARTS
    try:
        if "trigger" in parts:
            results["trigger"] = await trigger_cost(dbs, 3 if args.quick else 15)
        if "latency" in parts:
            results["latency"] = await latency(dbs, 1 if args.quick else 3, args.stale_after)
        if "cpu" in parts:
            results["cpu"] = await cpu_cost(
                dbs, 100 if args.quick else 1000, 10 if args.quick else 20,
                10 if args.quick else 60,
            )  # fmt: skip
    finally:
        await dbs.drop_all()
    return results


_WITHOUT = "--worker-without-betting"


def worker_without_betting(argv: list[str]) -> int:
    """``ingest`` itself, its worker given no betting board: the cpu part's baseline."""
    from ingest import cli, commands
    from ingest.worker.supervisor import Worker

    class WithoutBetting(Worker):
        def __init__(self, *args: Any, betting: Any = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)

    commands.Worker = WithoutBetting  # type: ignore[misc]
    return cli.main(argv)


def main() -> int:
    if sys.argv[1:2] == [_WITHOUT]:
        return worker_without_betting(sys.argv[2:])
    parser = argparse.ArgumentParser(prog="python -m bench.betting", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller run")
    parser.add_argument("--part", action="append", choices=PARTS, help="run only these")
    parser.add_argument("--stale-after", type=float, default=2.0, help="for the latency part")
    parser.add_argument("--json", default="bench/results/betting.json", help="write results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    results = asyncio.run(main_async(args))
    print(render(results))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nresults written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
