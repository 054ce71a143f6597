"""``python -m bench.write_cost [--matches N] [--rounds N]``: what the stored-results triggers of
migration 0011 cost the write path.

The same packets (generated best-of-19 matches, under new fixture ids each round) are written
through the store's write path with the insert trigger enabled and disabled, in alternating
rounds on one database (embedded, or ``INGEST_BENCH_DATABASE_URL``):

* ``batch``: a match's first 500 packets in one batch (COPY, as the worker stores a
  backfill's);
* ``one``: the rest one packet per batch (the INSERT statement, a live feed's usual batch);
* ``finishing``: the one-packet batch that carries a match's finished packet, which with the
  trigger also stores the match's results (one fixture's refresh).

The modes alternate match by match. Each prints the median and 90th percentile per batch, and
the difference; the refresh of a finished match called by itself; and the server's own
account of the trigger function's time per batch (``pg_stat_user_functions``, without the wire
and the commit's flush, which make the wall-clock figures noisy on a shared machine).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime

import asyncpg

from bench.harness import Databases, asyncpg_url
from ingest.db.store import Store
from ingest.feed.packet import Action, classify
from ingest.simulator.generator import MatchSpec, generate_match, to_jsonl

TRIGGER = "actions_results_insert"


def matches(count: int) -> list[list[Action]]:
    now = datetime.now(UTC)
    out = []
    for seed in range(70_000, 70_000 + count):
        lines = to_jsonl(generate_match(MatchSpec(seed=seed, best_of=19)).packets).splitlines()
        actions = []
        for i, line in enumerate(lines, 1):
            frame = classify(line.encode(), binary=False, position=i, received_at=now)
            assert isinstance(frame, Action)
            actions.append(frame)
        out.append(actions)
    return out


async def timed(store: Store, batch: list[tuple[uuid.UUID, Action]]) -> float:
    started = time.perf_counter()
    await store.write(batch)
    return time.perf_counter() - started


async def run(rounds: int, count: int) -> dict[str, dict[str, list[float]]]:
    packets = matches(count)
    dbs = Databases()
    stores: dict[str, Store] = {}
    try:
        # two databases on one server, the trigger disabled in one: toggling it in one database
        # would invalidate every cached plan over actions each time (and time the re-planning)
        admins, urls = {}, {}
        for mode in ("off", "on"):
            urls[mode] = url = await dbs.fresh()
            admins[mode] = await asyncpg.connect(asyncpg_url(url))
            # the server's own account of the trigger functions' time (pg_stat_user_functions)
            name = await admins[mode].fetchval("SELECT current_database()")
            await admins[mode].execute(f"ALTER DATABASE \"{name}\" SET track_functions = 'pl'")
            stores[mode] = Store.connect(url)
        await admins["off"].execute(f"ALTER TABLE actions DISABLE TRIGGER {TRIGGER}")
        times: dict[str, dict[str, list[float]]] = {
            mode: {"batch": [], "one": [], "finishing": []} for mode in ("off", "on")
        }
        times["refresh"] = {"alone": []}
        times["server"] = {}
        for n in range(rounds):
            for i, actions in enumerate(packets):
                # the modes alternate match by match, and swap places each round
                for mode in ("off", "on") if (n + i) % 2 == 0 else ("on", "off"):
                    got, store, fixture = times[mode], stores[mode], uuid.uuid4()
                    got["batch"].append(await timed(store, [(fixture, a) for a in actions[:500]]))
                    for action in actions[500:-1]:
                        got["one"].append(await timed(store, [(fixture, action)]))
                    got["finishing"].append(await timed(store, [(fixture, actions[-1])]))
                    if mode == "on":  # the same refresh, called by itself
                        started = time.perf_counter()
                        await admins[mode].execute("SELECT refresh_fixture_results($1)", fixture)
                        times["refresh"]["alone"].append(time.perf_counter() - started)
        for store in stores.values():
            await store.close()  # its sessions end: their function statistics are flushed
        stores = {}
        await asyncio.sleep(1)
        conn = await asyncpg.connect(asyncpg_url(urls["on"]))
        try:
            for name, calls, total, own in await conn.fetch(
                "SELECT funcname, calls, total_time, self_time FROM pg_stat_user_functions "
                "WHERE funcname IN ('results_after_insert', 'results_keep')"
            ):
                times["server"][name] = [calls, total / 1000, own / 1000]
        finally:
            await conn.close()
        for admin in admins.values():
            await admin.close()
    finally:
        for store in stores.values():
            await store.close()
        await dbs.drop_all()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.write_cost", description=__doc__)
    parser.add_argument("--matches", type=int, default=4, help="best-of-19 matches per round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of each mode, alternating")
    args = parser.parse_args()
    times = asyncio.run(run(args.rounds, args.matches))

    def stats(values: list[float]) -> tuple[float, float]:
        ordered = sorted(values)
        return statistics.median(ordered) * 1000, ordered[int(0.9 * (len(ordered) - 1))] * 1000

    print(f"{'batch':10} {'n':>6} {'off p50':>9} {'on p50':>9} {'off p90':>9} {'on p90':>9}")
    for kind in ("batch", "one", "finishing"):
        (off50, off90), (on50, on90) = stats(times["off"][kind]), stats(times["on"][kind])
        print(
            f"{kind:10} {len(times['on'][kind]):>6} {off50:>7.3f}ms {on50:>7.3f}ms "
            f"{off90:>7.3f}ms {on90:>7.3f}ms   p50 {on50 - off50:+.3f} ms ({on50 / off50:.2f}x)"
        )
    (alone, alone90) = stats(times["refresh"]["alone"])
    print(f"refresh_fixture_results(one best-of-19 match) by itself: p50 {alone:.1f} ms, p90 "
          f"{alone90:.1f} ms")  # fmt: skip
    server = times["server"]
    if "results_after_insert" in server:
        calls, _, own = server["results_after_insert"]
        print(f"server: the insert trigger itself {own / calls * 1e6:.0f} us per batch "
              f"({calls} batches, refreshes not counted)")  # fmt: skip
    if "results_keep" in server:
        calls, total, _ = server["results_keep"]
        print(f"server: a refresh from the trigger {total / calls * 1e3:.1f} ms "
              f"({calls} finished matches)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
