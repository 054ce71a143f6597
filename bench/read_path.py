"""``python -m bench.read_path [--fixtures N] [--best-of N] [--repeat N]``: the feed-reading path.

Two measurements, both per received message:

* ``stream``: CPU of this process while :meth:`FeedSource.stream` reads whole fixtures from the
  simulator (its own process, ``speed=fast``), the frames consumed and dropped: the websocket
  layer, the liveness timer, ``classify``, ``Keying``. CPU time, not wall time, so the simulator
  sharing the machine does not count.
* ``classify``: the same packets through ``classify`` and ``Keying.accept`` in a loop, no I/O,
  with its parts (UTF-8 decode, ``orjson.loads``) for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from bench.harness import TOKEN, make_matches, simulator_process
from ingest.feed.client import FeedSource, feed_session
from ingest.feed.packet import Action, Keying, classify
from ingest.settings import Secret


async def read_all(feed: str, fixtures: Sequence[uuid.UUID]) -> int:
    """Read every fixture to its finished packet at once; the number of messages yielded."""
    count = 0

    async def one(source: FeedSource, fixture_id: uuid.UUID) -> None:
        nonlocal count
        async for frame in source.stream(fixture_id, 0, speed="fast"):
            count += 1
            if isinstance(frame, Action) and frame.finished:
                return

    async with feed_session() as session:
        source = FeedSource(session, feed, Secret(TOKEN))
        await asyncio.gather(*(one(source, f) for f in fixtures))
    return count


def stream_us(feed: str, fixtures: Sequence[uuid.UUID]) -> float:
    started = time.process_time()
    count = asyncio.run(read_all(feed, fixtures))
    return (time.process_time() - started) / count * 1e6


def loop_us(lines: Sequence[bytes], step: Callable[[bytes, int], object], rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for i, data in enumerate(lines, 1):
            step(data, i)
        best = min(best, time.perf_counter() - started)
    return best / len(lines) * 1e6


def classify_us(lines: Sequence[bytes]) -> dict[str, float]:
    import orjson

    now = datetime.now(UTC)
    keying = Keying()

    def full(data: bytes, i: int) -> object:
        if i == 1:
            keying.begin(0)
        frame = classify(data, binary=False, position=i, received_at=now)
        return keying.accept(frame) if isinstance(frame, Action) else frame

    return {
        "decode": loop_us(lines, lambda data, i: data.decode("utf-8")),
        "orjson.loads": loop_us(lines, lambda data, i: orjson.loads(data)),
        "classify": loop_us(
            lines, lambda data, i: classify(data, binary=False, position=i, received_at=now)
        ),
        "classify+accept": loop_us(lines, full),
        "datetime.now": loop_us(lines, lambda data, i: datetime.now(UTC)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.read_path", description=__doc__)
    parser.add_argument("--fixtures", type=int, default=20)
    parser.add_argument("--best-of", type=int, default=19)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", choices=["stream", "classify"])
    args = parser.parse_args()
    matches = make_matches(50_000, args.fixtures, args.best_of)
    lines = [line.encode() for m in matches for line in m.lines]
    print(f"{args.fixtures} fixtures, {len(lines):,} packets, {args.repeat} repeats")
    if args.only != "stream":
        runs = [classify_us(lines) for _ in range(args.repeat)]
        for name in runs[0]:
            values = sorted(r[name] for r in runs)
            print(f"{name:16} {statistics.median(values):6.2f} us/packet (min {values[0]:.2f})")
    if args.only != "classify":
        with simulator_process(matches) as feed:
            stream_us(feed, [matches[0].fixture_id])  # warm up: imports, first connection
            ids = [m.fixture_id for m in matches]
            values = sorted(stream_us(feed, ids) for _ in range(args.repeat))
        print(
            f"{'stream':16} {statistics.median(values):6.2f} us CPU/message "
            f"(min {values[0]:.2f}, max {values[-1]:.2f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
