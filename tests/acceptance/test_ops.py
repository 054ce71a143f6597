"""What operators see: check, status, metrics, health and the systemd notify protocol."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import tempfile
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from ingest.simulator.recording import Recording
from tests.acceptance.test_cli import cli, cli_env, start_cli
from tests.conftest import TOKEN, StartSimulator, plain, wait_until
from tests.integration import pgtools


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_check_is_for_health_checks(database_url: str, empty_database_url: str) -> None:
    ok = await cli("check", env=cli_env(INGEST_DATABASE_URL=database_url))
    assert (ok.code, ok.stdout) == (0, "ok\n")
    unmigrated = await cli("check", env=cli_env(INGEST_DATABASE_URL=empty_database_url))
    assert unmigrated.code == 1 and "ingest migrate" in unmigrated.stdout
    nowhere = "postgresql://nobody@/nothing?host=/nonexistent-socket-dir"
    unreachable = await cli("check", env=cli_env(INGEST_DATABASE_URL=nowhere))
    assert unreachable.code == 1 and "not ok" in unreachable.stdout


async def test_a_host_that_takes_the_connection_and_never_answers_is_passed_over(
    database_url: str,
) -> None:
    """libpq's ``connect_timeout`` is for each host of the URL: a first host that accepts and
    then says nothing (a hung primary) costs one timeout, and the next host is used. asyncpg's
    own timeout covers all the hosts, so the standby behind it was never tried (a failover
    missed: ``check`` said "not ok" and ``run`` would have retried until it gave up)."""
    held: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accepted; nothing read, nothing answered

    hung = await asyncio.start_server(silent, "127.0.0.1", 0)
    real = make_url(database_url)  # a unix socket directory as its host, or an address
    host = str(real.query.get("host") or real.host)
    url = (
        f"postgresql://{real.username}@/{real.database}?target_session_attrs=read-write"
        f"&host=127.0.0.1,{host}&port={hung.sockets[0].getsockname()[1]},{real.port or 5432}"
        "&connect_timeout=1"
    )
    try:
        started = asyncio.get_running_loop().time()
        done = await cli("check", env=cli_env(INGEST_DATABASE_URL=url), timeout=30)
        took = asyncio.get_running_loop().time() - started
        migrated = await cli("migrate", env=cli_env(INGEST_DATABASE_URL=url), timeout=60)
        # the default: 5 s for the hung host, and check waits for the next one
        default = url.replace("&connect_timeout=1", "")
        by_default = await cli("check", env=cli_env(INGEST_DATABASE_URL=default), timeout=60)
    finally:
        hung.close()
        for writer in held:
            writer.close()
    assert (done.code, done.stdout) == (0, "ok\n"), done.stderr
    assert held, "the hung host, first in the list, was tried first"
    assert took < 10, f"one second for the hung host, not the whole budget: {took:.1f} s"
    assert migrated.code == 0, migrated.stderr  # alembic's connections go the same way
    assert (by_default.code, by_default.stdout) == (0, "ok\n"), by_default.stderr


@pytest.mark.skipif(pgtools.PGBOUNCER is None, reason=pgtools.NO_PGBOUNCER)
async def test_pgbouncer_without_the_pooler_parameter_stops_run_with_exit_78(
    database_url: str,
) -> None:
    """Behind PgBouncer, a URL without ?prepared_statement_cache_size=0 is a configuration error
    naming the parameter (README, High availability), not an outage retried for 10 minutes: a
    stock bouncer refuses the jit startup parameter we send PostgreSQL. (One told to ignore it
    mixes up named prepared statements instead, when two meet on one server connection: not on
    cue, so tests/unit/test_translate.py holds those errors to the same exit.)"""
    target = make_url(database_url)
    host = target.host or str(target.query["host"])
    bouncer = await asyncio.to_thread(
        pgtools.start_bouncer, host, target.port or 5432, server_connections=2
    )
    try:
        await wait_until(lambda: pgtools.accepts(bouncer.port), timeout=10)
        url = bouncer.url(str(target.database))
        env = cli_env(
            INGEST_DATABASE_URL=url, INGEST_FEED_URL="ws://127.0.0.1:9", INGEST_TOKEN=TOKEN
        )
        done = await cli("run", str(uuid.uuid4()), env=env, timeout=60)
    finally:
        await asyncio.to_thread(bouncer.stop)
    assert done.code == 78, done.stderr
    assert "add ?prepared_statement_cache_size=0 to the database URL" in done.stderr
    assert "retrying" not in done.stderr


async def test_metrics_health_and_metrics_file_of_a_running_worker(
    start_simulator: StartSimulator, database_url: str, recording: Recording, tmp_path: Path
) -> None:
    seconds = (recording.times[-1] or 0) - (recording.times[0] or 0)
    sim = await start_simulator([recording], time_scale=seconds / 20, max_gap=0.1, drop_after=50)
    port = free_port()
    prom = tmp_path / "ingest.prom"
    env = cli_env(INGEST_DATABASE_URL=database_url, INGEST_FEED_URL=sim.url, INGEST_TOKEN=TOKEN)
    proc = await start_cli("run", str(recording.fixture_id), "--metrics-port", str(port),
                           "--metrics-file", str(prom), env=env)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            text = ""

            async def scraped_while_connected() -> bool:
                # the feed drops the connection every 50 packets: between a drop and the
                # reconnect the fixture is rightly not connected, so wait for a connected moment
                nonlocal text
                try:
                    async with http.get(f"{base}/metrics") as r:
                        text = await r.text()
                except aiohttp.ClientError:
                    return False
                stored = any(
                    line.startswith("ingest_packets_stored_total ") and float(line.split()[1]) > 60
                    for line in text.splitlines()
                )
                return stored and "ingest_connected_fixtures 1.0" in text

            await wait_until(scraped_while_connected)
            assert 'ingest_reconnects_total{reason="closed"}' in text  # drops every 50 packets
            assert "ingest_commit_seconds_bucket" in text and "ingest_batch_size_count" in text
            assert "ingest_connected_fixtures 1.0" in text
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200
            async with http.get(f"{base}/readyz") as r:
                assert r.status == 200 and (await r.json())["ready"] is True
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 0
        sql = await asyncpg.connect(plain(database_url))
        try:
            rows = await sql.fetchval("SELECT count(*) FROM actions")
        finally:
            await sql.close()
        written = {
            sample.name: sample.value
            for family in text_string_to_metric_families(prom.read_text())
            for sample in family.samples
            if not sample.labels
        }
        assert written["ingest_packets_stored_total"] == rows
    finally:
        if proc.returncode is None:
            proc.kill()


async def test_a_metrics_file_named_only_in_the_environment_is_written(
    start_simulator: StartSimulator, database_url: str, recording: Recording, tmp_path: Path
) -> None:
    """Metrics are made only when something reads them: INGEST_METRICS_FILE alone must count."""
    sim = await start_simulator([recording])
    prom = tmp_path / "env.prom"
    env = cli_env(INGEST_DATABASE_URL=database_url, INGEST_FEED_URL=sim.url, INGEST_TOKEN=TOKEN,
                  INGEST_METRICS_FILE=str(prom))  # fmt: skip
    fixture = str(recording.fixture_id)
    done = await cli("run", fixture, "--until-finished", "--speed", "fast", env=env)
    assert done.code == 0, done.stderr
    written = {
        sample.name: sample.value
        for family in text_string_to_metric_families(prom.read_text())
        for sample in family.samples
        if not sample.labels
    }
    assert written["ingest_packets_stored_total"] == len(recording.lines)


async def test_status_shows_each_fixture(
    start_simulator: StartSimulator, database_url: str, recording: Recording
) -> None:
    sim = await start_simulator([recording])
    env = cli_env(INGEST_DATABASE_URL=database_url, INGEST_FEED_URL=sim.url, INGEST_TOKEN=TOKEN)
    fixture = str(recording.fixture_id)
    assert (await cli("run", fixture, "--until-finished", "--speed", "fast", env=env)).code == 0
    assert (await cli("fixtures", "add", "00000000-0000-4000-8000-00000000abcd", env=env)).code == 0
    done = await cli("status", "--once", "--format", "json", env=env)
    assert done.code == 0
    entries = {e["fixture_id"]: e for e in json.loads(done.stdout)}
    assert entries[fixture]["state"] == "finished"
    assert entries[fixture]["seq"] == len(recording.lines)
    assert entries[fixture]["finished"] is True and entries[fixture]["reconnects"] == 0
    assert entries["00000000-0000-4000-8000-00000000abcd"]["state"] == "never run"
    assert entries[fixture]["home_player"] == "Ronnie" and entries[fixture]["summary_agrees"]
    text = await cli("status", "--once", "--width", "150", env=env)
    assert fixture[:8] in text.stdout and "2 fixtures" in text.stdout
    assert "Ronnie" in text.stdout and "Judd" in text.stdout and "agrees" in text.stdout
    # a fixture can be selected, by its id or the first characters the table shows
    for selected in (fixture, fixture[:8]):
        one = await cli("status", "--once", "--format", "json", selected, env=env)
        assert [e["fixture_id"] for e in json.loads(one.stdout)] == [fixture]
    unknown = await cli("status", "--once", "ffffffff", env=env)
    assert unknown.code == 66 and "no registered fixture match 'ffffffff'" in unknown.stderr
    # the start of an id works wherever a fixture is named, as in `status`
    report = await cli("report", fixture[:8], "--format", "json", env=env)
    assert report.code == 0 and json.loads(report.stdout)["match"]["fixture_id"] == fixture
    assert (await cli("verify", fixture[:8], env=env)).code == 0
    assert (await cli("export", fixture[:8], "--output", "-", env=env)).stdout.count("\n") == len(
        recording.lines
    )
    for command in (["report"], ["export", "--output", "-"], ["verify"], ["fixtures", "disable"]):
        missing = await cli(*command, "ffffffff", env=env)
        assert missing.code == 66, (command, missing.stderr)
        assert "no registered fixture match 'ffffffff'" in missing.stderr
    absent = await cli("report", "00000000-0000-4000-8000-00000000ffff", env=env)
    assert absent.code == 66 and "Traceback" not in absent.stderr
    assert (await cli("fixtures", "disable", fixture[:8], env=env)).code == 0
    assert (await cli("fixtures", "add", fixture[:8], env=env)).code == 2  # a new one: the id


async def test_status_shows_players_and_score_of_a_match_in_play(
    start_simulator: StartSimulator, database_url: str, recording: Recording
) -> None:
    seconds = (recording.times[-1] or 0) - (recording.times[0] or 0)
    sim = await start_simulator([recording], time_scale=seconds / 20, max_gap=0.1)
    env = cli_env(INGEST_DATABASE_URL=database_url, INGEST_FEED_URL=sim.url, INGEST_TOKEN=TOKEN)
    fixture = str(recording.fixture_id)
    proc = await start_cli("run", fixture, env=env)
    conn = await asyncpg.connect(plain(database_url))
    try:

        async def half_played() -> bool:
            stored = await conn.fetchval("SELECT count(*) FROM actions")
            return bool(stored >= len(recording.lines) // 2)

        await wait_until(half_played)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        # what the provider's own summary in the last stored packet says
        last = json.loads(await conn.fetchval(
            "SELECT payload::text FROM actions ORDER BY seq DESC LIMIT 1"
        ))  # fmt: skip
    finally:
        await conn.close()
        if proc.returncode is None:
            proc.kill()
    provider = last["fixtureSummary"]
    frame = max(provider["periods"], key=lambda p: p["periodNumber"])
    done = await cli("status", "--once", "--format", "json", fixture, env=env)
    [entry] = json.loads(done.stdout)
    assert entry["match_status"] == "in play" and not entry["finished"]
    assert (entry["home_player"], entry["away_player"]) == ("Ronnie", "Judd")
    assert (entry["home_frames"], entry["away_frames"]) == (
        provider["homeTeamScore"], provider["awayTeamScore"]
    )  # fmt: skip
    assert entry["current_frame"] == frame["periodNumber"]
    assert (entry["frame_home_points"], entry["frame_away_points"]) == (
        frame["homeTeamScore"], frame["awayTeamScore"]
    )  # fmt: skip
    assert entry["summary_agrees"] is True
    text = await cli("status", "--once", "--width", "100", env=env)
    score = f"Ronnie {provider['homeTeamScore']}-{provider['awayTeamScore']} Judd"
    points = f"{frame['periodNumber']}: {frame['homeTeamScore']}-{frame['awayTeamScore']}"
    assert score in text.stdout and points in text.stdout, text.stdout


async def test_the_systemd_notify_protocol(
    start_simulator: StartSimulator, database_url: str, recording: Recording
) -> None:
    seconds = (recording.times[-1] or 0) - (recording.times[0] or 0)
    sim = await start_simulator([recording], time_scale=seconds / 30, max_gap=0.1)
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.setblocking(False)
        received: list[str] = []
        loop = asyncio.get_running_loop()
        loop.add_reader(sock.fileno(), lambda: received.append(sock.recv(4096).decode()))
        env = cli_env(
            INGEST_DATABASE_URL=database_url,
            INGEST_FEED_URL=sim.url,
            INGEST_TOKEN=TOKEN,
            NOTIFY_SOCKET=path,
            WATCHDOG_USEC="200000",
        )
        proc = await start_cli("run", str(recording.fixture_id), env=env)
        try:

            async def ready_and_fed() -> bool:
                return (
                    any("READY=1" in m for m in received)
                    and sum("WATCHDOG=1" in m for m in received) >= 3
                )

            await wait_until(ready_and_fed)
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.communicate(), 10)
            assert proc.returncode == 0

            async def stopping() -> bool:
                return any("STOPPING=1" in m for m in received)

            await wait_until(stopping, timeout=5)
        finally:
            loop.remove_reader(sock.fileno())
            sock.close()
            if proc.returncode is None:
                proc.kill()
    ready = next(m for m in received if "READY=1" in m)
    assert "STATUS=streaming 1 fixture(s)" in ready
    assert received.index(ready) < next(i for i, m in enumerate(received) if "WATCHDOG=1" in m)
