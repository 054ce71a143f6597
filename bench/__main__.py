"""``python -m bench [--quick] [--scale F] [--json FILE]``: the four scenarios and their limits.

Each scenario runs our worker and, in the same run on the same data and table, its reference
points: ``raw_copy`` (asyncpg COPY of the already-parsed rows: the database's limit),
``raw_receive`` (an aiohttp client reading and parsing the same stream: the socket's limit) and
``naive`` (one INSERT and one commit per packet through a SQLAlchemy session).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import platform
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from bench.harness import (
    TOKEN,
    Databases,
    asyncpg_url,
    count_rows,
    make_matches,
    naive,
    parsed_rows,
    raw_copy,
    raw_receive,
    simulator_clock,
    simulator_process,
    worker_process,
)
from ingest.config import RunOptions, Secret
from ingest.db.store import Store
from ingest.source import FeedSource, feed_session
from ingest.worker import Worker


@dataclass
class Plan:
    seq_fixtures: int = 50
    seq_best_of: int = 35
    conc_fixtures: int = 200
    conc_best_of: int = 19
    naive_fixtures: int = 3  # naive is slow: measured on a subset, reported as a rate
    live_fixtures: int = 500
    live_best_of: int = 7
    live_time_scale: float = 60.0
    live_warmup: float = 15.0
    live_measure: float = 30.0
    foot_fixtures: int = 1000
    foot_best_of: int = 7
    foot_warmup: float = 10.0
    foot_measure: float = 60.0

    def scaled(self, factor: float) -> Plan:
        names = [f.name for f in dataclasses.fields(self)]
        counts = {n: max(1, round(getattr(self, n) * factor)) for n in names if "fixtures" in n}
        times = {
            n: max(2.0, getattr(self, n) * factor)
            for n in names
            if n.endswith(("warmup", "measure"))
        }
        return dataclasses.replace(self, **counts, **times)


QUICK = Plan(
    seq_fixtures=5, seq_best_of=19, conc_fixtures=20, conc_best_of=7, naive_fixtures=2,
    live_fixtures=50, live_time_scale=100.0, live_warmup=4.0, live_measure=6.0,
    foot_fixtures=100, foot_warmup=4.0, foot_measure=8.0,
)  # fmt: skip


LIVE_OFFSET = 1200.0  # the generator's matches start 20 minutes after the first packet


def _options() -> RunOptions:
    return RunOptions(until_finished=True, speed="fast", connect_rate=0)


async def _ours(url: str, feed: str, batches: list[list[uuid.UUID]]) -> None:
    """Our worker, in this process: each batch of fixtures at once, one batch after another."""
    store = Store.connect(url, pool_size=4)
    try:
        async with feed_session() as session:
            source = FeedSource(session, feed, Secret(TOKEN))
            for fixtures in batches:
                await Worker(source, store, _options()).run(fixtures)
    finally:
        await store.close()


async def _timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = await call()
    return time.perf_counter() - started, value


async def backfill(dbs: Databases, plan: Plan, *, concurrent: bool) -> dict[str, Any]:
    count, best_of = (
        (plan.conc_fixtures, plan.conc_best_of) if concurrent
        else (plan.seq_fixtures, plan.seq_best_of)
    )  # fmt: skip
    matches = make_matches(10_000 if concurrent else 20_000, count, best_of)
    total = sum(m.packets for m in matches)
    ids = [m.fixture_id for m in matches]
    subset = ids[: plan.naive_fixtures] if not concurrent else ids[: plan.naive_fixtures * 5]
    subset_packets = sum(m.packets for m in matches if m.fixture_id in subset)
    result: dict[str, Any] = {"fixtures": count, "best_of": best_of, "packets": total}
    with simulator_process(matches) as feed:
        url = await dbs.fresh()
        batches = [ids] if concurrent else [[f] for f in ids]
        secs, _ = await _timed(lambda: _ours(url, feed, batches))
        stored = await count_rows(url)
        assert stored == total, f"stored {stored} of {total} packets"
        result["ours"] = total / secs

        if concurrent:
            secs, received = await _timed(lambda: raw_receive(feed, ids))
        else:

            async def receive_one_by_one() -> int:
                return sum([await raw_receive(feed, [f]) for f in ids])

            secs, received = await _timed(receive_one_by_one)
        assert received == total
        result["raw_receive"] = total / secs

        rows = parsed_rows(matches)
        secs = await raw_copy(await dbs.fresh(), rows)
        result["raw_copy"] = total / secs

        naive_url = await dbs.fresh()
        if concurrent:
            secs, done = await _timed(lambda: naive(naive_url, feed, subset))
        else:

            async def naive_one_by_one() -> int:
                return sum([await naive(naive_url, feed, [f]) for f in subset])

            secs, done = await _timed(naive_one_by_one)
        assert done == subset_packets
        result["naive"] = done / secs
        result["naive_fixtures"] = len(subset)
    limit = min(result["raw_copy"], result["raw_receive"])
    result["vs_limit"] = result["ours"] / limit
    result["vs_naive"] = result["ours"] / result["naive"]
    result["targets_met"] = result["vs_limit"] >= 0.5 and result["vs_naive"] >= 20
    return result


async def live_latency(dbs: Databases, plan: Plan) -> dict[str, Any]:
    matches = make_matches(30_000, plan.live_fixtures, plan.live_best_of)
    by_id = {str(m.fixture_id): m for m in matches}
    url = await dbs.fresh()
    seen: list[tuple[float, str, int]] = []
    listener = await asyncpg.connect(asyncpg_url(url))

    def notified(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        data = json.loads(payload)
        seen.append((time.time(), data["fixture_id"], int(data["max_seq"])))

    await listener.add_listener("ingest_actions", notified)
    scale = plan.live_time_scale
    offset = LIVE_OFFSET
    extra = ("--live", "--time-scale", str(scale), "--live-offset", str(offset))
    try:
        with simulator_process(matches, *extra) as feed:
            clock = await simulator_clock(feed)
            async with worker_process(url, feed, [m.fixture_id for m in matches]):
                # the scenario's own duration, not a synchronisation
                await asyncio.sleep(plan.live_warmup + plan.live_measure)
    finally:
        await listener.close()
    start = clock["started"]
    window = (start + plan.live_warmup, start + plan.live_warmup + plan.live_measure)
    latencies: list[float] = []
    last: dict[str, int] = {}
    for visible_at, fixture, max_seq in seen:
        match = by_id[fixture]
        for seq in range(last.get(fixture, 0) + 1, max_seq + 1):
            due = start + (match.times[seq - 1] - match.times[0] - offset) / scale
            if window[0] <= due < window[1]:
                latencies.append(visible_at - due)
        last[fixture] = max(last.get(fixture, 0), max_seq)
    latencies.sort()
    if not latencies:
        raise RuntimeError(
            f"no packet was due in the measurement window ({len(seen)} notifications, "
            f"{await count_rows(url)} rows)"
        )

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    p99 = pct(0.99)
    return {
        "fixtures": plan.live_fixtures,
        "packets_per_s": len(latencies) / plan.live_measure,
        "packets_measured": len(latencies),
        "p50_ms": pct(0.50),
        "p99_ms": p99,
        "max_ms": latencies[-1] * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
        "targets_met": p99 <= 25.0,
    }


async def footprint(dbs: Databases, plan: Plan) -> dict[str, Any]:
    matches = make_matches(40_000, plan.foot_fixtures, plan.foot_best_of)
    url = await dbs.fresh()
    live = ("--live", "--time-scale", "1", "--live-offset", str(LIVE_OFFSET))
    with simulator_process(matches, *live) as feed:
        async with worker_process(url, feed, [m.fixture_id for m in matches]) as proc:
            process = psutil.Process(proc.pid)
            await asyncio.sleep(plan.foot_warmup)  # connect and catch up: not measured
            cpu_start = sum(process.cpu_times()[:2])
            peak = 0
            ends = time.monotonic() + plan.foot_measure
            while time.monotonic() < ends:
                peak = max(peak, process.memory_info().rss)
                await asyncio.sleep(0.25)  # a sampling interval
            cpu = sum(process.cpu_times()[:2]) - cpu_start
            stored = await count_rows(url)
            alive = proc.returncode is None
    if not alive:
        raise RuntimeError("the worker exited during the footprint run")
    rss_mb = peak / 2**20
    cpu_per_min = cpu / plan.foot_measure * 60
    return {
        "fixtures": plan.foot_fixtures,
        "seconds": plan.foot_measure,
        "packets_stored": stored,
        "peak_rss_mb": rss_mb,
        "cpu_s_per_min": cpu_per_min,
        "targets_met": rss_mb <= 250 and cpu_per_min <= 20,
    }


def render(results: dict[str, Any]) -> str:
    lines = [
        f"{'scenario':22} {'ours':>10} {'raw_copy':>10} {'raw_receive':>11} {'naive':>8} "
        f"{'ours/limit':>10} {'ours/naive':>10} {'copy/naive':>10}",
    ]
    for name in ("backfill-sequential", "backfill-concurrent"):
        if name not in results:
            continue
        r = results[name]
        lines.append(
            f"{name:22} {r['ours']:>8,.0f}/s {r['raw_copy']:>8,.0f}/s {r['raw_receive']:>9,.0f}/s "
            f"{r['naive']:>6,.0f}/s {r['vs_limit']:>10.0%} {r['vs_naive']:>9.1f}x "
            f"{r['raw_copy'] / r['naive']:>9.1f}x"
        )
        lines.append(
            f"{'':22} limit target (>= 50%): {'met' if r['vs_limit'] >= 0.5 else 'MISSED'}; "
            f"naive target (>= 20x): {'met' if r['vs_naive'] >= 20 else 'MISSED'}"
            + ("" if r["vs_naive"] >= 20 else
               f" (COPY itself is {r['raw_copy'] / r['naive']:.1f}x naive on this machine)")
        )  # fmt: skip
    if "live-latency" in results:
        r = results["live-latency"]
        lines.append(
            f"{'live-latency':22} {r['fixtures']} fixtures, {r['packets_per_s']:,.0f} packets/s: "
            f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms  "
            f"{'met' if r['targets_met'] else 'MISSED'} (p99 <= 25 ms)"
        )
    if "footprint" in results:
        r = results["footprint"]
        lines.append(
            f"{'footprint':22} {r['fixtures']} fixtures for {r['seconds']:.0f} s: peak RSS "
            f"{r['peak_rss_mb']:.0f} MB, CPU {r['cpu_s_per_min']:.1f} s/min  "
            f"{'met' if r['targets_met'] else 'MISSED'} (<= 250 MB, <= 20 s/min)"
        )
    return "\n".join(lines)


async def main_async(plan: Plan, scenarios: list[str]) -> dict[str, Any]:
    dbs = Databases()
    results: dict[str, Any] = {
        "plan": dataclasses.asdict(plan),
        "database": dbs.description,
        "machine": {"cpus": psutil.cpu_count(), "python": platform.python_version()},
    }
    try:
        if "backfill-sequential" in scenarios:
            results["backfill-sequential"] = await backfill(dbs, plan, concurrent=False)
        if "backfill-concurrent" in scenarios:
            results["backfill-concurrent"] = await backfill(dbs, plan, concurrent=True)
        if "live-latency" in scenarios:
            results["live-latency"] = await live_latency(dbs, plan)
        if "footprint" in scenarios:
            results["footprint"] = await footprint(dbs, plan)
    finally:
        await dbs.drop_all()
    return results


SCENARIOS = ["backfill-sequential", "backfill-concurrent", "live-latency", "footprint"]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller run, under a minute")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply fixture counts")
    parser.add_argument("--json", default="bench/results/latest.json", help="write results here")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, help="run only these")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    plan = QUICK if args.quick else Plan()
    if args.scale != 1.0:
        plan = plan.scaled(args.scale)
    results = asyncio.run(main_async(plan, args.scenario or SCENARIOS))
    print(render(results))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
