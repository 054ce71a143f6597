"""The operator's view of a running worker: /metrics, /healthz, /readyz on --metrics-port."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ingest.ops.metrics import Metrics, SettlerMetrics

if TYPE_CHECKING:  # imported when the server starts: without --metrics-port it is never needed
    from aiohttp import web

Probe = Callable[[], Awaitable[tuple[bool, str]]]


class Monitor:
    """A small HTTP server: Prometheus exposition and two health endpoints."""

    def __init__(self, metrics: Metrics | SettlerMetrics, ready: Probe) -> None:
        self._metrics = metrics
        self._ready = ready
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        from aiohttp import web

        metrics, ready = self._metrics, self._ready

        async def serve_metrics(request: web.Request) -> web.Response:
            return web.Response(
                body=metrics.exposition(),
                headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
            )

        async def healthz(request: web.Request) -> web.Response:
            return web.Response(text="ok\n")  # the process is alive and its event loop answers

        async def readyz(request: web.Request) -> web.Response:
            ok, detail = await ready()
            return web.Response(
                status=200 if ok else 503,
                text=json.dumps({"ready": ok, "detail": detail}) + "\n",
                content_type="application/json",
            )

        app = web.Application()
        app.router.add_get("/metrics", serve_metrics)
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
