"""Shared fixtures: one real Kafka broker per session, a topic per test, a sandbox per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from connector import logs
from connector.localkafka import LocalKafka
from connector.sandbox import Sandbox

logs.configure("INFO")

SASL_PASSWORD = "alice-sasl-Secret-42"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A running broker: TEST_KAFKA_BOOTSTRAP_SERVERS if set, else one started by scripts/kafka."""
    given = os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    with LocalKafka() as kafka:
        yield kafka.bootstrap_servers


@pytest.fixture(scope="session")
def sasl_kafka() -> Iterator[LocalKafka]:
    """A second broker with a SASL_PLAINTEXT listener (SCRAM-SHA-256/512, PLAIN) for user alice."""
    with LocalKafka(sasl_user="alice", sasl_password=SASL_PASSWORD) as kafka:
        yield kafka


@pytest.fixture
def topic_name(request: pytest.FixtureRequest) -> str:
    """A topic name unique to this test."""
    base = request.node.name.replace("[", "-").replace("]", "").replace("_", "-")[:60]
    return f"{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    """A sandbox with a generous budget (tests that measure pacing make their own)."""
    async with Sandbox(api_key="test-key", rate_per_minute=60_000) as sb:
        yield sb
