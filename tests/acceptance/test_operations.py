"""Operating the worker through the real CLI: kills, runtimes, the registry, verify, logs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import signal
import time
import uuid
from pathlib import Path

import asyncpg

from ingest.simulator.generator import GeneratedMatch, to_jsonl
from ingest.simulator.recording import Recording
from tests.acceptance.test_cli import cli, cli_env, start_cli
from tests.conftest import TOKEN, StartSimulator, pg_ctl, plain, wait_until
from tests.integration.test_resilience import assert_stored_exactly, generated


async def test_sigkill_at_random_moments_then_restart_loses_and_duplicates_nothing(
    start_simulator: StartSimulator, database_url: str, recording: Recording
) -> None:
    seconds = (recording.times[-1] or 0) - (recording.times[0] or 0)
    sim = await start_simulator([recording], time_scale=seconds / 6, max_gap=0.05)
    env = cli_env(INGEST_DATABASE_URL=database_url, INGEST_FEED_URL=sim.url, INGEST_TOKEN=TOKEN)
    sql = await asyncpg.connect(plain(database_url))
    rng = random.Random(20261124)
    kills = 0
    try:
        for _ in range(3):  # three kills at random moments; then the run that finishes
            proc = await start_cli("run", str(recording.fixture_id), "--until-finished", env=env)
            stored = await sql.fetchval("SELECT count(*) FROM actions")
            target = stored + rng.randint(5, 40)

            async def reached(target: int = target) -> bool:
                return bool(await sql.fetchval("SELECT count(*) >= $1 FROM actions", target))

            with contextlib.suppress(TimeoutError):  # the match may end first
                await wait_until(reached, timeout=20)
            if proc.returncode is None and not await sql.fetchval("SELECT finished FROM fixtures"):
                proc.send_signal(signal.SIGKILL)
                kills += 1
            await proc.communicate()
            if await sql.fetchval("SELECT coalesce(bool_or(finished), false) FROM fixtures"):
                break
        assert kills >= 2
        done = await cli("run", str(recording.fixture_id), "--until-finished", env=env)
        assert done.code == 0
        await assert_stored_exactly(sql, recording)
        verify = await cli("verify", env=env)
        assert verify.code == 0, verify.stdout
    finally:
        await sql.close()


async def test_max_runtime_stops_cleanly(
    start_simulator: StartSimulator, database_url: str, recording: Recording
) -> None:
    sim = await start_simulator([recording], time_scale=1.0)  # real pacing: far from finished
    env = cli_env(INGEST_DATABASE_URL=database_url, INGEST_FEED_URL=sim.url, INGEST_TOKEN=TOKEN)
    started = time.monotonic()
    done = await cli("run", str(recording.fixture_id), "--max-runtime", "1", env=env)
    elapsed = time.monotonic() - started
    assert done.code == 0
    assert "--max-runtime reached" in done.stderr
    # 1 s of streaming, a stop within 5 s, and the interpreter's start on a loaded machine
    assert elapsed < 15, elapsed
    sql = await asyncpg.connect(plain(database_url))
    try:
        row = await sql.fetchrow("SELECT finished, state, packets FROM fixtures")
        stored = await sql.fetchval("SELECT count(*) FROM actions")
    finally:
        await sql.close()
    assert (row["finished"], row["state"]) == (False, "stopped")  # stopped, not finished
    assert row["packets"] == stored < len(recording.lines)  # what came is stored and counted


async def test_run_all_follows_the_registry_and_picks_up_new_fixtures(
    start_simulator: StartSimulator, database_url: str
) -> None:
    first, second, disabled = generated(1), generated(2), generated(3)
    sim = await start_simulator([first, second, disabled])
    env = cli_env(INGEST_DATABASE_URL=database_url, INGEST_FEED_URL=sim.url, INGEST_TOKEN=TOKEN)
    assert (await cli("fixtures", "add", str(first.fixture_id), str(disabled.fixture_id),
                      env=env)).code == 0  # fmt: skip
    assert (await cli("fixtures", "disable", str(disabled.fixture_id), env=env)).code == 0
    assert (await cli("fixtures", "disable", str(uuid.uuid4()), env=env)).code == 66
    proc = await start_cli("run", "--all", "--registry-poll", "0.2", "--speed", "fast", env=env)
    sql = await asyncpg.connect(plain(database_url))
    try:

        async def finished(fixture: uuid.UUID) -> bool:
            return bool(
                await sql.fetchval("SELECT finished FROM fixtures WHERE fixture_id = $1", fixture)
            )

        await wait_until(lambda: finished(first.fixture_id))
        assert (await cli("fixtures", "add", str(second.fixture_id), env=env)).code == 0
        await wait_until(lambda: finished(second.fixture_id))
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 0, err.decode()
        await assert_stored_exactly(sql, first)
        await assert_stored_exactly(sql, second)
        assert (
            await sql.fetchval(
                "SELECT count(*) FROM actions WHERE fixture_id = $1", disabled.fixture_id
            )
            == 0
        )
        listed = json.loads((await cli("fixtures", "list", "--format", "json", env=env)).stdout)
        states = {row["fixture_id"]: (row["enabled"], row["finished"]) for row in listed}
        assert states[str(disabled.fixture_id)] == (False, False)
        assert states[str(second.fixture_id)] == (True, True)
        # what the README promises of `list --format json`: state, owner and lease expiry too
        row = {r["fixture_id"]: r for r in listed}[str(second.fixture_id)]
        assert row["state"] == "finished" and row["connects"] >= 1
        assert {"owner", "lease_expires_at", "state_changed_at", "last_error"} <= set(row)
        assert row["owner"] is None  # a clean stop releases the leases
    finally:
        await sql.close()
        if proc.returncode is None:
            proc.kill()


async def test_verify_reports_problems_with_exit_1(
    start_simulator: StartSimulator, database_url: str, recording: Recording
) -> None:
    sim = await start_simulator([recording], malformed_every=50)
    env = cli_env(INGEST_DATABASE_URL=database_url, INGEST_FEED_URL=sim.url, INGEST_TOKEN=TOKEN)
    fixture = str(recording.fixture_id)
    assert (await cli("run", fixture, "--until-finished", "--speed", "fast", env=env)).code == 0
    sql = await asyncpg.connect(plain(database_url))
    try:
        await sql.execute("DELETE FROM actions WHERE seq IN (10, 11, 12)")
    finally:
        await sql.close()
    verify = await cli("verify", fixture, env=env)
    assert verify.code == 1
    assert "gaps at seq 10-12" in verify.stdout
    assert f"{len(recording.lines) // 50} rejected message(s)" in verify.stdout
    unknown = await cli("verify", str(uuid.uuid4()), env=env)
    assert unknown.code == 66  # no such fixture: not a configuration error


async def test_json_logs_for_machines_never_carry_the_token(
    start_simulator: StartSimulator, database_url: str, recording: Recording
) -> None:
    sim = await start_simulator([recording], drop_after=100)
    env = cli_env(
        INGEST_DATABASE_URL=database_url,
        INGEST_FEED_URL=sim.url,
        INGEST_TOKEN=TOKEN,
        INGEST_LOG_FORMAT="json",
    )
    fixture = str(recording.fixture_id)
    done = await cli(
        "run", fixture, "--until-finished", "--speed", "fast", "--log-level", "DEBUG", env=env
    )
    assert done.code == 0
    entries = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    messages = [e["message"] for e in entries]
    assert any("connecting at startPosition=0" in m for m in messages)
    assert any("disconnected at seq 100" in m for m in messages)
    assert any("connecting at startPosition=100" in m for m in messages)
    assert any("finished at seq" in m for m in messages)
    assert TOKEN not in done.stderr + done.stdout


async def test_a_progress_line_per_fixture_every_progress_interval(
    start_simulator: StartSimulator, database_url: str, recording: Recording
) -> None:
    """README, How `run` behaves: "a progress line per fixture every minute" (every
    --progress-interval seconds), with what it received and stored."""
    seconds = (recording.times[-1] or 0) - (recording.times[0] or 0)
    sim = await start_simulator([recording], time_scale=seconds / 2.5, max_gap=0.1)
    env = cli_env(INGEST_DATABASE_URL=database_url, INGEST_FEED_URL=sim.url, INGEST_TOKEN=TOKEN)
    fixture = str(recording.fixture_id)
    done = await cli("run", fixture, "--until-finished", "--progress-interval", "0.5", env=env)
    assert done.code == 0, done.stderr
    progress = [
        line for line in done.stderr.splitlines() if f"fixture {fixture}: progress:" in line
    ]
    assert len(progress) >= 2, done.stderr  # a match of 2.5 s or more, a line every 0.5 s
    counts = [re.search(r"(\d+) packets received", line) for line in progress]
    received = [int(found[1]) for found in counts if found is not None]
    assert len(received) == len(progress), progress
    assert received == sorted(received) and received[-1] > 0


async def test_the_decommissioned_feed_host_is_named_in_the_log(database_url: str) -> None:
    """README, Configuration: the legacy dde-streams.data.imgarena.com host was decommissioned
    on 2026-09-30; a worker configured with it says so, and which host is current."""
    env = cli_env(
        INGEST_DATABASE_URL=database_url,
        INGEST_FEED_URL="wss://dde-streams.data.imgarena.com",
        INGEST_TOKEN=TOKEN,
    )
    done = await cli("run", str(uuid.uuid4()), "--max-runtime", "1", env=env)
    assert "decommissioned on 2026-09-30" in done.stderr, done.stderr
    assert "the current host is wss://" in done.stderr
    assert TOKEN not in done.stderr


async def test_report_as_text_json_and_a_picture(
    start_simulator: StartSimulator, database_url: str, match: GeneratedMatch, tmp_path: Path
) -> None:
    recording = Recording.from_text(to_jsonl(match.packets), name="match")
    sim = await start_simulator([recording])
    env = cli_env(INGEST_DATABASE_URL=database_url, INGEST_FEED_URL=sim.url, INGEST_TOKEN=TOKEN)
    fixture = str(recording.fixture_id)
    assert (await cli("run", fixture, "--until-finished", "--speed", "fast", env=env)).code == 0
    truth = match.truth
    text = await cli("report", fixture, env=env)
    assert text.code == 0
    assert f"{truth['home_frames']} - {truth['away_frames']}" in text.stdout
    assert "Frames" in text.stdout and "Players" in text.stdout
    as_json = await cli("report", fixture, "--format", "json", env=env)
    data = json.loads(as_json.stdout)
    assert data["match"]["winner"] == truth["winner"]
    assert [f["winner"] for f in data["frames"]] == [f["winner"] for f in truth["frames"]]
    assert [b["break_score"] for b in data["breaks"]] == [b["break_score"] for b in truth["breaks"]]
    picture = tmp_path / "match.png"
    plotted = await cli("report", fixture, "--plot", str(picture), env=env)
    assert plotted.code == 0
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size > 10_000
    missing = await cli("report", str(uuid.uuid4()), env=env)
    assert missing.code == 66  # no such fixture, not "bad configuration"


async def test_a_worker_started_while_the_database_is_down_waits_then_ingests_everything(
    start_simulator: StartSimulator, own_server: tuple[str, Path], recording: Recording
) -> None:
    url, pgdata = own_server
    sim = await start_simulator([recording])
    env = cli_env(
        INGEST_DATABASE_URL=url,
        INGEST_FEED_URL=sim.url,
        INGEST_TOKEN=TOKEN,
        INGEST_CONNECT_RATE="0",
    )
    await asyncio.to_thread(pg_ctl, pgdata, "stop")
    proc = await start_cli(
        "run", str(recording.fixture_id), "--until-finished", "--speed", "fast", env=env
    )
    assert proc.stderr is not None
    waiting = await asyncio.wait_for(proc.stderr.readline(), 20)
    assert b"database unavailable, retrying" in waiting, waiting
    assert proc.returncode is None  # waiting, not exit 75
    assert sim.counters[recording.fixture_id].connections == 0  # nothing read before the schema
    await asyncio.to_thread(pg_ctl, pgdata, "start")
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert b"database back after" in err
    sql = await asyncpg.connect(plain(url))
    try:
        await assert_stored_exactly(sql, recording)
    finally:
        await sql.close()


async def test_sigterm_while_waiting_for_the_database_stops_at_once(
    start_simulator: StartSimulator, own_server: tuple[str, Path], recording: Recording
) -> None:
    url, pgdata = own_server
    sim = await start_simulator([recording])
    env = cli_env(INGEST_DATABASE_URL=url, INGEST_FEED_URL=sim.url, INGEST_TOKEN=TOKEN)
    await asyncio.to_thread(pg_ctl, pgdata, "stop")
    proc = await start_cli("run", str(recording.fixture_id), env=env)
    assert proc.stderr is not None
    waiting = await asyncio.wait_for(proc.stderr.readline(), 20)
    assert b"database unavailable, retrying" in waiting, waiting
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 5)
    assert proc.returncode == 0, err.decode()
    assert b"stopped while waiting for the database" in err


async def test_a_second_signal_during_the_stop_exits_at_once_with_128_plus_the_signal(
    start_simulator: StartSimulator, own_server: tuple[str, Path], recording: Recording
) -> None:
    url, pgdata = own_server
    # live at 20x: packets keep arriving after the database has gone, so the stop has some to
    # flush (with nothing pending a stop needs no database and ends before a second signal)
    sim = await start_simulator([recording], live=True, time_scale=20.0)
    env = cli_env(INGEST_DATABASE_URL=url, INGEST_FEED_URL=sim.url, INGEST_TOKEN=TOKEN)
    assert (await cli("migrate", env=env)).code == 0
    proc = await start_cli("run", str(recording.fixture_id), env=env)
    assert proc.stderr is not None
    sql = await asyncpg.connect(plain(url))
    try:
        await wait_until(lambda: sql.fetchval("SELECT count(*) > 0 FROM actions"), timeout=30)
    finally:
        await sql.close()
    await asyncio.to_thread(pg_ctl, pgdata, "stop")
    while b"database unavailable, retrying" not in await asyncio.wait_for(
        proc.stderr.readline(), 30
    ):
        pass  # a packet received since waits for the database: the stop's flush will (3 s)
    proc.send_signal(signal.SIGTERM)
    while b"SIGTERM received: stopping" not in await asyncio.wait_for(proc.stderr.readline(), 20):
        pass
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.wait(), 10)
    assert proc.returncode == 128 + signal.SIGTERM == 143
    await asyncio.to_thread(pg_ctl, pgdata, "start")
