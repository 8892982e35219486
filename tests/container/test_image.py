"""The Docker image, built from the unchanged Dockerfile and run with podman against the test broker.

Deselected by default (pyproject's addopts); `.ci/run` runs it as its own step:
``pytest -m container tests/container``. ``scripts/container-base`` installs podman and builds the
stand-in ``python:3.11-slim`` the Dockerfile starts from; the test is skipped only where podman cannot be
installed (that script's exit status 77).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from connector.localkafka import free_port
from connector.samples import make_stream
from connector.sandbox import Sandbox
from tests.helpers import committed_offsets, create_topics, end_offsets, produce, read_topic, wait_until
from tests.procs import connector_env

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[2]
PODMAN = ["podman", "--cgroup-manager=cgroupfs", "--runtime", "runc"]
TAG = "localhost/orders-connector:test"
POISON = (b"poison-json", b"\x00not JSON {")


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``podman <args>`` with the flags these machines need; never raises on a non-zero exit."""
    return subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False)


async def apodman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``podman`` off the event loop, so the sandbox keeps answering the container meanwhile."""
    return await asyncio.to_thread(podman, *args, timeout=timeout)


@dataclass
class Built:
    tag: str
    seconds: float
    size: int
    base_size: int
    config: dict[str, Any]
    healthcheck: dict[str, Any]


@pytest.fixture(scope="module")
def image() -> Built:
    """The image built from scratch (no layer cache) from the repository's Dockerfile."""
    base = subprocess.run([str(ROOT / "scripts/container-base")], capture_output=True, text=True, check=False)
    if base.returncode == 77:
        pytest.skip(f"podman cannot be installed here: {base.stderr.strip()}")
    assert base.returncode == 0, f"scripts/container-base failed:\n{base.stderr[-3000:]}"
    podman("rmi", "--force", "--ignore", TAG)
    started = time.monotonic()
    build = podman("build", "--network", "host", "--pull=never", "--layers=false", "--no-cache",
                   "--format", "docker", "--tag", TAG, str(ROOT), timeout=600)  # fmt: skip
    seconds = time.monotonic() - started
    assert build.returncode == 0, f"podman build failed:\n{build.stdout[-3000:]}\n{build.stderr[-3000:]}"
    [info] = json.loads(podman("image", "inspect", TAG).stdout)
    [base_info] = json.loads(podman("image", "inspect", "python:3.11-slim").stdout)
    built = Built(
        TAG, seconds, info["Size"], base_info["Size"], info["Config"], info.get("Healthcheck") or {}
    )
    print(f"\nimage {TAG}: built in {seconds:.1f}s, {built.size / 1e6:.0f} MB "
          f"({(built.size - built.base_size) / 1e6:.0f} MB over the {built.base_size / 1e6:.0f} MB base)")  # fmt: skip
    return built


def test_image_builds_small_and_quickly_with_its_promises_in_the_config(image: Built) -> None:
    """Built in under 3 minutes (18-30 s measured); under 100 MB over the base (the app and its
    dependencies: 36 MB measured; a build stage or toolchain carried over would not fit); non-root,
    SIGTERM and the `connector check` HEALTHCHECK kept in the image's config."""
    assert image.seconds < 180, f"build took {image.seconds:.0f}s"
    assert 100e6 < image.size < 400e6, f"image is {image.size / 1e6:.0f} MB"
    assert image.size - image.base_size < 100e6, (
        f"{(image.size - image.base_size) / 1e6:.0f} MB over the base"
    )
    assert image.config["User"] == "10001"
    assert image.config["StopSignal"] == "SIGTERM"
    assert image.healthcheck.get("Test") == ["CMD", "connector", "check"]
    assert image.config["Entrypoint"] == ["connector"]
    assert image.config["Cmd"] == ["run"]


async def test_container_syncs_orders_passes_its_health_check_and_drains_on_sigterm(
    image: Built, kafka_bootstrap: str, topic_name: str, sandbox: Sandbox
) -> None:
    """The image run as a user would (`--network host`, CONNECTOR_* variables): 400 events over 100
    orders and a poison record; every order ends at its latest state, offsets are committed to the log
    end, the poison is dead-lettered; `connector check` and the image's HEALTHCHECK pass; it runs as a
    non-root user; `podman stop` (SIGTERM) drains and exits 0."""
    stream = make_stream(400, 100, seed=12)
    await create_topics(kafka_bootstrap, {topic_name: 4, f"{topic_name}.dlq": 1})
    await produce(kafka_bootstrap, topic_name, [*stream.events[:200], POISON, *stream.events[200:]])
    port = free_port()
    env = connector_env(
        kafka_bootstrap, topic_name, sandbox.url, METRICS__HOST="127.0.0.1", METRICS__PORT=port
    )
    name = f"orders-connector-test-{uuid.uuid4().hex[:8]}"
    flags = [f"--env={k}={v}" for k, v in sorted(env.items()) if k.startswith("CONNECTOR_")]
    # The image's HEALTHCHECK is run on demand below (`podman healthcheck run`): podman's own timer for
    # it needs systemd, which these machines lack (it logs that and runs the container regardless).
    run = await apodman("run", "--detach", "--name", name, "--network", "host", *flags, image.tag, "run")
    assert run.returncode == 0, run.stderr

    async def logs() -> str:
        return (await apodman("logs", name)).stdout

    try:
        try:
            await wait_until(lambda: sandbox.holds(stream.latest), timeout=120, interval=0.5)
            ends = await end_offsets(kafka_bootstrap, topic_name)

            async def all_committed() -> bool:
                return await committed_offsets(kafka_bootstrap, f"{topic_name}-group", topic_name) == ends

            await wait_until(all_committed, timeout=30, interval=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; container log tail:\n{(await logs())[-4000:]}") from None

        check = await apodman("exec", name, "connector", "check")
        assert check.returncode == 0, check.stderr
        ready = await apodman("exec", name, "connector", "check", "--ready")
        assert ready.returncode == 0, ready.stderr
        health = await apodman("healthcheck", "run", name)
        assert health.returncode == 0, health.stdout + health.stderr
        uid = await apodman("exec", name, "id", "-u")
        assert uid.returncode == 0
        assert int(uid.stdout) != 0
        assert (await apodman("exec", name, "id", "-un")).stdout.strip() == "connector"
        leftovers = await apodman("exec", name, "ls", "-d", "/wheels", "/src")  # ls prints those that exist
        assert leftovers.stdout == "", f"build leftovers in the image: {leftovers.stdout}"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:  # noqa: ASYNC210
            metrics = response.read().decode()
        assert "connector_events_consumed_total 401.0" in metrics

        started = time.monotonic()
        stop = await apodman("stop", "--time", "30", name, timeout=60)
        took = time.monotonic() - started
        assert stop.returncode == 0, stop.stderr
        state = json.loads((await apodman("inspect", "--format", "{{json .State}}", name)).stdout)
        text = await logs()
    finally:
        await apodman("rm", "--force", "--ignore", name)

    print(
        f"\ncontainer: synced {len(stream.latest)} orders; SIGTERM to exit {state['ExitCode']} in {took:.1f}s"
    )
    assert state["ExitCode"] == 0, text[-4000:]
    assert not state["OOMKilled"]
    assert took < 25, f"podman stop took {took:.1f}s (30 s means it had to SIGKILL)"
    events = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    by_name = {e["event"]: e for e in events}
    assert by_name["shutdown_requested"]["signal"] == "SIGTERM"
    assert "unresolved" in by_name["draining"]
    assert by_name["stopped"]["unresolved"] == 0

    # The final state, after the container is gone.
    assert sandbox.holds(stream.latest)
    assert len(sandbox.store.orders) == len(stream.latest) == 100
    assert await committed_offsets(kafka_bootstrap, f"{topic_name}-group", topic_name) == ends
    assert sum(ends.values()) == 401
    dead = await read_topic(kafka_bootstrap, f"{topic_name}.dlq", expect=1)
    assert [(r.key, r.value) for r in dead] == [POISON]
