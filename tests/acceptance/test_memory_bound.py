"""A database outage while large packets stream in: the worker's memory follows --max-buffer."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import asyncpg
import psutil
import pytest

from ingest.simulator.generator import MatchSpec, generate_match
from ingest.simulator.recording import Recording
from tests.acceptance.test_cli import cli_env, start_cli
from tests.conftest import TOKEN, StartSimulator, pg_ctl, plain, wait_until

MiB = 1024 * 1024
FIXTURES, PACKETS = 40, 10  # 1 MiB packets: 400 MiB in all, over six times the bound below
BOUND = 64 * MiB


def big_match(seed: int) -> Recording:
    """The first packets of a generated match, each padded to 1 MiB, then its finished one."""
    packets = generate_match(MatchSpec(seed=seed, best_of=1)).packets
    chosen = [*packets[: PACKETS - 1], packets[-1]]
    lines = []
    for number, source in enumerate(chosen, start=1):
        packet = json.loads(json.dumps(source))
        packet["fixtureAction"]["fixtureSeqNum"] = number
        packet["fixtureAction"].setdefault("metadata", {})["padding"] = "x" * MiB
        lines.append(json.dumps(packet))
    return Recording.from_lines(lines, name=f"big {seed}")


@pytest.mark.slow
async def test_an_outage_during_a_backfill_of_large_packets_stays_within_the_byte_bound(
    start_simulator: StartSimulator, own_server: tuple[str, Path]
) -> None:
    url, pgdata = own_server
    recordings = [big_match(seed) for seed in range(1, FIXTURES + 1)]
    # each connection sends one packet, then nothing for a while (less than the liveness
    # timeout): the database goes away in that pause, and the big packets arrive into the outage
    sim = await start_simulator(recordings, stall_after=1, stall_seconds=8)
    env = cli_env(
        INGEST_DATABASE_URL=url, INGEST_FEED_URL=sim.url, INGEST_TOKEN=TOKEN,
        INGEST_CONNECT_RATE="0", INGEST_MAX_BUFFER="64MiB",
    )  # fmt: skip
    ids = [str(r.fixture_id) for r in recordings]
    proc = await start_cli("run", *ids, "--until-finished", "--speed", "fast", env=env)
    worker = psutil.Process(proc.pid)
    sql = await asyncpg.connect(plain(url))
    try:
        first = "SELECT count(*) = $1 FROM actions"  # every fixture's first packet is stored
        await wait_until(lambda: sql.fetchval(first, FIXTURES), timeout=30)
    finally:
        await sql.close()
    baseline = worker.memory_info().rss
    await asyncio.to_thread(pg_ctl, pgdata, "stop")
    assert sum(c.packets_sent for c in sim.counters.values()) == FIXTURES  # the rest: into it
    peak, received, changed = baseline, 0, time.monotonic()
    deadline = changed + 30  # the outage: until the feed has sent all it can (or 30 s)
    while time.monotonic() < deadline:
        peak = max(peak, worker.memory_info().rss)
        sent = sum(c.packets_sent for c in sim.counters.values())
        if sent != received:
            received, changed = sent, time.monotonic()
        elif received > FIXTURES and time.monotonic() - changed > 3:
            break  # the worker reads no more: the buffer is full, the rest waits in the sockets
        await asyncio.sleep(0.05)
    await asyncio.to_thread(pg_ctl, pgdata, "start")
    sql = await asyncpg.connect(plain(url))
    try:  # writing again soon after the database is back
        await wait_until(lambda: sql.fetchval("SELECT count(*) > $1 FROM actions", FIXTURES), 12)
    finally:
        await sql.close()
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert received * MiB > BOUND  # the feed did send more than the bound during the outage
    # Beyond the buffer, each connection may hold the one frame it is handing over (its bytes
    # and its text); an idle connection holds nothing, so the baseline holds no packet (it held
    # one a fixture, 80 MiB here, before the feed client let go of the last one between messages)
    assert peak - baseline < BOUND + FIXTURES * 2 * MiB + 48 * MiB, (peak - baseline) / MiB
    sql = await asyncpg.connect(plain(url))
    try:
        rows = dict(await sql.fetch("SELECT fixture_id, count(*) FROM actions GROUP BY fixture_id"))
    finally:
        await sql.close()
    assert {str(f): n for f, n in rows.items()} == dict.fromkeys(ids, PACKETS)
