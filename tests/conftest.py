"""Shared fixtures: one real Kafka broker per run, a topic per test, a sandbox per test.

With pytest-xdist the brokers are started once, by the controller process, before the workers start
(they inherit their addresses through the environment), and stopped after the last test.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from connector import logs
from connector.localkafka import LocalKafka, free_port
from connector.sandbox import Sandbox
from tests.helpers import kafka_broker

logs.configure("INFO")

SASL_PASSWORD = "alice-sasl-Secret-42"
_STARTED: list[LocalKafka] = []


@dataclass(frozen=True)
class SaslBroker:
    """The SASL broker's two listeners."""

    bootstrap_servers: str
    sasl_bootstrap_servers: str


def pytest_configure(config: pytest.Config) -> None:
    """In the controller of a run that includes integration tests, start both brokers (at once) and
    hand their addresses to every worker through the environment."""
    if hasattr(config, "workerinput") or "not integration" in (config.getoption("markexpr") or ""):
        return
    paths = [a.split("::")[0] for a in config.args]
    if paths and not any("integration" in p or p.rstrip("/") in (".", "tests") for p in paths):
        return  # only unit tests or the simulation asked for
    if os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("TEST_KAFKA_SASL"):
        return
    plain, sasl = LocalKafka(), LocalKafka(sasl_user="alice", sasl_password=SASL_PASSWORD)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda k: k.start(), (plain, sasl)))
    _STARTED.extend((plain, sasl))
    os.environ["TEST_KAFKA_BOOTSTRAP_SERVERS"] = plain.bootstrap_servers
    os.environ["TEST_KAFKA_SASL"] = json.dumps([sasl.bootstrap_servers, sasl.sasl_bootstrap_servers])


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop what :func:`pytest_configure` started."""
    while _STARTED:
        _STARTED.pop().stop()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A running broker: TEST_KAFKA_BOOTSTRAP_SERVERS if set, else one started here."""
    with kafka_broker() as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def sasl_kafka() -> Iterator[LocalKafka | SaslBroker]:
    """A second broker with a SASL_PLAINTEXT listener (SCRAM-SHA-256/512, PLAIN) for user alice."""
    given = os.environ.get("TEST_KAFKA_SASL")
    if given:
        yield SaslBroker(*json.loads(given))
        return
    with LocalKafka(sasl_user="alice", sasl_password=SASL_PASSWORD) as kafka:
        yield kafka


REGISTRY_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "registry"


@pytest.fixture(scope="session")
def schema_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Confluent-compatible schema registry's base URL: TEST_SCHEMA_REGISTRY_URL if set, else
    Apicurio Registry started here by ``scripts/registry`` (built once by ``scripts/test``; started in
    the one worker that needs it). Skipped, with the script's reason, only when it cannot run."""
    given = os.environ.get("TEST_SCHEMA_REGISTRY_URL")
    if given:
        yield given.rstrip("/")
        return
    folder = tmp_path_factory.mktemp("registry")
    port = free_port()
    started = subprocess.run(
        ["bash", str(REGISTRY_SCRIPT), "start", str(folder), str(port)],
        capture_output=True,
        text=True,
        check=False,
    )
    if started.returncode != 0:
        reason = (started.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"no schema registry could be started (scripts/registry start: {reason})")
    try:
        yield f"http://127.0.0.1:{port}/apis/ccompat/v6"
    finally:
        subprocess.run(["bash", str(REGISTRY_SCRIPT), "stop", str(folder)], check=False)


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
