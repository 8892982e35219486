"""The naive baseline: one aiokafka consumer that posts each event in turn (auto-commit, no coalescing,
no pacing; on a 429 it waits a second and tries the same event again)."""

from __future__ import annotations

import argparse
import asyncio
import json

import httpx
from aiokafka import AIOKafkaConsumer


async def main(args: argparse.Namespace) -> None:
    consumer = AIOKafkaConsumer(
        args.topic, bootstrap_servers=args.bootstrap, group_id=args.group, auto_offset_reset="earliest"
    )
    await consumer.start()
    client = httpx.AsyncClient(base_url=f"{args.base_url}/api/v1", headers={"X-Authorization": args.api_key})
    seen = 0
    try:
        async for message in consumer:
            value = json.loads(message.value)
            order = value.get("order", value)
            while (await client.put("/orders", json=order)).status_code == 429:
                await asyncio.sleep(1.0)
            seen += 1
            if args.max_events and seen >= args.max_events:
                break
    finally:
        await client.aclose()
        await consumer.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for name in ("bootstrap", "topic", "group", "base-url", "api-key"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--max-events", type=int, default=0)
    asyncio.run(main(parser.parse_args()))
