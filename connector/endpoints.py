"""The process's HTTP endpoints: ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz`` (the
:class:`~connector.health.Health` of this member) and ``/tenants`` (the shops served)."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from connector.health import Health
from connector.metrics import Metrics


class MetricsServer:
    """Serves the metrics and health endpoints on ``host:port`` (port 0: an ephemeral port)."""

    def __init__(
        self, metrics: Metrics, health: Health, host: str, port: int, stale_after_s: float = 60.0
    ) -> None:
        self._metrics = metrics
        self._health = health
        self._host, self._port = host, port
        self._stale_after = stale_after_s
        app = web.Application()
        app.router.add_get("/metrics", self._serve_metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/tenants", self._tenants)
        self._runner = web.AppRunner(app, access_log=None)
        self.port = port

    async def _serve_metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        age = self._health.age()
        ok = age < self._stale_after
        return web.json_response({"ok": ok, "last_progress_s": round(age, 1)}, status=200 if ok else 503)

    async def _readyz(self, _: web.Request) -> web.Response:
        health = self._health
        ok = health.ready
        body = {"ready": ok, "outage": health.outage, "registry_unavailable": health.registry_down}
        return web.json_response(body, status=200 if ok else 503)

    async def _tenants(self, _: web.Request) -> web.Response:
        return web.json_response({"tenants": self._health.tenants()})

    async def __aenter__(self) -> Self:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        self._metrics.port = self.port
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._runner.cleanup()


__all__ = ["MetricsServer"]
