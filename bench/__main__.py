"""``python -m bench [--quick] [--scale F] [--json FILE]``: the scenarios and their references.

Each backfill runs, in the same run on the same data and table, our worker as a whole process
(``ingest run --until-finished``, from start to exit) and its reference points: ``script`` (the
program a user would write instead, ``bench/script.py``, also a whole process), ``careful``
(issue 23's careful program, ``bench/careful.py``, a flush per fixture), ``raw_copy``
(asyncpg COPY of the already-parsed rows: the database's limit) and ``raw_receive`` (an aiohttp
client reading and parsing the same stream: the socket's limit). ``startup`` is the time from
starting ``ingest run`` to its first connection to the feed; ``footprint`` runs ours, the
script, ``careful`` (issue 23's careful program, ``bench/careful.py``), and ours and the script
again with ``--batch-wait 0.02`` (off by default) one after the other on the same live feed,
in turn for a few rounds; ``live-latency`` runs ours with the defaults, ``--async-commit`` and that
``--batch-wait``. ``season`` stores a season of finished matches through
the store's write path and times the views over all of it beside one scan of ``actions``.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import dataclasses
import json
import logging
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from bench.harness import (
    Databases,
    Match,
    asyncpg_url,
    best_time,
    careful_command,
    count_rows,
    ingest_season,
    make_matches,
    no_collector_pauses,
    ours_command,
    paced,
    parsed_rows,
    process_env,
    raw_copy,
    raw_receive,
    run_to_end,
    script_command,
    server_time,
    simulator_clock,
    simulator_process,
    startup_profile,
    stop_process,
    time_to_connect,
    worker_process,
)


@dataclass
class Plan:
    bf_fixtures: int = 40  # the backfill: 40 best-of-19 fixtures at once
    bf_best_of: int = 19
    conc_fixtures: int = 200
    conc_best_of: int = 19
    startup_tries: int = 5
    live_fixtures: int = 500
    live_best_of: int = 7
    live_time_scale: float = 60.0
    live_warmup: float = 15.0
    live_measure: float = 30.0
    foot_fixtures: int = 1000
    foot_best_of: int = 7
    foot_every: float = 5.0  # a packet and a heartbeat per fixture every this many seconds
    foot_warmup: float = 15.0
    foot_measure: float = 60.0
    foot_rounds: int = 3  # each client this many times, in turn: one run moves by 10% here
    season_fixtures: int = 300  # the season: 300 finished best-of-19 matches
    season_best_of: int = 19
    season_in_play: int = 2  # and these matches still in play (half stored): derived live

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
    bf_fixtures=5, conc_fixtures=20, conc_best_of=7, startup_tries=2,
    live_fixtures=50, live_time_scale=100.0, live_warmup=4.0, live_measure=6.0,
    foot_fixtures=100, foot_warmup=5.0, foot_measure=8.0, foot_rounds=1, season_fixtures=20,
    season_in_play=1,
)  # fmt: skip


ROOT = Path(__file__).resolve().parents[1]  # where `python -m ingest` and `-m bench.*` run
LIVE_OFFSET = 1200.0  # the generator's matches start 20 minutes after the first packet
BACKFILL = ("--until-finished", "--speed", "fast")
# ours once more, with a lone packet held for company (off by default): what it saves, what it costs
BATCH_WAIT = ("--batch-wait", "0.02")


async def backfill(dbs: Databases, plan: Plan, *, concurrent: bool) -> dict[str, Any]:
    count, best_of = (
        (plan.conc_fixtures, plan.conc_best_of) if concurrent
        else (plan.bf_fixtures, plan.bf_best_of)
    )  # fmt: skip
    matches = make_matches(10_000 if concurrent else 20_000, count, best_of)
    total = sum(m.packets for m in matches)
    ids = [m.fixture_id for m in matches]
    result: dict[str, Any] = {"fixtures": count, "best_of": best_of, "packets": total}
    with simulator_process(matches) as feed:
        url = await dbs.fresh()
        secs, cpu = await run_to_end(ours_command(ids, *BACKFILL), url, feed)
        stored = await count_rows(url)
        assert stored == total, f"ours stored {stored} of {total} packets"
        result["ours"] = total / secs
        result["ours_seconds"], result["ours_cpu_s"] = secs, cpu

        url = await dbs.fresh()
        secs, cpu = await run_to_end(script_command(url, feed, ids, "--until-finished"), url, feed)
        stored = await count_rows(url)
        assert stored == total, f"the script stored {stored} of {total} packets"
        result["script"] = total / secs
        result["script_seconds"], result["script_cpu_s"] = secs, cpu

        url = await dbs.fresh()
        command = careful_command(url, feed, ids, "--until-finished")
        secs, cpu = await run_to_end(command, url, feed)
        stored = await count_rows(url)
        assert stored == total, f"the careful program stored {stored} of {total} packets"
        result["careful"] = total / secs
        result["careful_seconds"], result["careful_cpu_s"] = secs, cpu

        started = time.perf_counter()
        received = await raw_receive(feed, ids)
        assert received == total
        result["raw_receive"] = total / (time.perf_counter() - started)

        secs = await raw_copy(await dbs.fresh(), parsed_rows(matches))
        result["raw_copy"] = total / secs
    result["vs_script"] = result["ours"] / result["script"]
    result["vs_careful"] = result["ours"] / result["careful"]
    result["vs_copy"] = result["ours"] / result["raw_copy"]
    result["targets_met"] = result["vs_careful"] >= 1.25 and result["vs_copy"] >= 0.75
    return result


async def startup(dbs: Databases, plan: Plan) -> dict[str, Any]:
    """Seconds from starting the process to its first connection to the feed (median)."""
    url = await dbs.fresh()
    fixture = make_matches(20_000, 1, 3)[0].fixture_id
    ours, script = [], []
    with no_collector_pauses():
        for _ in range(plan.startup_tries):
            ours.append(await time_to_connect(lambda feed: ours_command([fixture]), url))
            script.append(
                await time_to_connect(lambda feed: script_command(url, feed, [fixture]), url)
            )
    result: dict[str, Any] = {
        "ours_s": statistics.median(ours), "script_s": statistics.median(script),
        "tries": plan.startup_tries,
    }  # fmt: skip
    # where it goes: the same for both programs but for what each imports
    result["profile_ms"] = await startup_profile(plan.startup_tries)
    return {**result, "targets_met": result["ours_s"] <= 0.25}


async def live_latency(dbs: Databases, plan: Plan) -> dict[str, Any]:
    """Ours at live pacing, with the defaults (the target's) and with ``--async-commit``, on the
    same matches: each packet's latency from its due time at the simulator to its row being
    visible to another connection, and the three legs of it (see :func:`_latency_run`)."""
    matches = make_matches(30_000, plan.live_fixtures, plan.live_best_of)
    durable = await _latency_run(dbs, plan, matches)
    fast = await _latency_run(dbs, plan, matches, "--async-commit")
    waiting = await _latency_run(dbs, plan, matches, *BATCH_WAIT)
    return {
        **durable, "async_commit": fast, "batch_wait": waiting,
        "targets_met": durable["p99_ms"] <= 5.0,
    }  # fmt: skip


async def _latency_run(
    dbs: Databases, plan: Plan, matches: list[Match], *extra_args: str
) -> dict[str, Any]:
    """One live run. Besides the whole latency (due -> visible, via ``LISTEN ingest_actions``),
    its legs, from the row's own times: ``feed`` due -> ``received_at`` (the simulator sending,
    the socket, our reading), ``queue`` ``received_at`` -> ``stored_at`` (the start of the
    transaction that stored it: waiting for the writer), ``commit`` ``stored_at`` -> visible
    (the statement, the commit with its WAL flush, the notification's delivery)."""
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
        with no_collector_pauses(), simulator_process(matches, *extra) as feed:
            clock = await simulator_clock(feed)
            async with worker_process(url, feed, [m.fixture_id for m in matches], *extra_args):
                # the scenario's own duration, not a synchronisation
                await asyncio.sleep(plan.live_warmup + plan.live_measure)
        stamps = {
            (str(row[0]), row[1]): (row[2], row[3])
            for row in await listener.fetch(
                "SELECT fixture_id, seq, extract(epoch FROM received_at)::float8, "
                "extract(epoch FROM stored_at)::float8 FROM actions"
            )
        }
    finally:
        await listener.close()
    start = clock["started"]
    window = (start + plan.live_warmup, start + plan.live_warmup + plan.live_measure)
    legs: dict[str, list[float]] = {"total": [], "feed": [], "queue": [], "commit": []}
    last: dict[str, int] = {}
    for visible_at, fixture, max_seq in seen:
        match = by_id[fixture]
        for seq in range(last.get(fixture, 0) + 1, max_seq + 1):
            due = start + (match.times[seq - 1] - match.times[0] - offset) / scale
            if window[0] <= due < window[1]:
                received, stored = stamps[(fixture, seq)]
                legs["total"].append(visible_at - due)
                legs["feed"].append(received - due)
                legs["queue"].append(stored - received)
                legs["commit"].append(visible_at - stored)
        last[fixture] = max(last.get(fixture, 0), max_seq)
    latencies = legs["total"]
    if not latencies:
        raise RuntimeError(
            f"no packet was due in the measurement window ({len(seen)} notifications, "
            f"{await count_rows(url)} rows)"
        )
    for values in legs.values():
        values.sort()

    def pct(values: list[float], p: float) -> float:
        return values[min(len(values) - 1, int(p * len(values)))] * 1000

    return {
        "fixtures": plan.live_fixtures,
        "packets_per_s": len(latencies) / plan.live_measure,
        "packets_measured": len(latencies),
        "p50_ms": pct(latencies, 0.50),
        "p99_ms": pct(latencies, 0.99),
        "max_ms": latencies[-1] * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
        "legs_p99_ms": {name: pct(legs[name], 0.99) for name in ("feed", "queue", "commit")},
        "legs_max_ms": {name: legs[name][-1] * 1000 for name in ("feed", "queue", "commit")},
    }


async def footprint(dbs: Databases, plan: Plan) -> dict[str, Any]:
    """Ours, the script, the careful program, and ours and the script with ``--batch-wait`` (what
    holding a lone packet for company saves, at the same latency for both: no target, it is off
    by default) on the same live feed, each alone
    (one after the other, on a fresh database each), ``foot_rounds`` times in turn: peak RSS
    (the highest of the rounds) and CPU (the median) of each process.

    Alone, because two cores shared by the simulator, PostgreSQL and two clients at once make
    each client's figures depend on the other's; in turns, because one run of the same program
    moves by about 10% on this machine.
    """
    matches = paced(make_matches(40_000, plan.foot_fixtures, plan.foot_best_of), plan.foot_every)
    ids = [m.fixture_id for m in matches]
    # 20 s of match time already played: four packets to catch up on, then one every 5 s
    live = ("--live", "--time-scale", "1", "--live-offset", str(4 * plan.foot_every))
    result: dict[str, Any] = {
        "fixtures": plan.foot_fixtures, "seconds": plan.foot_measure, "rounds": plan.foot_rounds
    }  # fmt: skip
    commands: dict[str, Callable[[str, str], list[str]]] = {
        "ours": lambda url, feed: ours_command(ids),
        "script": lambda url, feed: script_command(url, feed, ids),
        "careful": lambda url, feed: careful_command(url, feed, ids),
        "ours_batch_wait": lambda url, feed: ours_command(ids, *BATCH_WAIT),
        "script_batch_wait": lambda url, feed: script_command(url, feed, ids, *BATCH_WAIT),
    }
    names = list(commands)
    runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in names}
    for round_ in range(plan.foot_rounds):
        first = round_ % len(names)  # a different one first each round
        for name in names[first:] + names[:first]:
            # a feed of its own for each: the same catch-up, then the same live packets
            with simulator_process(matches, *live, heartbeat=plan.foot_every) as feed:
                url = await dbs.fresh()
                runs[name].append(await _alone(commands[name](url, feed), url, feed, plan))
    for name, figures in runs.items():
        result[f"{name}_rss_mb"] = max(rss for rss, _, _ in figures)
        result[f"{name}_cpu_runs"] = [cpu for _, cpu, _ in figures]
        result[f"{name}_cpu_s_per_min"] = statistics.median(result[f"{name}_cpu_runs"])
        result[f"{name}_packets_stored"] = min(stored for _, _, stored in figures)
    result["packets_stored"] = result["ours_packets_stored"]
    # a tiny run (--quick --scale) may measure no CPU at all: no ratio then, not a crash
    cpu = {name: result[f"{name}_cpu_s_per_min"] for name in commands}
    result["vs_script"] = cpu["ours"] / cpu["script"] if cpu["script"] else float("nan")
    result["vs_careful"] = cpu["ours"] / cpu["careful"] if cpu["careful"] else float("nan")
    # the option against the script holding its lone packets as long (the same latency paid)
    held = cpu["script_batch_wait"]
    result["batch_wait_vs_script"] = cpu["ours_batch_wait"] / held if held else float("nan")
    best = min(cpu["script"], cpu["careful"])
    result["targets_met"] = result["ours_rss_mb"] <= 55 and cpu["ours"] <= best
    return result


async def _alone(command: list[str], url: str, feed: str, plan: Plan) -> tuple[float, float, int]:
    """Run one client on the live feed: its peak RSS (MB) and CPU-seconds a minute over the
    measured window, after the warm-up (connecting, catching up), and the packets it stored."""
    proc = await asyncio.create_subprocess_exec(*command, env=process_env(url, feed), cwd=ROOT)
    try:
        process = psutil.Process(proc.pid)
        await asyncio.sleep(plan.foot_warmup)  # connect and catch up: not measured
        cpu = sum(process.cpu_times()[:2])
        peak = 0
        ends = time.monotonic() + plan.foot_measure
        while time.monotonic() < ends and proc.returncode is None:
            peak = max(peak, process.memory_info().rss)
            await asyncio.sleep(0.25)  # a sampling interval
        cpu = sum(process.cpu_times()[:2]) - cpu
        if proc.returncode is not None:
            raise RuntimeError(f"{command[2]} exited during the footprint run")
        stored = await count_rows(url)
    finally:
        await stop_process(proc)
    return peak / 2**20, cpu / plan.foot_measure * 60, stored


# the season-wide queries (#25), each held to one scan of the packets
SEASON_QUERIES = {
    "match_results": "SELECT count(*) FROM match_results",
    "frame_results": "SELECT count(*) FROM frame_results",
    "breaks 100+": "SELECT count(*) FROM breaks WHERE break_score >= 100",
    "player_match_stats": "SELECT player_id, sum(centuries), max(highest_break) "
    "FROM player_match_stats GROUP BY 1",
}
# shown beside them, without a target
SEASON_OTHERS = {
    "summary_mismatches": "SELECT count(*) FROM summary_mismatches",
    "fixture_lineups": "SELECT count(*) FROM fixture_lineups",
    "action_states": "SELECT count(*) FROM action_states",
}
LOOKUP_VIEWS = ("fixture_lineups", "action_states", "frame_results", "breaks", "match_results",
                "player_match_stats", "summary_mismatches", "market_results")  # fmt: skip


async def season(dbs: Databases, plan: Plan) -> dict[str, Any]:
    """A season of finished matches, stored through the write path (the worker's batches),
    then each season-wide query (best of two) beside ``SELECT count(*) FROM actions``, and a
    one-fixture lookup of every view (server time: planning and execution)."""
    url = await dbs.fresh()
    packets, writing = await ingest_season(
        url, 50_000, plan.season_fixtures + plan.season_in_play, plan.season_best_of,
        plan.season_in_play,
    )  # fmt: skip
    conn = await asyncpg.connect(asyncpg_url(url))
    try:
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("SET jit = off")  # as our own sessions run (README, Performance)
        size = await conn.fetchval("SELECT pg_total_relation_size('actions')")
        scan = await best_time(conn, "SELECT count(*) FROM actions")
        queries = {name: await best_time(conn, q) for name, q in SEASON_QUERIES.items()}
        others = {name: await best_time(conn, q) for name, q in SEASON_OTHERS.items()}
        finished = await conn.fetchval(
            "SELECT fixture_id FROM actions WHERE finished ORDER BY fixture_id "
            "OFFSET $1 LIMIT 1", plan.season_fixtures // 2
        )  # fmt: skip
        in_play = await conn.fetchval(
            "SELECT fixture_id FROM fixtures WHERE NOT finished ORDER BY fixture_id LIMIT 1"
        )
        lookups, live_lookups = {}, {}
        for view in LOOKUP_VIEWS:
            query = f"SELECT * FROM {view} WHERE fixture_id = $1"
            lookups[view] = await server_time(conn, query, finished)
            if in_play is not None:
                live_lookups[view] = await server_time(conn, query, in_play)
    finally:
        await conn.close()
    ratios = {name: secs / scan for name, secs in queries.items()}
    return {
        "fixtures": plan.season_fixtures,
        "best_of": plan.season_best_of,
        "packets": packets,
        "actions_mb": size / 2**20,
        "write_seconds": writing,
        "write_per_s": packets / writing,
        "scan_s": scan,
        "queries_s": queries,
        "ratios": ratios,
        "others_s": others,
        "other_ratios": {name: secs / scan for name, secs in others.items()},
        "in_play": plan.season_in_play,
        "lookups_ms": {view: secs * 1000 for view, secs in lookups.items()},
        "in_play_lookups_ms": {view: secs * 1000 for view, secs in live_lookups.items()},
        "targets_met": max(ratios.values()) <= 1.0
        and max([*lookups.values(), *live_lookups.values()]) <= 0.020,
    }


def _legs(r: dict[str, Any]) -> str:
    """The p99 (and max) of each leg of a live run's latency."""
    shown = ", ".join(
        f"{name} {r['legs_p99_ms'][name]:.1f} ({r['legs_max_ms'][name]:.0f})"
        for name in ("feed", "queue", "commit")
    )
    return f"p99 (max) of its legs: {shown} ms"


def render(results: dict[str, Any]) -> str:
    lines = [
        f"{'scenario':20} {'ours':>9} {'script':>9} {'raw_copy':>9} {'raw_receive':>11} "
        f"{'ours/script':>11} {'ours/copy':>9}",
    ]
    for name in ("backfill", "backfill-concurrent"):
        if name not in results:
            continue
        r = results[name]
        lines.append(
            f"{name:20} {r['ours']:>7,.0f}/s {r['script']:>7,.0f}/s {r['raw_copy']:>7,.0f}/s "
            f"{r['raw_receive']:>9,.0f}/s {r['vs_script']:>10.2f}x {r['vs_copy']:>8.2f}x"
        )
        lines.append(
            f"{'':20} careful {r['careful']:,.0f}/s: ours {r['vs_careful']:.2f}x  "
            f"{'met' if r['targets_met'] else 'MISSED'} (>= 1.25x careful, >= 0.75x copy)"
        )
        lines.append(
            f"{'':20} ours {r['ours_seconds']:.2f} s using {r['ours_cpu_s']:.2f} CPU-s, script "
            f"{r['script_seconds']:.2f} s using {r['script_cpu_s']:.2f} CPU-s, careful "
            f"{r['careful_seconds']:.2f} s using {r['careful_cpu_s']:.2f} CPU-s"
        )
    if "startup" in results:
        r = results["startup"]
        lines.append(
            f"{'startup':20} first connection {r['ours_s']:.2f} s after start (script "
            f"{r['script_s']:.2f} s)  {'met' if r['targets_met'] else 'MISSED'} (<= 0.25 s)"
        )
        if "profile_ms" in r:
            p = r["profile_ms"]
            # what is left of the median start-up once the interpreter has started and imported
            rest = r["ours_s"] * 1000 - p["python"] - p["ours_imports"]
            lines.append(
                f"{'':20} where it goes (ms, best of {r.get('tries', '?')}): python "
                f"{p['python']:.0f}; imports {p['ours_imports']:.0f} (aiohttp "
                f"{p['aiohttp']:.0f}, two certificate loads of {p['certificates']:.0f} in it; "
                f"our modules {p['own']:.0f}); then about {rest:.0f} to the first connection "
                f"(the database first); the script's imports {p['script_imports']:.0f}"
            )
    if "live-latency" in results:
        r = results["live-latency"]
        lines.append(
            f"{'live-latency':20} {r['fixtures']} fixtures, {r['packets_per_s']:,.0f} packets/s: "
            f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms  "
            f"{'met' if r['targets_met'] else 'MISSED'} (p99 <= 5 ms)"
        )
        lines.append(f"{'':20} {_legs(r)}")
        a = r["async_commit"]
        lines.append(
            f"{'':20} with --async-commit: p50 {a['p50_ms']:.1f} ms, p99 {a['p99_ms']:.1f} ms, "
            f"max {a['max_ms']:.1f} ms; {_legs(a)}"
        )
        if "batch_wait" in r:
            w = r["batch_wait"]
            lines.append(
                f"{'':20} with {' '.join(BATCH_WAIT)}: p50 {w['p50_ms']:.1f} ms, "
                f"p99 {w['p99_ms']:.1f} ms, max {w['max_ms']:.1f} ms; {_legs(w)}"
            )
    if "footprint" in results:
        r = results["footprint"]
        lines.append(
            f"{'footprint':20} {r['fixtures']} fixtures for {r['seconds']:.0f} s each, alone: "
            f"ours {r['ours_rss_mb']:.0f} MB, {r['ours_cpu_s_per_min']:.2f} CPU-s/min; script "
            f"{r['script_rss_mb']:.0f} MB, {r['script_cpu_s_per_min']:.2f}; careful "
            f"{r['careful_rss_mb']:.0f} MB, {r['careful_cpu_s_per_min']:.2f}"
        )
        lines.append(
            f"{'':20} CPU {r['vs_script']:.2f}x the script, {r['vs_careful']:.2f}x careful  "
            f"{'met' if r['targets_met'] else 'MISSED'} (<= 55 MB, CPU <= the better reference)"
        )
        if r["rounds"] > 1:
            shown = "; ".join(
                f"{name} " + ", ".join(f"{cpu:.2f}" for cpu in r[f"{name}_cpu_runs"])
                for name in ("ours", "script", "careful", "ours_batch_wait", "script_batch_wait")
                if f"{name}_cpu_runs" in r
            )
            lines.append(f"{'':20} {r['rounds']} rounds in turn (median, peak RSS): {shown}")
            # the machine's speed drifts over a run: the two in the same round are closer
            paired = ", ".join(
                f"{ours / script:.2f}x" if script else "-"
                for ours, script in zip(r["ours_cpu_runs"], r["script_cpu_runs"], strict=True)
            )
            lines.append(f"{'':20} ours against the script round by round: {paired}")
        if "ours_batch_wait_rss_mb" in r:
            lines.append(
                f"{'':20} ours with {' '.join(BATCH_WAIT)}: {r['ours_batch_wait_rss_mb']:.0f} MB, "
                f"{r['ours_batch_wait_cpu_s_per_min']:.2f} CPU-s/min; the script with the same: "
                f"{r['script_batch_wait_rss_mb']:.0f} MB, "
                f"{r['script_batch_wait_cpu_s_per_min']:.2f}; {r['batch_wait_vs_script']:.2f}x "
                "(off by default: no target)"
            )
    if "season" in results:
        r = results["season"]
        lines.append(
            f"{'season':20} {r['fixtures']} finished best-of-{r['best_of']} matches and "
            f"{r['in_play']} in play, {r['packets']:,} packets ({r['actions_mb']:,.0f} MB), "
            f"written at {r['write_per_s']:,.0f}/s; SELECT count(*) FROM actions "
            f"{r['scan_s']:.3f} s"
        )
        for name, secs in r["queries_s"].items():
            lines.append(f"{'':20} {name:20} {secs:8.3f} s {r['ratios'][name]:8.2f}x the scan")
        for name, secs in r["others_s"].items():
            lines.append(
                f"{'':20} {name:20} {secs:8.3f} s {r['other_ratios'][name]:8.2f}x  (no target)"
            )
        for kind, key in (("finished", "lookups_ms"), ("in play", "in_play_lookups_ms")):
            if not r[key]:
                continue
            slowest = max(r[key], key=r[key].get)
            lines.append(
                f"{'':20} one fixture {kind}: every view in <= {r[key][slowest]:.1f} ms "
                f"(slowest {slowest})"
            )
        lines.append(
            f"{'':20} {'met' if r['targets_met'] else 'MISSED'} (<= 1.0x the scan, one fixture "
            "<= 20 ms)"
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
        if "backfill" in scenarios:
            results["backfill"] = await backfill(dbs, plan, concurrent=False)
        if "backfill-concurrent" in scenarios:
            results["backfill-concurrent"] = await backfill(dbs, plan, concurrent=True)
        if "startup" in scenarios:
            results["startup"] = await startup(dbs, plan)
        if "live-latency" in scenarios:
            results["live-latency"] = await live_latency(dbs, plan)
        if "footprint" in scenarios:
            results["footprint"] = await footprint(dbs, plan)
        if "season" in scenarios:
            results["season"] = await season(dbs, plan)
    finally:
        await dbs.drop_all()
    return results


SCENARIOS = ["backfill", "backfill-concurrent", "startup", "live-latency", "footprint", "season"]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller run, under a minute")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply fixture counts")
    parser.add_argument("--json", default="bench/results/latest.json", help="write results here")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, help="run only these")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    # Byte-compile our modules as installing the wheel does: an editable install under
    # PYTHONDONTWRITEBYTECODE=1 would otherwise compile them at every start (60 ms of start-up).
    compileall.compile_dir(Path(__file__).resolve().parents[1] / "ingest", quiet=1)
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
