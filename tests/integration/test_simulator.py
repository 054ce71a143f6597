"""The simulator's protocol and faults, driven by a plain aiohttp websocket client."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from ingest.simulator.recording import Recording
from ingest.simulator.server import ACCEPT, Simulator
from tests.conftest import TOKEN, StartSimulator

FIXTURE = uuid.UUID("00000000-0000-4000-8000-000000000001")
OTHER = uuid.UUID("00000000-0000-4000-8000-000000000002")


def synthetic(count: int, *, fixture: uuid.UUID = FIXTURE, spacing: float = 10.0,
              finished: bool = True) -> Recording:  # fmt: skip
    start = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)
    lines = []
    for seq in range(1, count + 1):
        stamp = (start + timedelta(seconds=spacing * (seq - 1))).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lines.append(
            json.dumps(
                {
                    "finished": finished and seq == count,
                    "fixtureAction": {
                        "fixtureId": str(fixture),
                        "fixtureSeqNum": seq,
                        "timestamp": stamp,
                    },
                }
            )
        )
    return Recording.from_text("\n".join(lines), name="synthetic")


@dataclass
class Received:
    seqs: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # monotonic arrival of each packet
    heartbeats: list[float] = field(default_factory=list)
    control: list[dict[str, object]] = field(default_factory=list)
    malformed: list[bytes] = field(default_factory=list)
    close_code: int | None = None


async def session_collect(
    sim: Simulator,
    fixture: uuid.UUID = FIXTURE,
    *,
    token: str | None = TOKEN,
    params: dict[str, str] | None = None,
    until_packets: int | None = None,
    until_heartbeats: int | None = None,
    timeout: float = 10.0,
) -> Received:
    got = Received()
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            f"{sim.url}/snooker/fixtures/{fixture}/actions",
            params=params or {},
            headers={"Accept": ACCEPT},
        ) as ws,
    ):
        if token is not None:
            await ws.send_str(json.dumps({"authToken": token}))
        deadline = time.monotonic() + timeout
        while True:
            msg = await ws.receive(timeout=max(deadline - time.monotonic(), 0.01))
            now = time.monotonic()
            if msg.type is aiohttp.WSMsgType.BINARY:
                got.malformed.append(msg.data)
                continue
            if msg.type is not aiohttp.WSMsgType.TEXT:
                got.close_code = ws.close_code
                return got
            try:
                value = json.loads(msg.data)
            except ValueError:
                got.malformed.append(msg.data.encode())
                continue
            if not isinstance(value, dict):
                got.malformed.append(msg.data.encode())
            elif "fixtureAction" in value:
                got.seqs.append(value["fixtureAction"]["fixtureSeqNum"])
                got.times.append(now)
            elif str(value.get("message", "")).startswith("Heartbeat"):
                got.heartbeats.append(now)
            else:
                got.control.append(value)
            if until_packets is not None and len(got.seqs) >= until_packets:
                return got
            if until_heartbeats is not None and len(got.heartbeats) >= until_heartbeats:
                return got


async def test_auth_is_acknowledged_then_everything_is_sent_and_closed(
    start_simulator: StartSimulator,
) -> None:
    sim = await start_simulator([synthetic(20)])
    got = await session_collect(sim, params={"speed": "fast"})
    assert got.control[0] == {"message": "Authorisation accepted", "level": "INFO"}
    assert got.seqs == list(range(1, 21))
    assert got.close_code == 1000


@pytest.mark.parametrize("token", ["wrong", ""])
async def test_a_wrong_or_empty_token_gets_an_error_and_a_close(
    start_simulator: StartSimulator, token: str
) -> None:
    sim = await start_simulator([synthetic(5)])
    got = await session_collect(sim, token=token)
    assert got.seqs == []
    assert got.control[0]["message"] == "The supplied authentication is invalid"
    assert got.close_code == 1008


async def test_no_first_message_is_refused_after_the_auth_timeout(
    start_simulator: StartSimulator,
) -> None:
    sim = await start_simulator([synthetic(5)], auth_timeout=0.2)
    got = await session_collect(sim, token=None)
    assert got.seqs == [] and got.close_code == 1008


async def test_unknown_fixture_bad_position_and_missing_accept_are_http_errors(
    start_simulator: StartSimulator,
) -> None:
    sim = await start_simulator([synthetic(5)])
    base = sim.url.replace("ws://", "http://")
    async with aiohttp.ClientSession() as session:
        for path, headers, status in [
            (f"/snooker/fixtures/{OTHER}/actions", {"Accept": ACCEPT}, 404),
            (f"/snooker/fixtures/{FIXTURE}/actions?startPosition=-1", {"Accept": ACCEPT}, 400),
            (f"/snooker/fixtures/{FIXTURE}/actions?speed=warp", {"Accept": ACCEPT}, 400),
            (f"/snooker/fixtures/{FIXTURE}/actions", {}, 400),
        ]:
            async with session.get(base + path, headers=headers) as response:
                assert response.status == status, path


async def test_start_position_is_zero_based_by_default(start_simulator: StartSimulator) -> None:
    sim = await start_simulator([synthetic(10)])
    got = await session_collect(sim, params={"startPosition": "4", "speed": "fast"})
    assert got.seqs == [5, 6, 7, 8, 9, 10]


async def test_start_position_can_be_one_based(start_simulator: StartSimulator) -> None:
    sim = await start_simulator([synthetic(10)], one_based=True)
    got = await session_collect(sim, params={"startPosition": "4", "speed": "fast"})
    assert got.seqs == [4, 5, 6, 7, 8, 9, 10]


async def test_normal_speed_keeps_the_recorded_pacing_scaled(
    start_simulator: StartSimulator,
) -> None:
    # 5 packets 10 s apart, time scale 100: 0.1 s apart
    sim = await start_simulator([synthetic(5)], time_scale=100)
    got = await session_collect(sim)
    gaps = [b - a for a, b in zip(got.times, got.times[1:], strict=False)]
    assert all(gap >= 0.08 for gap in gaps), gaps
    fast = await session_collect(sim, params={"speed": "fast"})
    assert fast.times[-1] - fast.times[0] < got.times[-1] - got.times[0]


async def test_heartbeats_flow_while_a_live_fixture_is_quiet(
    start_simulator: StartSimulator,
) -> None:
    sim = await start_simulator([synthetic(3, finished=False)], heartbeat_interval=0.05)
    got = await session_collect(sim, params={"speed": "fast"}, until_heartbeats=4)
    assert got.seqs == [1, 2, 3]
    assert got.close_code is None  # still connected


async def test_live_mode_late_client_catches_up_then_follows(
    start_simulator: StartSimulator,
) -> None:
    # packet i happens at (i-1) * 0.1 s after the simulator started
    sim = await start_simulator([synthetic(30, spacing=10)], time_scale=100, live=True)
    began = time.monotonic()
    early = await session_collect(sim, until_packets=1)
    assert early.seqs == [1]
    # the scenario itself is a client arriving ~1 s into the match (not a synchronisation)
    await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - began)))
    late = await session_collect(sim)
    assert late.seqs == list(range(1, 31))
    # everything that had happened (about 10 packets, 0.9 s of match) arrives at once: in far
    # less time than it took to happen, however loaded the machine
    assert late.times[8] - late.times[0] < 0.45
    # the rest as it happens: the last packet 2.9 s into the match (at least 1 s after the
    # backlog even if this client connected almost 2 s in)
    assert late.times[-1] - late.times[0] >= 1.0


async def test_fault_drop_after_n_with_a_close_frame(start_simulator: StartSimulator) -> None:
    sim = await start_simulator([synthetic(20)], drop_after=7)
    got = await session_collect(sim, params={"speed": "fast"})
    assert got.seqs == list(range(1, 8)) and got.close_code == 1011


async def test_fault_drop_after_n_with_a_tcp_reset(start_simulator: StartSimulator) -> None:
    sim = await start_simulator([synthetic(20)], drop_after=7, drop_mode="reset")
    got = await session_collect(sim, params={"speed": "fast"})
    assert got.seqs == list(range(1, 8))
    assert got.close_code not in (1000, 1011)  # no close frame: abnormal closure


async def test_fault_stall_sends_nothing_for_a_while(start_simulator: StartSimulator) -> None:
    sim = await start_simulator(
        [synthetic(6)], stall_after=3, stall_seconds=0.5, heartbeat_interval=0.05
    )
    got = await session_collect(sim, params={"speed": "fast"})
    assert got.seqs == list(range(1, 7))
    assert got.times[3] - got.times[2] >= 0.45
    during = [t for t in got.heartbeats if got.times[2] < t < got.times[3] - 0.1]
    assert during == []  # no heartbeats during the stall either


async def test_fault_malformed_frames(start_simulator: StartSimulator) -> None:
    sim = await start_simulator([synthetic(9)], malformed_every=3)
    got = await session_collect(sim, params={"speed": "fast"})
    assert got.seqs == list(range(1, 10))
    assert len(got.malformed) == 3
    assert got.malformed[0].startswith(b'{"fixtureAction"')  # truncated JSON
    assert got.malformed[2].startswith(b"[")  # an array


async def test_fault_refuse_connections_then_recover(start_simulator: StartSimulator) -> None:
    sim = await start_simulator([synthetic(3)], refuse_until=time.monotonic() + 600)
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await session_collect(sim)
    assert caught.value.status == 503
    sim.set_faults(refuse_seconds=0)  # the refusal period ends
    got = await session_collect(sim, params={"speed": "fast"})
    assert got.seqs == [1, 2, 3]
    assert sim.counters[FIXTURE].refused == 1


async def test_fault_refuse_token(start_simulator: StartSimulator) -> None:
    sim = await start_simulator([synthetic(3)], refuse_token=True)
    got = await session_collect(sim)
    assert got.seqs == [] and got.close_code == 1008


async def test_control_endpoint_changes_faults_for_one_fixture_while_running(
    start_simulator: StartSimulator,
) -> None:
    sim = await start_simulator([synthetic(10), synthetic(10, fixture=OTHER)])
    control = sim.url.replace("ws://", "http://") + "/_control/faults"
    async with aiohttp.ClientSession() as session:
        async with session.post(control, json={"fixture_id": str(OTHER), "drop_after": 2}) as r:
            assert r.status == 200
        async with session.post(control, json={"no_such_fault": 1}) as r:
            assert r.status == 400
    assert (await session_collect(sim, params={"speed": "fast"})).seqs == list(range(1, 11))
    assert (await session_collect(sim, OTHER, params={"speed": "fast"})).seqs == [1, 2]
    async with aiohttp.ClientSession() as session, session.delete(control) as r:
        assert r.status == 200
    assert len((await session_collect(sim, OTHER, params={"speed": "fast"})).seqs) == 10
    stats_url = sim.url.replace("ws://", "http://") + "/_control/stats"
    async with aiohttp.ClientSession() as session, session.get(stats_url) as r:
        stats = await r.json()
    assert stats[str(OTHER)]["connections"] == 2


async def test_many_fixtures_at_once(start_simulator: StartSimulator) -> None:
    fixtures = [uuid.UUID(int=i, version=4) for i in range(1, 21)]
    sim = await start_simulator([synthetic(15, fixture=f) for f in fixtures])

    results = await asyncio.gather(
        *(session_collect(sim, f, params={"speed": "fast"}) for f in fixtures)
    )
    assert all(r.seqs == list(range(1, 16)) for r in results)
