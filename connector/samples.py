"""Sample order events for the demo, the tests and the benchmarks."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

BASE_TIME = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)


def order_body(external_id: str, version: int, rng: random.Random | None = None) -> dict[str, Any]:
    """A valid Loop upsert body; ``version`` drives ``updated_at`` and the contents."""
    rng = rng or random.Random(f"{external_id}:{version}")
    qty = rng.randint(1, 5)
    price = rng.randint(500, 20_000)
    return {
        "external_id": external_id,
        "name": f"#{external_id}",
        "status": "active",
        "channel": "online",
        "taxes_included": True,
        "total_price": {"amount": qty * price, "currency_code": "USD"},
        "line_items": [
            {
                "external_id": f"{external_id}-li-1",
                "product": {"id": rng.randint(1, 10_000)},
                "quantity": qty,
                "unit_price": {"amount": price, "currency_code": "USD"},
                "taxable": True,
            }
        ],
        "customer": {"external_id": f"cust-{rng.randint(1, 5000)}"},
        "tags": [f"v{version}"],
        "created_at": BASE_TIME.isoformat(),
        "updated_at": (BASE_TIME + timedelta(seconds=version)).isoformat(),
    }


def envelope(body: dict[str, Any], version: int, event_type: str = "order.updated") -> bytes:
    """The JSON envelope of DESIGN.md around ``body``."""
    return json.dumps(
        {
            "event_id": f"{body['external_id']}:{version}",
            "event_type": event_type,
            "occurred_at": body["updated_at"],
            "order": body,
        }
    ).encode()


@dataclass
class Stream:
    """A stream of events over ``orders`` keys, with duplicates; ``latest`` is what the API must end with."""

    events: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    duplicates: int = 0


def make_stream(
    events: int, orders: int, seed: int = 7, duplicate_rate: float = 0.1, prefix: str = "order"
) -> Stream:
    """``events`` valid events over ``orders`` external ids, ``duplicate_rate`` of them resent as is."""
    rng = random.Random(seed)
    out = Stream()
    versions: dict[str, int] = {}
    last: dict[str, bytes] = {}
    for i in range(events):
        key = f"{prefix}-{i % orders if i < orders else rng.randrange(orders):05d}"
        if key in last and rng.random() < duplicate_rate:
            out.events.append((key.encode(), last[key]))
            out.duplicates += 1
            continue
        version = versions.get(key, 0) + 1
        versions[key] = version
        body = order_body(key, version)
        value = envelope(body, version, "order.created" if version == 1 else "order.updated")
        last[key] = value
        out.latest[key] = body
        out.events.append((key.encode(), value))
    return out
