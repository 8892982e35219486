"""Loop Returns Orders API: ``PUT /api/{version}/orders`` upserts by ``external_id``.

Deletions use ``DELETE /api/{version}/orders/external/{externalId}``; a 404 there means the order is
already gone, which is the state we want. Auth is the ``X-Authorization`` header.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx

from connector.config import SinkSettings
from connector.decode import OrderChange
from connector.errors import NotFoundError
from connector.sinks._base import HttpSink


class LoopSink(HttpSink):
    """Upserts and deletes orders on Loop."""

    name = "loop"

    def __init__(self, settings: SinkSettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(
            base_url=f"{settings.base_url.rstrip('/')}/api/{settings.api_version}",
            headers={"X-Authorization": settings.api_key.get_secret_value()},
            timeout=settings.timeout_seconds,
            max_connections=settings.max_in_flight,
            transport=transport,
        )

    async def apply(self, change: OrderChange) -> None:
        """Upsert the order, or delete it by external id."""
        if change.op == "delete":
            try:
                await self.request("DELETE", f"/orders/external/{quote(change.external_id, safe='')}")
            except NotFoundError:
                return
            return
        await self.request("PUT", "/orders", json=change.body)
