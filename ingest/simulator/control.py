"""The simulator's control endpoint: faults changed while it runs, its counters and its clock.

``POST /_control/faults`` with ``{"fixture_id": ..., "drop_after": 10, ...}`` (no fixture: for
all), ``DELETE /_control/faults`` to clear them, ``GET /_control/stats`` for connections and
packets per fixture, ``GET /_control/clock`` for when the live timeline began.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from ingest.simulator.server import Simulator


def add_control_routes(app: web.Application, sim: Simulator) -> None:
    control = _Control(sim)
    app.router.add_post("/_control/faults", control.faults)
    app.router.add_delete("/_control/faults", control.clear)
    app.router.add_get("/_control/stats", control.stats)
    app.router.add_get("/_control/clock", control.clock)


class _Control:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    async def faults(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            raw_id = body.pop("fixture_id", None)
            fixture_id = uuid.UUID(raw_id) if raw_id else None
            self.sim.set_faults(fixture_id, **body)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True})

    async def clear(self, request: web.Request) -> web.Response:
        self.sim.clear_faults()
        return web.json_response({"ok": True})

    async def stats(self, request: web.Request) -> web.Response:
        counters = self.sim.counters
        return web.json_response({str(f): dataclasses.asdict(c) for f, c in counters.items()})

    async def clock(self, request: web.Request) -> web.Response:
        """When the live timeline began (wall clock), for latency measurements."""
        options = self.sim.options
        return web.json_response(
            {
                "started": self.sim.started_wall,
                "time_scale": options.time_scale,
                "live": options.live,
                "live_offset": options.live_offset,
            }
        )
