"""The simulator's live streams: packets stamped when they happen (or late, on request), and a
provider suspension injected without breaking the numbering, for clients that stay connected
and clients that come back from their MAX(seq)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from ingest.simulator.server import ACCEPT, Simulator
from tests.conftest import TOKEN, StartSimulator, wait_until
from tests.integration.test_simulator import FIXTURE, synthetic


class Client:
    """A plain websocket client that keeps every packet it receives, with its arrival time."""

    def __init__(self, sim: Simulator, start: int = 0) -> None:
        self.sim, self.start = sim, start
        self.packets: list[dict[str, Any]] = []
        self.arrived: list[float] = []  # wall time
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Client:
        self.task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def _read(self) -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(
                f"{self.sim.url}/snooker/fixtures/{FIXTURE}/actions",
                params={"startPosition": str(self.start)},
                headers={"Accept": ACCEPT},
            ) as ws,
        ):
            await ws.send_str(json.dumps({"authToken": TOKEN}))
            async for msg in ws:
                value = json.loads(msg.data)
                if "fixtureAction" in value:
                    self.packets.append(value)
                    self.arrived.append(time.time())

    @property
    def seqs(self) -> list[int]:
        return [p["fixtureAction"]["fixtureSeqNum"] for p in self.packets]

    def types(self) -> list[int | None]:
        return [p["fixtureAction"].get("fixtureActionTypeId") for p in self.packets]

    async def until(self, count: int, timeout: float = 10) -> None:
        async def enough() -> bool:
            return len(self.packets) >= count

        await wait_until(enough, timeout=timeout)


def _ts(packet: dict[str, Any]) -> float:
    return datetime.fromisoformat(packet["fixtureAction"]["timestamp"]).timestamp()


async def test_a_live_packet_is_stamped_when_it_happens_and_late_when_delayed(
    start_simulator: StartSimulator,
) -> None:
    # a packet every 0.1 s, the first ten already played when the simulator starts
    sim = await start_simulator(
        [synthetic(40, spacing=10)], time_scale=100, live=True, live_offset=100
    )
    async with Client(sim) as client:
        await client.until(20)
        caught_up = client.packets[:10]
        # the packets that happened after this client arrived (however late it connected)
        live = [
            (packet, arrived)
            for packet, arrived in zip(client.packets, client.arrived, strict=True)
            if _ts(packet) > client.arrived[0] + 0.05
        ]
        assert len(live) >= 4
        for packet, arrived in live:
            assert abs(arrived - _ts(packet)) < 0.25  # stamped with the moment it was sent
        # the backlog keeps the moments it happened: the first was played a second ago
        assert client.arrived[0] - _ts(caught_up[0]) > 0.8
        sim.set_faults(FIXTURE, delay_seconds=5.0)
        count = len(client.packets)
        await client.until(count + 3)
        late = client.packets[count + 1]
        assert 4.7 < client.arrived[count + 1] - _ts(late) < 5.3
    # the same packet is stamped the same way on every connection (a replay is no conflict)
    sim.set_faults(FIXTURE, delay_seconds=0.0)
    async with Client(sim, start=2) as again:
        await again.until(1)
        assert again.packets[0] == caught_up[2]


async def test_a_provider_suspension_is_injected_and_every_later_packet_renumbered(
    start_simulator: StartSimulator,
) -> None:
    sim = await start_simulator([synthetic(60, spacing=10)], time_scale=100, live=True)
    async with Client(sim) as stayed:
        await stayed.until(5)
        assert sim.suspend_now(FIXTURE, 0.6)
        assert not sim.suspend_now(FIXTURE, 0.6)  # suspended already
        await stayed.until(8, timeout=10)
        kinds = stayed.types()
        at = kinds.index(22)
        suspended, resumed = stayed.packets[at], stayed.packets[at + 1]
        assert suspended["fixtureSummary"]["collectionStatus"] == "CollectionSuspended"
        assert suspended["fixtureAction"]["metadata"]["collectionStatus"] == 3
        assert resumed["fixtureAction"]["fixtureActionTypeId"] == 22
        assert resumed["fixtureSummary"]["collectionStatus"] == "CollectingLive"
        # nothing while suspended: the pause is in the arrival times
        assert stayed.arrived[at + 1] - stayed.arrived[at] >= 0.5
        await stayed.until(20)
        assert stayed.seqs[:20] == list(range(1, 21))  # one numbering, injected packets included
    # a client that comes back from MAX(seq) gets the same packets as one that stayed
    async with Client(sim, start=at) as back:
        await back.until(6)
        assert back.packets[:6] == stayed.packets[at : at + 6]
    assert sim.counters[FIXTURE].suspensions == 1


async def test_a_suspension_from_the_flags_and_from_the_control_endpoint(
    start_simulator: StartSimulator,
) -> None:
    sim = await start_simulator(
        [synthetic(40, spacing=10)], time_scale=100, live=True, suspend_after=3,
        suspend_seconds=0.3,
    )  # fmt: skip
    async with Client(sim) as client:
        await client.until(8)
        assert client.types()[3:5] == [22, 22]  # after the third packet, then lifted
        assert client.seqs[:8] == list(range(1, 9))
        base = sim.url.replace("ws://", "http://")
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{base}/_control/faults", json={"fixture_id": str(FIXTURE), "suspend_now": 30}
            ) as response:
                assert response.status == 200
            count = len(client.packets)
            await client.until(count + 1)
            assert client.types()[count] == 22
            async with session.post(
                f"{base}/_control/faults", json={"fixture_id": str(FIXTURE), "suspend_now": 0}
            ) as response:
                assert response.status == 200  # lifted at once
            await client.until(count + 3)
            lifted = client.packets[count + 1]
            assert lifted["fixtureSummary"]["collectionStatus"] == "CollectingLive"


@pytest.mark.parametrize("body", [{"suspend_now": 5}, {"suspend_after": 2}])
async def test_suspensions_need_a_live_stream(
    start_simulator: StartSimulator, body: dict[str, object]
) -> None:
    sim = await start_simulator([synthetic(5)])
    base = sim.url.replace("ws://", "http://")
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base}/_control/faults", json=body) as response,
    ):
        assert response.status == 400
        assert "--live" in (await response.json())["error"]


async def test_stall_now_from_the_control_endpoint(start_simulator: StartSimulator) -> None:
    sim = await start_simulator([synthetic(200, spacing=10)], time_scale=100, live=True)
    async with Client(sim) as client:
        await client.until(3)
        base = sim.url.replace("ws://", "http://")
        stalled_at = time.time()  # at the latest, the stall begins as the request is handled
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{base}/_control/faults", json={"fixture_id": str(FIXTURE), "stall_now": 0.5}
            ) as response,
        ):
            assert response.status == 200
        count = len(client.packets)
        await client.until(count + 2)
        assert client.arrived[count + 1] - stalled_at >= 0.4
        counters = sim.counters[FIXTURE]
        assert counters.first_after_stall_at >= stalled_at + 0.4
        assert uuid.UUID(str(FIXTURE)) == FIXTURE
