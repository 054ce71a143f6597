"""What each CLI command does, as plain async functions (the CLI only parses and calls).

Each takes what it needs (settings, a database URL, a stop event) and returns an exit code or
raises an :class:`ingest.errors.IngestError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import secrets
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import aiohttp

from ingest.db.store import Store
from ingest.errors import EX_OK, ConfigError, IngestError, UnknownFixture
from ingest.feed.client import FeedSource, feed_session
from ingest.ops.systemd import Notifier
from ingest.settings import (
    COMMAND_TIMEOUT,
    CONNECT_TIMEOUT,
    DEFAULT_FEED_URL,
    LEGACY_FEED_HOST,
    POOL_SIZE,
    Monitoring,
    RunOptions,
    Secret,
    Settings,
    SettleOptions,
)
from ingest.worker.ports import FixtureRow
from ingest.worker.progress import RunResult
from ingest.worker.retry import with_database_retries
from ingest.worker.supervisor import Worker

if TYPE_CHECKING:
    from ingest.ops.metrics import Metrics, SettlerMetrics
    from ingest.ops.monitor import Monitor
    from ingest.simulator.recording import Recording
    from ingest.simulator.server import SimulatorOptions

# What only other commands need (rich, the simulator, reports, export, discovery) is imported in
# the function that needs it: `ingest run` is a long-lived process, and every module loaded is
# memory it keeps (about 7 MB for these) and start-up time before its first connection.

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def open_store(
    database_url: str,
    *,
    pool_size: int = POOL_SIZE,
    command_timeout: float | None = COMMAND_TIMEOUT,
    async_commit: bool = False,
) -> AsyncIterator[Store]:
    store = Store.connect(
        database_url,
        pool_size=pool_size,
        command_timeout=command_timeout,
        async_commit=async_commit,
    )
    try:
        yield store
    finally:
        await store.close()


async def migrate(database_url: str, *, revision: str = "head", downgrade: bool = False) -> int:
    async with open_store(database_url, command_timeout=None) as store:
        before = await store.schema_revision()
        await store.migrate(revision, downgrade=downgrade)
        after = await store.schema_revision()
    if before == after:
        log.info("schema already at %s", after)
    else:
        log.info("schema migrated from %s to %s", before or "empty", after or "empty")
    return EX_OK


async def run(
    settings: Settings,
    database_url: str,
    refs: Sequence[FixtureRef],
    options: RunOptions,
    stop: asyncio.Event,
    *,
    run_all: bool = False,
    token: Secret | None = None,
    monitoring: Monitoring | None = None,
    notifier: Notifier | None = None,
) -> RunResult:
    token = token or settings.require_token()
    options.check()
    if settings.legacy_feed:
        log.warning(
            "INGEST_FEED_URL names %s, which was announced as decommissioned on 2026-09-30; "
            "the current host is %s",
            LEGACY_FEED_HOST,
            DEFAULT_FEED_URL,
        )
    ops = monitoring or Monitoring()
    notifier = notifier or Notifier({})
    metrics = _worker_metrics(ops)
    async with open_store(
        database_url, pool_size=options.pool_size, async_commit=options.async_commit
    ) as store:
        if not await _wait_for_database(store, options, stop):
            return RunResult(stopped=True)
        # keyed as the ids read from the database are (the registry's, the leases'): cheaper
        fixture_ids = store.fixture_keys(await resolve_fixtures(store, refs))
        log.info(
            "streaming %s from %s into %s",
            f"{len(fixture_ids)} fixture(s)" + (" and the registry" if run_all else "")
            if fixture_ids
            else "the registry's fixtures",
            settings.feed_url,
            settings.database_url_display,
        )
        async with feed_session() as session:
            source = FeedSource(
                session, settings.feed_url, token, liveness_timeout=options.liveness_timeout
            )
            worker = Worker(
                source,
                store,
                options,
                metrics,
                leases=store if run_all else None,
                reconciler=store,
                betting=store,
            )

            monitor = None
            if metrics is not None:
                monitor = await _start_monitor(metrics, store, worker.readiness, ops)
            helpers = [
                asyncio.create_task(_stop_on(stop, worker, notifier)),
                asyncio.create_task(_report_status(worker, notifier, ops, metrics)),
            ]
            if notifier.watchdog_interval:
                helpers.append(asyncio.create_task(_watchdog(worker, notifier)))
            if options.discover_every:
                helpers.append(
                    asyncio.create_task(
                        _discover_forever(session, settings, token, store, options.discover_every)
                    )
                )
            notifier.ready(
                f"streaming {len(fixture_ids)} fixture(s)" + (" + registry" if run_all else "")
            )
            try:
                return await worker.run(fixture_ids, follow_registry=run_all)
            finally:
                for helper in helpers:
                    helper.cancel()
                await asyncio.gather(*helpers, return_exceptions=True)
                if monitor is not None:
                    await monitor.stop()
                if metrics is not None and ops.metrics_file:
                    _write_metrics(metrics, ops.metrics_file)


def _worker_metrics(ops: Monitoring) -> Metrics | None:
    """The worker's metrics, made only when something reads them: ``--metrics-port`` or
    ``--metrics-file``. Without either nobody can, and keeping them costs every packet a few
    locked counter updates and the process prometheus_client (1.5 MB)."""
    if ops.metrics_port is None and not ops.metrics_file:
        return None
    from ingest.ops.metrics import Metrics

    return Metrics()


async def _start_monitor(
    metrics: Metrics | SettlerMetrics,
    store: Store,
    readiness: Callable[[], tuple[bool, str]],
    ops: Monitoring,
) -> Monitor:
    """``/metrics``, ``/healthz`` and ``/readyz`` (database reachable, then ``readiness``) on
    ``--metrics-port``; not listening without one (``--metrics-file`` still reads it)."""
    from ingest.ops.monitor import Monitor

    async def ready() -> tuple[bool, str]:
        try:
            async with asyncio.timeout(2):
                await store.ping()
        except (IngestError, TimeoutError) as exc:
            return False, f"database unreachable: {exc}"
        return readiness()

    monitor = Monitor(metrics, ready)
    if ops.metrics_port is not None:
        await monitor.start(ops.metrics_host, ops.metrics_port)
        log.info("metrics and health on port %d", monitor.port)
    return monitor


async def _wait_for_database(store: Store, options: RunOptions, stop: asyncio.Event) -> bool:
    """Check the schema, waiting out a database that is not there yet (a host that boots the
    worker before PostgreSQL, a timer run during a restart) with the patience of a running
    worker: ``db_give_up_after``, then exit 75. False when a stop comes first."""
    check = asyncio.ensure_future(
        with_database_retries(store.check_schema, options, what="starting")
    )
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({check, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not check.done():
            check.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await check
    if check.cancelled():
        log.info("stopped while waiting for the database")
        return False
    check.result()
    return True


def _write_metrics(metrics: Metrics, path: Path) -> None:
    try:
        metrics.write_textfile(Path(path))
    except OSError as exc:
        log.warning("could not write the metrics file %s: %s", path, exc)


def _status_line(worker: Worker) -> str:
    states: dict[str, int] = {}
    for stats in worker.stats.values():
        states[stats.state] = states.get(stats.state, 0) + 1
    stored = sum(s.stored for s in worker.stats.values())
    parts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    return f"{len(worker.stats)} fixtures ({parts}); {stored} packets stored"


async def _report_status(
    worker: Worker, notifier: Notifier, ops: Monitoring, metrics: Metrics | None
) -> None:
    while True:
        await asyncio.sleep(ops.status_interval)
        notifier.status(_status_line(worker))
        if metrics is not None and ops.metrics_file:
            _write_metrics(metrics, ops.metrics_file)


async def _watchdog(worker: Worker, notifier: Notifier) -> None:
    """WATCHDOG=1 only while healthy: systemd restarts a worker that stops sending it."""
    assert notifier.watchdog_interval
    while True:
        ok, detail = worker.health()
        if ok:
            notifier.watchdog()
        else:
            log.warning("unhealthy, not feeding the systemd watchdog: %s", detail)
        await asyncio.sleep(notifier.watchdog_interval)


async def _discover_forever(
    session: aiohttp.ClientSession,
    settings: Settings,
    token: Secret,
    store: Store,
    every: float,
) -> None:
    """Register today's and later fixtures now and then; the registry poll picks them up."""
    while True:
        try:
            from ingest.feed.discovery import list_fixtures

            today = datetime.now(UTC).date().isoformat()
            found = await list_fixtures(session, settings.api_url, token, date_from=today)
            added = await store.register(found)
            if added:
                log.info("discovery: %d new fixture(s) registered", added)
        except IngestError as exc:
            log.warning("discovery failed, trying again in %.0f s: %s", every, exc)
        await asyncio.sleep(every)


async def discover(
    settings: Settings,
    database_url: str,
    *,
    live: bool,
    date_from: str | None,
    date_to: str | None,
    out: TextIO = sys.stdout,
) -> int:
    """``ingest fixtures discover``: register the fixtures the provider lists."""
    from ingest.feed.discovery import list_fixtures

    token = settings.require_token()
    async with open_store(database_url) as store:
        await store.check_schema()
        async with feed_session() as session:
            found = await list_fixtures(
                session, settings.api_url, token, live=live, date_from=date_from, date_to=date_to
            )
        added = await store.register(found)
    out.write(f"{len(found)} fixture(s) listed, {added} new registered\n")
    return EX_OK


async def _stop_on(event: asyncio.Event, worker: Worker, notifier: Notifier) -> None:
    await event.wait()
    notifier.stopping()
    worker.stop()


async def status(
    database_url: str,
    stop: asyncio.Event,
    out: TextIO = sys.stdout,
    *,
    once: bool = False,
    as_json: bool = False,
    interval: float = 2.0,
    select: Sequence[FixtureRef] = (),
    width: int | None = None,
) -> int:
    """A live table of the registered fixtures (``--once`` for a single look); ``select``: only
    these fixtures (full ids, or the first characters of one as the table shows them)."""
    from ingest import status as fixture_status

    async with open_store(database_url) as store:
        await store.check_schema()
        chosen = await resolve_fixtures(store, select) if select else None
        watcher = asyncio.create_task(
            fixture_status.watch(
                lambda: store.fixtures(chosen),
                out,
                once=once,
                as_json=as_json,
                interval=interval,
                disagreements=store.fixtures_in_disagreement,
                scores=store.scoreboards,
                width=width,
                betting=store.betting,
            )
        )
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({watcher, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in (watcher, stopper):
            task.cancel()
        await asyncio.gather(watcher, stopper, return_exceptions=True)
        if watcher.done() and not watcher.cancelled() and watcher.exception():
            raise watcher.exception()  # type: ignore[misc]
    return EX_OK


FixtureRef = uuid.UUID | str  # a fixture id, or the start of one (as `ingest status` shows it)


async def resolve_fixtures(store: Store, wanted: Sequence[FixtureRef]) -> list[uuid.UUID]:
    """Fixture ids from full ids and from the starts of registered ones (``7b89296c``): a start
    that matches no registered fixture, or several, is :class:`UnknownFixture`."""
    if all(isinstance(w, uuid.UUID) for w in wanted):
        return list(dict.fromkeys(w for w in wanted if isinstance(w, uuid.UUID)))
    known = [r.fixture_id for r in await store.fixtures()]
    chosen: list[uuid.UUID] = []
    for ref in wanted:
        if isinstance(ref, uuid.UUID):
            chosen.append(ref)
            continue
        key = ref.strip().lower()
        found = [f for f in known if str(f).startswith(key) or f.hex.startswith(key)]
        if len(found) != 1 or not key:
            what = "no registered fixture" if not found else f"{len(found)} fixtures"
            raise UnknownFixture(f"{what} match {ref!r}: give more of the fixture id")
        chosen.append(found[0])
    return list(dict.fromkeys(chosen))


async def check(database_url: str, out: TextIO = sys.stdout) -> int:
    """For health checks: the database is reachable and the schema is at head (0), or not (1)."""
    try:
        async with open_store(database_url) as store:
            # each host of the URL may take its connect_timeout before the next is tried
            target = store.database.target
            connecting = len(target.attempts) * (target.connect_timeout or CONNECT_TIMEOUT)
            async with asyncio.timeout(5 + connecting):
                await store.ping()
                await store.check_schema()
    except (IngestError, TimeoutError) as exc:
        out.write(f"not ok: {exc or 'timed out'}\n")
        return 1
    out.write("ok\n")
    return EX_OK


async def fixtures_add(database_url: str, ids: Sequence[uuid.UUID]) -> int:
    async with open_store(database_url) as store:
        await store.check_schema()
        added = await store.register(ids, enable=True)
    log.info("%d fixture(s) registered or re-enabled", added)
    return EX_OK


async def fixtures_disable(database_url: str, ref: FixtureRef) -> int:
    async with open_store(database_url) as store:
        await store.check_schema()
        [fixture_id] = await resolve_fixtures(store, [ref])
        if not await store.set_enabled(fixture_id, False):
            raise UnknownFixture(f"fixture {fixture_id} is not in the registry")
    log.info("fixture %s disabled", fixture_id)
    return EX_OK


async def fixtures_list(
    database_url: str, out: TextIO = sys.stdout, *, as_json: bool = False
) -> int:
    from rich.console import Console
    from rich.table import Table

    async with open_store(database_url) as store:
        await store.check_schema()
        rows = await store.fixtures()
    if as_json:
        out.write(json.dumps([_fixture_json(r) for r in rows], indent=2) + "\n")
        return EX_OK
    table = Table(box=None, pad_edge=False)
    for column in ("fixture", "enabled", "finished", "last_seq", "packets", "last packet",
                   "state", "owner", "lease expires"):  # fmt: skip
        table.add_column(column, justify="right" if column in ("last_seq", "packets") else "left")
    for r in rows:
        table.add_row(
            str(r.fixture_id),
            "yes" if r.enabled else "no",
            "yes" if r.finished else "no",
            str(r.last_seq),
            str(r.packets),
            r.last_packet_at.isoformat(timespec="seconds") if r.last_packet_at else "-",
            r.state or "-",
            r.owner or "-",
            r.lease_expires_at.isoformat(timespec="seconds") if r.lease_expires_at else "-",
        )
    Console(file=out, width=200, highlight=False).print(table)
    return EX_OK


def _fixture_json(row: FixtureRow) -> dict[str, object]:
    """One fixture of ``fixtures list --format json``: what the table shows, never shortened."""

    def when(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "fixture_id": str(row.fixture_id),
        "enabled": row.enabled,
        "finished": row.finished,
        "last_seq": row.last_seq,
        "packets": row.packets,
        "last_packet_at": when(row.last_packet_at),
        "state": row.state,
        "state_changed_at": when(row.state_changed_at),
        "connects": row.connects,
        "last_error": row.last_error,
        "owner": row.owner,
        "lease_expires_at": when(row.lease_expires_at),
    }


async def verify(database_url: str, ref: FixtureRef | None, out: TextIO = sys.stdout) -> int:
    """Report gaps, conflicts and rejected frames; exit 1 if there are any."""
    async with open_store(database_url) as store:
        await store.check_schema()
        fixture_id = None if ref is None else (await resolve_fixtures(store, [ref]))[0]
        rows = await store.integrity(fixture_id)
        disagreements = await store.fixtures_in_disagreement(
            [fixture_id] if fixture_id is not None else None
        )
    if fixture_id is not None and not rows:
        raise UnknownFixture(f"fixture {fixture_id} is not in the database")
    problems = 0
    details: list[str] = []
    for row in rows:
        issues = []
        mismatches = disagreements.get(row["fixture_id"], [])
        if mismatches:
            issues.append(
                f"{len(mismatches)} field(s) disagree with the provider's summary "
                f"at seq {mismatches[0]['seq']}"
            )
            details.extend(
                f"  {row['fixture_id']}  {m['field']}: ours {_shown(m['ours'])}, "
                f"provider {_shown(m['provider'])}\n"
                for m in mismatches
            )
        if row["gaps"]:
            issues.append(f"gaps at seq {', '.join(row['gaps'])}")
        if row["conflicts"]:
            issues.append(f"{row['conflicts']} conflict(s)")
        if row["rejected"] or row["rejected_unstored"]:
            unstored = row["rejected_unstored"]
            more = f" (and {unstored} more over the rate, counted only)" if unstored else ""
            issues.append(f"{row['rejected']} rejected message(s){more}")
        problems += bool(issues)
        verdict = "; ".join(issues) if issues else "ok"
        out.write(f"{row['fixture_id']}  {row['packets']:>6} packets  {verdict}\n")
    if details:
        out.write("disagreements with the provider's fixtureSummary (README: Reconciliation):\n")
        out.writelines(details)
    out.write(f"{len(rows)} fixture(s) checked, {problems} with problems\n")
    return 1 if problems else EX_OK


def _shown(value: str | None) -> str:
    """A summary_mismatches value for a person: NULL means that side has no such value."""
    return "none" if value is None else value


async def report(
    database_url: str,
    ref: FixtureRef,
    out: TextIO = sys.stdout,
    *,
    as_json: bool = False,
    plot_to: str | None = None,
) -> int:
    """Scoreline, frames, breaks of 50+ and player statistics of one match."""
    from ingest import report as match_report

    async with open_store(database_url) as store:
        await store.check_schema()
        [fixture_id] = await resolve_fixtures(store, [ref])
        data = await store.match_report(fixture_id)
    if data is None:
        raise UnknownFixture(f"nothing is known about fixture {fixture_id}")
    if as_json:
        out.write(match_report.to_json(data))
    else:
        match_report.render(data, out)
    if plot_to:
        match_report.plot(data, Path(plot_to))
        log.info("plot written to %s", plot_to)
    return EX_OK


def generate_feed(
    *,
    seed: int,
    best_of: int,
    reds: int,
    players: tuple[str, ...] | None,
    fixture_id: uuid.UUID | None,
    corrections: bool,
    suspensions: bool,
    output: str | None,
    truth: str | None,
) -> int:
    from ingest.simulator.generator import MatchSpec, generate_match, to_jsonl

    if best_of < 1 or best_of % 2 == 0:
        raise ConfigError(f"--best-of must be odd and positive, got {best_of}")
    spec = MatchSpec(
        seed=seed,
        best_of=best_of,
        reds=reds,
        fixture_id=fixture_id,
        corrections=corrections,
        suspensions=suspensions,
    )
    if players:
        spec = dataclasses.replace(spec, players=(players[0], players[1]))
    match = generate_match(spec)
    _write_text(output, to_jsonl(match.packets))
    if truth:
        _write_text(truth, json.dumps(match.truth, indent=2) + "\n")
    log.info(
        "generated fixture %s: %d packets, %s %d-%d",
        match.fixture_id,
        len(match.packets),
        match.truth["winner"],
        match.truth["home_frames"],
        match.truth["away_frames"],
    )
    return EX_OK


def _write_text(path: str | None, text: str) -> None:
    if path is None or path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


async def export(database_url: str, refs: Sequence[FixtureRef], output: str) -> int:
    """``ingest export``: stored matches as JSON-lines recordings, one packet per line."""
    from ingest.export import stored_recordings, write_recordings

    async with open_store(database_url) as store:
        await store.check_schema()
        recordings = await stored_recordings(store, await resolve_fixtures(store, refs))
    written = write_recordings(recordings, output)
    for recording, where in zip(recordings, written, strict=True):
        log.info(
            "fixture %s: %d packets (%s) written to %s",
            recording.fixture_id,
            len(recording.lines),
            "finished" if recording.finished else "not finished",
            "standard output" if where == "-" else where,
        )
    return EX_OK


async def serve_feed(
    recordings: Sequence[Recording],
    options: SimulatorOptions,
    host: str,
    port: int,
    stop: asyncio.Event,
    *,
    from_database: tuple[str, Sequence[uuid.UUID]] | None = None,
) -> int:
    """The simulator; ``from_database`` = (URL, fixture ids) also serves stored matches (every
    finished one when no id is given)."""
    from ingest.export import stored_recordings
    from ingest.simulator.server import Simulator

    if from_database is not None:
        database_url, fixture_ids = from_database
        async with open_store(database_url) as store:
            await store.check_schema()
            recordings = [*recordings, *await stored_recordings(store, fixture_ids)]
    simulator = Simulator(recordings, options)
    base = await simulator.start(host, port)
    log.info("feed simulator listening on %s for %d fixture(s)", base, len(recordings))
    for recording in recordings:
        log.info(
            "  %s/snooker/fixtures/%s/actions  (%d packets)",
            base,
            recording.fixture_id,
            len(recording.lines),
        )
    try:
        await stop.wait()
    finally:
        await simulator.stop()
    return EX_OK


async def demo(settings: Settings, database_url: str, stop: asyncio.Event, out: TextIO) -> int:
    """Simulator + database + worker + summary, in one process."""
    from ingest import report as match_report
    from ingest.simulator.recording import Recording
    from ingest.simulator.server import Simulator, SimulatorOptions

    recording = Recording.demo()
    token = secrets.token_urlsafe(24)
    await migrate(database_url)
    simulator = Simulator([recording], SimulatorOptions(token=token, heartbeat_interval=1.0))
    feed = await simulator.start("127.0.0.1", 0)
    try:
        demo_settings = Settings(
            feed_url=feed,
            database_url=settings.database_url,
            token=Secret(token),
            data_dir=settings.data_dir,
        )
        options = RunOptions(until_finished=True, speed="fast", worker_id="demo")
        result = await run(demo_settings, database_url, [recording.fixture_id], options, stop)
    finally:
        await simulator.stop()
    async with open_store(database_url) as store:
        data = await store.match_report(recording.fixture_id)
        [row] = await store.fixtures([recording.fixture_id])
    stats = result.fixtures.get(recording.fixture_id)
    out.write("\n")
    if data is not None:
        match_report.render(data, out)
    out.write(
        f"\nStored {row.packets} packets for fixture {recording.fixture_id}"
        + (
            f" (this run: {stats.received} received, {stats.stored} new, "
            f"{stats.duplicates} duplicates absorbed)"
            if stats is not None
            else ""
        )
        + f"\nin {settings.database_url_display}.\n"
        f"Try: ingest report {recording.fixture_id} --plot match.png\n"
    )
    return EX_OK


async def settle(
    database_url: str,
    refs: Sequence[FixtureRef],
    stop: asyncio.Event,
    options: SettleOptions | None = None,
    *,
    settle_all: bool = False,
    monitoring: Monitoring | None = None,
    notifier: Notifier | None = None,
) -> int:
    """``ingest settle``: write settlement events as the stored packets decide markets."""
    from ingest.db.settlement import SettlementStore
    from ingest.ops.metrics import SettlerMetrics
    from ingest.settlement.settler import Settler

    options = options or SettleOptions()
    ops = monitoring or Monitoring()
    notifier = notifier or Notifier({})
    metrics = SettlerMetrics()
    async with open_store(database_url, pool_size=options.pool_size) as store:
        if not await _wait_for_database(store, options.retry, stop):  # as patient as `run`
            return EX_OK
        fixture_ids = await resolve_fixtures(store, refs)
        settler = Settler(SettlementStore(store), options, metrics)

        monitor = await _start_monitor(metrics, store, settler.health, ops)

        async def stop_on_signal() -> None:
            await stop.wait()
            notifier.stopping()
            settler.stop()

        async def report_status() -> None:
            while True:
                await asyncio.sleep(ops.status_interval)
                notifier.status(f"settling; {settler.events_written} event(s) written")
                if ops.metrics_file:
                    _write_settler_metrics(metrics, ops.metrics_file)

        helpers = [asyncio.create_task(stop_on_signal()), asyncio.create_task(report_status())]
        notifier.ready("settling")
        try:
            return await settler.run(fixture_ids, follow_all=settle_all)
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await monitor.stop()
            if ops.metrics_file:
                _write_settler_metrics(metrics, ops.metrics_file)
            log.info("settlement stopped: %d event(s) written", settler.events_written)


def _write_settler_metrics(metrics: SettlerMetrics, path: Path) -> None:
    try:
        metrics.write_textfile(Path(path))
    except OSError as exc:
        log.warning("could not write the metrics file %s: %s", path, exc)
