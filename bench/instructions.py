"""``python -m bench.instructions [--fixtures N] [--warmup S] [--measure S]``: the footprint's
load counted in instructions instead of CPU time.

On this shared 2-core machine the footprint scenario's CPU-seconds of the same client move by
10-40% from one run to the next; the instructions a process executes do not depend on what else
the machine does. Each client (ours, then the ``script`` reference) runs alone under
``valgrind --tool=callgrind`` on a live feed of its own (``--fixtures`` fixtures, a packet and a
heartbeat from each every 5 s) and a fresh database: the counters are zeroed once it has
connected and stored all the feed has sent (at most ``--warmup`` seconds), and read
``--measure`` seconds later. Printed: the instructions in the window, per packet stored in it,
and ours against the script's.

valgrind slows a process about fifty times: at 1,000 fixtures neither client keeps up, so the
default is 100 (300 still works). The figures are user-space instructions: system calls and the
kernel's share are not in them (``strace -c`` counts those: the same for both, README
Performance).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.harness import (
    Databases,
    count_rows,
    make_matches,
    ours_command,
    paced,
    process_env,
    script_command,
    simulator_process,
    stop_process,
)

ROOT = Path(__file__).resolve().parents[1]
EVERY = 5.0  # a packet and a heartbeat from each fixture this often, as in the footprint


async def count(
    name: str, command: list[str], url: str, feed: str, warmup: float, measure: float
) -> tuple[int, int]:
    """Run ``command`` under callgrind: (instructions, packets stored) in the measured window."""
    with tempfile.TemporaryDirectory(prefix="ingest-callgrind-") as folder:
        out = Path(folder) / f"{name}.out"
        proc = await asyncio.create_subprocess_exec(
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-line=no",
            *command, env=process_env(url, feed), cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await _caught_up(proc, url, feed, warmup)  # connect and catch up: not counted
            stored = await count_rows(url)
            await _control("-z", proc.pid)  # zero the counters ...
            await asyncio.sleep(measure)
            await _control("-d", proc.pid)  # ... and dump them: <out>.1
            stored = await count_rows(url) - stored
        finally:
            await stop_process(proc)
        dump = out.with_name(out.name + ".1")
        for line in dump.read_text().splitlines():
            if line.startswith("summary:"):
                return int(line.split()[1]), stored
        raise RuntimeError(f"no summary in {dump}")


async def _caught_up(proc: asyncio.subprocess.Process, url: str, feed: str, limit: float) -> None:
    """Until every fixture has been connected and all the feed sent is stored, then a second
    more (a client under valgrind takes 10-30 s to start); at most ``limit`` seconds."""
    stats = feed.replace("ws://", "http://", 1) + "/_control/stats"
    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"the client exited during the warm-up ({proc.returncode})")
            async with session.get(stats) as response:
                counters = (await response.json()).values()
            sent = sum(c["packets_sent"] for c in counters)
            if all(c["connections"] for c in counters) and await count_rows(url) >= sent > 0:
                await asyncio.sleep(1.0)
                return
            await asyncio.sleep(0.5)
    raise RuntimeError(f"the client had not caught up after {limit:g} s of warm-up")


async def _control(flag: str, pid: int) -> None:
    done = await asyncio.to_thread(
        subprocess.run, ["callgrind_control", flag, str(pid)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"callgrind_control {flag} {pid}: {done.stderr or done.stdout}")


async def main_async(args: argparse.Namespace) -> int:
    matches = paced(make_matches(40_000, args.fixtures, 7), EVERY)
    ids = [m.fixture_id for m in matches]
    live = ("--live", "--time-scale", "1", "--live-offset", str(4 * EVERY))
    dbs = Databases()
    figures: dict[str, tuple[int, int]] = {}
    try:
        for name in ("ours", "script"):
            with simulator_process(matches, *live, heartbeat=EVERY) as feed:
                url = await dbs.fresh()
                command = ours_command(ids) if name == "ours" else script_command(url, feed, ids)
                figures[name] = await count(name, command, url, feed, args.warmup, args.measure)
    finally:
        await dbs.drop_all()
    print(f"{args.fixtures} live fixtures, a packet and a heartbeat each every {EVERY:g} s; "
          f"instructions over {args.measure:g} s once caught up")  # fmt: skip
    for name, (instructions, stored) in figures.items():
        per = instructions / stored if stored else float("nan")
        print(f"{name:8} {instructions / 1e6:10,.1f}M instructions, {stored:6,} packets stored, "
              f"{per / 1e3:8,.1f}k a packet")  # fmt: skip
    ours, script = figures["ours"][0], figures["script"][0]
    print(f"ours/script {ours / script:.3f}x")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", type=int, default=100)
    parser.add_argument("--warmup", type=float, default=120.0, help="at most this long")
    parser.add_argument("--measure", type=float, default=30.0)
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
