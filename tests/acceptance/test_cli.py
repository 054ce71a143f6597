"""The real ``ingest`` command in a subprocess, against a simulator and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from ingest.simulator.recording import Recording
from tests.conftest import TOKEN, StartFeed, plain, wait_until

SECRET_TOKEN = "tok-" + "7f3a9c" * 4


@dataclass
class Done:
    code: int
    stdout: str
    stderr: str


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INGEST_", "DATABASE_URL"))}
    env.update(extra)
    return env


async def start_cli(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ingest", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def cli(*args: str, env: dict[str, str], timeout: float = 60) -> Done:
    """Run the CLI to its exit; one still running after ``timeout`` is killed (a test that
    fails that way leaves no worker behind) and the test fails with what it printed."""
    proc = await start_cli(*args, env=env)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(
            f"ingest {' '.join(args)} still running after {timeout:g} s: {err.decode()[-2000:]}"
        ) from None
    assert proc.returncode is not None
    return Done(proc.returncode, out.decode(), err.decode())


async def test_migrate_then_run_until_finished(
    start_feed: StartFeed, empty_database_url: str, recording: Recording
) -> None:
    feed = await start_feed([recording])
    env = cli_env(INGEST_DATABASE_URL=empty_database_url, INGEST_FEED_URL=feed, INGEST_TOKEN=TOKEN)
    refused = await cli("run", str(recording.fixture_id), "--until-finished", env=env)
    assert refused.code == 78 and "ingest migrate" in refused.stderr

    assert (await cli("migrate", env=env)).code == 0
    done = await cli(
        "run", str(recording.fixture_id), "--until-finished", "--speed", "fast", env=env
    )
    assert done.code == 0, done.stderr
    assert "finished at seq" in done.stderr
    conn = await asyncpg.connect(plain(empty_database_url))
    try:
        assert await conn.fetchval("SELECT count(*) FROM actions") == len(recording.lines)
    finally:
        await conn.close()

    again = await cli("run", str(recording.fixture_id), "--until-finished", env=env)
    assert again.code == 0 and "already finished" in again.stderr

    listed = await cli("fixtures", "list", env=env)
    assert str(recording.fixture_id) in listed.stdout
    report = await cli("report", str(recording.fixture_id), env=env)
    assert report.code == 0 and "Ronnie" in report.stdout
    verify = await cli("verify", env=env)
    assert verify.code == 0 and "1 fixture(s) checked, 0 with problems" in verify.stdout


@pytest.mark.parametrize("how", ["INGEST_ASYNC_COMMIT", "--async-commit", "default"])
async def test_async_commit_from_the_command_line_or_the_environment(
    start_feed: StartFeed, database_url: str, recording: Recording, how: str
) -> None:
    from tests.integration.test_async_commit import commit_modes, record_commit_modes

    await record_commit_modes(database_url)
    feed = await start_feed([recording])
    env = cli_env(INGEST_DATABASE_URL=database_url, INGEST_FEED_URL=feed, INGEST_TOKEN=TOKEN)
    flags = ["--async-commit"] if how == "--async-commit" else []
    if how == "INGEST_ASYNC_COMMIT":
        env[how] = "1"
    args = ("run", str(recording.fixture_id), "--until-finished", "--speed", "fast", *flags)
    done = await cli(*args, env=env)
    assert done.code == 0, done.stderr
    modes = await commit_modes(database_url)
    assert sum(packets for _, packets in modes) == len(recording.lines)
    assert {mode for mode, _ in modes} == {"on" if how == "default" else "off"}


async def test_batch_wait_from_the_environment_stores_everything_and_a_bad_one_is_refused(
    start_feed: StartFeed, database_url: str, recording: Recording
) -> None:
    feed = await start_feed([recording])
    env = cli_env(INGEST_DATABASE_URL=database_url, INGEST_FEED_URL=feed, INGEST_TOKEN=TOKEN)
    args = ("run", str(recording.fixture_id), "--until-finished", "--speed", "fast")
    done = await cli(*args, env={**env, "INGEST_BATCH_WAIT": "0.05"})
    assert done.code == 0, done.stderr
    conn = await asyncpg.connect(plain(database_url))
    try:
        assert await conn.fetchval("SELECT count(*) FROM actions") == len(recording.lines)
    finally:
        await conn.close()
    refused = await cli(*args, "--batch-wait", "5", env=env)
    assert refused.code == 2
    assert "--batch-wait" in refused.stderr and "0<=x<=1" in refused.stderr


# what `ingest run` has no use for: imported only by the commands that need them
NOT_FOR_RUN = ("rich", "ingest.simulator", "ingest.report", "ingest.status", "ingest.export",
               "ingest.feed.discovery", "aiohttp.web")  # fmt: skip


async def test_run_imports_only_what_it_uses(
    start_feed: StartFeed, database_url: str, recording: Recording
) -> None:
    feed = await start_feed([recording])
    env = cli_env(
        INGEST_DATABASE_URL=database_url,
        INGEST_FEED_URL=feed,
        INGEST_TOKEN=TOKEN,
        PYTHONPROFILEIMPORTTIME="1",  # every module imported, on stderr
    )
    done = await cli(
        "run", str(recording.fixture_id), "--until-finished", "--speed", "fast", env=env
    )
    assert done.code == 0, done.stderr
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "ingest.worker.supervisor" in imported
    assert not {m for m in imported if m.startswith(NOT_FOR_RUN)}


async def test_a_refused_token_exits_77_and_never_shows_the_token(
    start_feed: StartFeed, database_url: str, recording: Recording
) -> None:
    feed = await start_feed([recording])
    env = cli_env(INGEST_DATABASE_URL=database_url, INGEST_FEED_URL=feed, INGEST_TOKEN=SECRET_TOKEN)
    started = time.monotonic()
    done = await cli("run", str(recording.fixture_id), "--log-level", "DEBUG", env=env)
    assert done.code == 77
    assert time.monotonic() - started < 20
    assert "refused the access token" in done.stderr
    assert SECRET_TOKEN not in done.stdout + done.stderr


async def test_no_token_or_a_bad_url_is_a_configuration_error(database_url: str) -> None:
    fixture = "6513270e-269e-4d37-b2a7-4de452e6b438"
    no_token = await cli("run", fixture, env=cli_env(INGEST_DATABASE_URL=database_url))
    assert no_token.code == 78 and "INGEST_TOKEN" in no_token.stderr
    bad_url = await cli("migrate", env=cli_env(INGEST_DATABASE_URL="mysql://x/y"))
    assert bad_url.code == 78
    usage = await cli("run", env=cli_env(INGEST_DATABASE_URL=database_url, INGEST_TOKEN="t"))
    assert usage.code == 2
    not_a_uuid = await cli("run", "nope", env=cli_env(INGEST_TOKEN="t"))
    assert not_a_uuid.code == 2


async def test_sigterm_mid_stream_stores_what_was_received_and_exits_0(
    start_feed: StartFeed, database_url: str, recording: Recording
) -> None:
    # paced replay (at most 0.1 s between packets): the stop lands mid-stream
    seconds = (recording.times[-1] or 0) - (recording.times[0] or 0)
    feed = await start_feed([recording], time_scale=seconds / 20, max_gap=0.1)
    env = cli_env(INGEST_DATABASE_URL=database_url, INGEST_FEED_URL=feed, INGEST_TOKEN=TOKEN)
    proc = await start_cli("run", str(recording.fixture_id), env=env)
    conn = await asyncpg.connect(plain(database_url))
    try:

        async def some_rows() -> bool:
            return bool(await conn.fetchval("SELECT count(*) >= 5 FROM actions"))

        await wait_until(some_rows)
        proc.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        _, err = await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 0, err.decode()
        assert time.monotonic() - stopped < 5
        seqs = [r[0] for r in await conn.fetch("SELECT seq FROM actions ORDER BY seq")]
        assert seqs == list(range(1, len(seqs) + 1))  # a prefix: nothing lost in between
        assert len(seqs) < len(recording.lines)
        assert "SIGTERM received" in err.decode()
    finally:
        await conn.close()
        if proc.returncode is None:
            proc.kill()


class HangingProxy:
    """A TCP proxy to the database that, once :meth:`hang` is called, forwards nothing more in
    either direction and closes nothing: a server (or a network) that has stopped answering."""

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url)
        host = str(url.query.get("host") or url.host)
        self._port = url.port or 5432
        self._unix = f"{host}/.s.PGSQL.{self._port}" if host.startswith("/") else None
        self._host = host
        self._database = url.database
        self._hung = asyncio.Event()
        self.held = asyncio.Event()  # something was sent to the database since it hung
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    async def __aenter__(self) -> HangingProxy:
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"postgresql://postgres@127.0.0.1:{port}/{self._database}"
        return self

    async def __aexit__(self, *_: object) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()

    def hang(self) -> None:
        self._hung.set()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._unix is not None:
            up_reader, up_writer = await asyncio.open_unix_connection(self._unix)
        else:
            up_reader, up_writer = await asyncio.open_connection(self._host, self._port)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(65536):
            if self._hung.is_set():
                self.held.set()
                await asyncio.Event().wait()  # held for ever: no answer, no close
            sink.write(data)
            await sink.drain()
        sink.close()


async def test_sigterm_exits_within_5_s_when_the_database_has_stopped_answering(
    start_feed: StartFeed, database_url: str, recording: Recording
) -> None:
    """README: SIGTERM exits 0 within 5 s. The stop's steps that need the database (the flush,
    the states, the summary, the betting status, the leases, closing the pool) share that, and
    a server that hangs must not make each of them wait out its own limit in turn."""
    seconds = (recording.times[-1] or 0) - (recording.times[0] or 0)
    feed = await start_feed([recording], time_scale=seconds / 20, max_gap=0.1)
    async with HangingProxy(database_url) as proxy:
        env = cli_env(INGEST_DATABASE_URL=proxy.url, INGEST_FEED_URL=feed, INGEST_TOKEN=TOKEN)
        proc = await start_cli("run", str(recording.fixture_id), env=env)
        conn = await asyncpg.connect(plain(database_url))
        try:

            async def some_rows() -> bool:
                return bool(await conn.fetchval("SELECT count(*) >= 5 FROM actions"))

            await wait_until(some_rows)
            proxy.hang()
            # packets keep coming (one every 0.1 s at most): a write is stuck, to be flushed
            await asyncio.wait_for(proxy.held.wait(), 10)
            proc.send_signal(signal.SIGTERM)
            stopped = time.monotonic()
            _, err = await asyncio.wait_for(proc.communicate(), 15)
            took = time.monotonic() - stopped
        finally:
            await conn.close()
            if proc.returncode is None:
                proc.kill()
    assert proc.returncode == 0, err.decode()
    assert "SIGTERM received" in err.decode()
    assert took < 5, f"the stop took {took:.1f} s: {err.decode()[-3000:]}"
    print(f"\nSIGTERM with the database hung: exit after {took:.2f} s")  # pytest -s shows it


@pytest.mark.slow
async def test_demo_runs_on_a_fresh_embedded_database(tmp_path: Path) -> None:
    env = cli_env(INGEST_DATA_DIR=str(tmp_path / "data"))
    done = await cli("demo", env=env, timeout=120)
    assert done.code == 0, done.stderr
    assert "Stored 362 packets" in done.stdout and "Winner: Jack Carter" in done.stdout
    again = await cli("demo", env=env, timeout=120)
    assert again.code == 0 and "already finished" in again.stderr


async def test_multi_host_urls_work_or_fail_in_one_line() -> None:
    hosts = "postgresql://postgres:s3cr3tpw@127.0.0.1:1,127.0.0.1:2/postgres"
    down = await cli(
        "check",
        env=cli_env(INGEST_DATABASE_URL=f"{hosts}?target_session_attrs=read-write"),
    )
    assert down.code == 1 and "Traceback" not in down.stderr + down.stdout
    assert "s3cr3tpw" not in down.stderr + down.stdout
    for query, said in [("target_session_attrs=writable", "target_session_attrs"),
                        ("keepalives=1", "keepalives")]:  # fmt: skip
        bad = await cli("migrate", env=cli_env(INGEST_DATABASE_URL=f"{hosts}?{query}"))
        assert bad.code == 78 and said in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1 and "s3cr3tpw" not in bad.stderr
