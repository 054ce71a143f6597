"""The benchmark harness on a tiny input, so that it cannot rot (figures are not asserted)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


async def bench_module(module: str, *args: str) -> str:
    """Run ``python -m <module> <args>`` as a user would (no INGEST_ variables): its output,
    once it has exited 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode == 0, stderr.decode()[-3000:]
    return stdout.decode()


@pytest.mark.slow
async def test_bench_quick_mode_runs_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    table = await bench_module("bench", "--quick", "--scale", "0.05", "--json", str(out))
    results = json.loads(out.read_text())
    for name in ("backfill", "backfill-concurrent"):
        for reference in ("ours", "script", "careful", "raw_copy", "raw_receive"):
            assert results[name][reference] > 0
    assert 0 < results["startup"]["ours_s"] < 60
    assert 0 < results["startup"]["script_s"] < 60
    # where a start-up goes: each part measured, and within what contains it
    profile = results["startup"]["profile_ms"]
    assert all(profile[part] > 0 for part in ("python", "ours_imports", "script_imports"))
    assert profile["certificates"] > 0 and 0 < profile["own"] < profile["ours_imports"]
    assert 2 * profile["certificates"] < profile["aiohttp"]
    live = results["live-latency"]
    assert live["packets_measured"] > 0 and live["async_commit"]["packets_measured"] > 0
    assert live["batch_wait"]["packets_measured"] > 0
    # the legs of a latency are within the whole
    for run in (live, live["async_commit"], live["batch_wait"]):
        assert set(run["legs_p99_ms"]) == {"feed", "queue", "commit"}
        assert all(0 <= leg <= run["max_ms"] + 1 for leg in run["legs_max_ms"].values())
    for reference in ("ours", "script", "careful", "ours_batch_wait", "script_batch_wait"):
        assert results["footprint"][f"{reference}_rss_mb"] > 0
        assert results["footprint"][f"{reference}_packets_stored"] > 0
    assert results["footprint"]["packets_stored"] > 0
    season = results["season"]
    assert season["scan_s"] > 0 and season["packets"] > 0
    assert set(season["queries_s"]) == {
        "match_results", "frame_results", "breaks 100+", "player_match_stats"
    }  # fmt: skip
    assert season["lookups_ms"] and season["in_play_lookups_ms"]
    assert all(n in table for n in ("backfill", "startup", "live-latency", "footprint", "season"))
    assert "where it goes (ms, best of 2): python " in table
    assert "with --async-commit: p50" in table and "p99 (max) of its legs: feed" in table
    assert "with --batch-wait 0.02: p50" in table and "ours with --batch-wait 0.02: " in table


@pytest.mark.slow
async def test_the_write_cost_script_runs() -> None:
    table = await bench_module("bench.write_cost", "--matches", "1", "--rounds", "1")
    assert all(n in table for n in ("batch", "one", "finishing", "refresh", "server"))


@pytest.mark.slow
async def test_the_live_path_script_runs() -> None:
    table = await bench_module(
        "bench.live_path", "--packets", "250", "--fixtures", "50", "--repeat", "1"
    )
    assert all(f"\n{n} " in table for n in ("statement", "script", "writer", "betting")), table


def test_the_footprint_line_shows_every_rounds_cpu() -> None:
    """make bench runs the footprint in rounds (the quick run above has one): each round's CPU
    is printed beside the median the ratio is taken from, and ours against the script's in the
    same round."""
    from bench.__main__ import render

    runs = {"ours": [3.61, 3.53], "script": [3.05, 3.01], "careful": [6.64, 6.67]}
    footprint: dict[str, object] = {"fixtures": 1000, "seconds": 60.0, "rounds": 2}
    for name, cpu in runs.items():
        footprint |= {f"{name}_rss_mb": 64.0, f"{name}_cpu_runs": cpu,
                      f"{name}_cpu_s_per_min": sum(cpu) / 2}  # fmt: skip
    footprint |= {"vs_script": 3.57 / 3.03, "vs_careful": 3.57 / 6.655, "targets_met": False}
    table = render({"footprint": footprint})
    assert "ours 64 MB, 3.57 CPU-s/min" in table and "1.18x the script" in table
    assert "2 rounds in turn (median, peak RSS): ours 3.61, 3.53; script 3.05, 3.01" in table
    assert "ours against the script round by round: 1.18x, 1.17x" in table


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("callgrind_control") is None,
    reason="valgrind is not installed: `apt-get install valgrind` (.ci/run does it)",
)
async def test_the_instructions_script_counts_both_clients() -> None:
    # the warm-up ends once caught up: its default limit (120 s) is for a slow machine
    table = await bench_module("bench.instructions", "--fixtures", "5", "--measure", "4")
    for name in ("ours", "script"):  # both counted, both stored packets in the window
        [line] = [line for line in table.splitlines() if line.startswith(name + " ")]
        assert "M instructions" in line and " 0 packets stored" not in line
    assert "ours/script" in table
