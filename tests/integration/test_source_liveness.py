"""The liveness timer of one feed connection, read through :meth:`FeedSource.stream` itself.

Against a server on another websocket stack (independent_feed.py) that answers pings while it
stalls, at production's ratio (a ping half the liveness timeout into a silence): a heartbeat
moves the deadline,
silence ends the stream as "silent", a cancellation from outside (shutdown) ends it at once as a
cancellation, also when it comes at the very moment the deadline passes, and no timer outlives
the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import uuid
from collections.abc import AsyncIterator

import pytest

from ingest.errors import FeedUnavailable
from ingest.feed.client import FeedSource, _Liveness, feed_session
from ingest.feed.packet import Action, Rejected
from ingest.settings import Secret
from ingest.simulator.recording import Recording
from tests.conftest import TOKEN, wait_until
from tests.integration.independent_feed import IndependentFeed

LIVENESS = 1.0
STALL_AT = 5


@pytest.fixture
async def independent(recording: Recording) -> AsyncIterator[IndependentFeed]:
    feed = IndependentFeed(recording.fixture_id, recording.lines, TOKEN)
    feed.stall_at = STALL_AT
    yield feed
    await feed.stop()


class Reader:
    """Consumes one stream in a task of its own, as the follower does (``aclosing``)."""

    def __init__(self, source: FeedSource, fixture_id: uuid.UUID, busy: float = 0.0) -> None:
        self.frames: list[Action | Rejected] = []
        self.stream = source.stream(fixture_id, 0)
        self.busy = busy  # after the first frame, the consumer is busy this long
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async with contextlib.aclosing(self.stream):
            async for frame in self.stream:
                self.frames.append(frame)
                if len(self.frames) == 1 and self.busy:
                    await asyncio.sleep(self.busy)  # the scenario: a consumer busy elsewhere

    def liveness(self) -> _Liveness:
        """The stream's timer, while the stream runs (white box: to meet its deadline exactly)."""
        frame = self.stream.ag_frame
        assert frame is not None
        live = frame.f_locals["live"]
        assert isinstance(live, _Liveness)
        return live

    async def stalled(self) -> None:
        async def all_before_the_stall() -> bool:
            return len(self.frames) == STALL_AT

        await wait_until(all_before_the_stall, timeout=10)


def liveness_timers(loop: asyncio.AbstractEventLoop) -> int | None:
    """How many liveness timers are pending (white box: the standard library's loop keeps its
    timers in a heap); None on a loop that does not show them (uvloop keeps them in libuv:
    make test runs this file on the standard loop too, where every count is checked)."""
    scheduled: list[asyncio.TimerHandle] | None = getattr(loop, "_scheduled", None)
    if scheduled is None:
        return None
    return len([h for h in scheduled if not h.cancelled() and _owner(h) is _Liveness])


def _owner(handle: asyncio.TimerHandle) -> type:
    return type(getattr(handle._callback, "__self__", None))  # type: ignore[attr-defined]


async def test_heartbeats_keep_a_connection_alive_past_the_timeout_on_one_timer(
    independent: IndependentFeed, recording: Recording
) -> None:
    independent.trickle = b'{"message": "Heartbeat", "level": "INFO"}'
    independent.trickle_every = LIVENESS / 4
    url = await independent.start()
    loop = asyncio.get_running_loop()
    async with feed_session() as session:
        reader = Reader(
            FeedSource(session, url, Secret(TOKEN), liveness_timeout=LIVENESS),
            recording.fixture_id,
        )
        await reader.stalled()
        assert independent.stalled_at is not None
        await asyncio.sleep(3 * LIVENESS)  # the scenario itself: three timeouts of heartbeats
        assert not reader.task.done()
        assert reader.liveness().deadline > loop.time()
        assert liveness_timers(loop) in (1, None)  # one timer per connection, not one per message
        reader.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader.task
    assert not liveness_timers(loop)


async def test_silence_with_pings_answered_ends_the_stream_at_the_timeout(
    independent: IndependentFeed, recording: Recording
) -> None:
    url = await independent.start()
    loop = asyncio.get_running_loop()
    async with feed_session() as session:
        reader = Reader(
            FeedSource(session, url, Secret(TOKEN), liveness_timeout=LIVENESS),
            recording.fixture_id,
        )
        await reader.stalled()
        with pytest.raises(FeedUnavailable) as raised:
            async with asyncio.timeout(4 * LIVENESS):
                await reader.task
        assert independent.stalled_at is not None
        waited = loop.time() - independent.stalled_at
    assert raised.value.reason == "silent"
    assert str(raised.value) == "no packet or heartbeat for 1 s: connection presumed dead"
    assert LIVENESS - 0.2 < waited < 2 * LIVENESS
    assert not liveness_timers(loop)
    # one ping for the silence, half the timeout into it (by the liveness timer, not aiohttp)
    assert independent.pings == 1
    into = independent.pinged_at[0] - independent.stalled_at
    assert LIVENESS / 2 - 0.1 < into < LIVENESS


async def test_a_feed_that_talks_is_never_pinged(
    independent: IndependentFeed, recording: Recording
) -> None:
    independent.trickle = b'{"message": "Heartbeat", "level": "INFO"}'
    independent.trickle_every = LIVENESS / 10  # a ping would need a 0.4 s hiccup in between
    url = await independent.start()
    async with feed_session() as session:
        reader = Reader(
            FeedSource(session, url, Secret(TOKEN), liveness_timeout=LIVENESS),
            recording.fixture_id,
        )
        await reader.stalled()
        await asyncio.sleep(3 * LIVENESS)  # the scenario: three timeouts of heartbeats
        assert not reader.task.done()
        reader.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader.task
    assert independent.pings == 0


async def test_a_shutdown_during_a_stall_stops_the_stream_at_once(
    independent: IndependentFeed, recording: Recording
) -> None:
    url = await independent.start()
    loop = asyncio.get_running_loop()
    async with feed_session() as session:
        reader = Reader(
            FeedSource(session, url, Secret(TOKEN), liveness_timeout=30.0),
            recording.fixture_id,
        )
        await reader.stalled()
        started = loop.time()
        reader.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader.task
        assert loop.time() - started < 1.5  # the close handshake's own bound (1 s), not 30 s
        assert reader.task.cancelled()
    assert not liveness_timers(loop)


async def test_a_shutdown_at_the_moment_the_deadline_passes_is_still_a_shutdown(
    independent: IndependentFeed, recording: Recording
) -> None:
    url = await independent.start()
    loop = asyncio.get_running_loop()
    async with feed_session() as session:
        # the timer, first armed for the half-way ping at the start, moves with the packets that
        # came in while the consumer was busy, pings the silence after them, and is then armed
        # for the last deadline
        reader = Reader(
            FeedSource(session, url, Secret(TOKEN), liveness_timeout=LIVENESS),
            recording.fixture_id,
            busy=LIVENESS / 2,
        )
        await reader.stalled()
        live = reader.liveness()

        async def armed_for_the_last_deadline() -> bool:
            return live._handle is not None and live._armed_for == live.deadline

        await wait_until(armed_for_the_last_deadline, timeout=4 * LIVENESS)
        # the shutdown comes in the same loop iteration as the deadline, before the reader
        # wakes up. Two timers due at the same loop time need not run in one iteration (the
        # loop rounds each to its clock's millisecond from the time it was set, and a loaded
        # machine once woke between them): so the deadline's own callback is followed by it
        assert live._handle is not None
        live._handle.cancel()

        def deadline_then_shutdown() -> None:
            live._fire()
            reader.task.cancel()

        live._handle = loop.call_at(live._armed_for, deadline_then_shutdown)
        with pytest.raises(asyncio.CancelledError):
            await reader.task
        assert reader.task.cancelled()  # not "silent": the shutdown is not swallowed
    assert not liveness_timers(loop)


async def test_an_idle_connection_keeps_neither_its_handshake_nor_its_last_packet(
    independent: IndependentFeed, recording: Recording
) -> None:
    # a thousand idle fixtures must not hold a thousand packets and handshake responses
    url = await independent.start()
    async with feed_session() as session:
        reader = Reader(FeedSource(session, url, Secret(TOKEN), liveness_timeout=30.0),
                        recording.fixture_id)  # fmt: skip
        await reader.stalled()
        last = reader.frames[-1]
        assert isinstance(last, Action)
        frame = reader.stream.ag_frame
        assert frame is not None
        waiting = frame.f_locals
        ws = waiting["ws"]
        assert not ws.closed
        assert ws._response.raw_headers == () and not ws._response.headers
        # nor anywhere else: aiohttp's HTTP parser keeps the last headers it read in lists of
        # its own (the websockets server in this process keeps its headers as str, not bytes)
        assert not _raw_handshake_headers()
        for name in ("msg", "data", "frame", "passed", "item"):
            assert waiting.get(name) is None, name
        assert not any(v is last or v is last.payload for v in waiting.values())
        reader.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader.task


def _raw_handshake_headers() -> list[list[object]]:
    """Lists alive in this process that hold a raw (bytes) Sec-WebSocket-Accept header."""
    gc.collect()
    return [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, list)
        and any(
            isinstance(item, tuple)
            and item
            and isinstance(item[0], bytes)
            and item[0].lower() == b"sec-websocket-accept"
            for item in obj
        )
    ]


async def test_a_feed_that_never_answers_the_handshake_is_a_network_error_within_the_timeout(
    recording: Recording,
) -> None:
    # a real server on loopback that takes the connection and the request, and says nothing
    requests: list[bytes] = []

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.readuntil(b"\r\n\r\n"))
        await reader.read()  # until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    try:
        async with feed_session() as session:
            source = FeedSource(session, f"http://127.0.0.1:{port}", Secret(TOKEN),
                                connect_timeout=0.5)  # fmt: skip
            started = loop.time()
            with pytest.raises(FeedUnavailable) as raised:
                async with asyncio.timeout(10):
                    async for _ in source.stream(recording.fixture_id, 0):
                        pass
            waited = loop.time() - started
    finally:
        server.close()
        await server.wait_closed()
    assert raised.value.reason == "network"
    assert "no answer within 0.5 s" in str(raised.value)
    assert TOKEN not in str(raised.value)
    assert requests and b"Upgrade: websocket" in requests[0]
    assert 0.4 < waited < 3
