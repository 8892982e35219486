"""`connector run` refuses bad configuration with one specific line, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from connector.localkafka import free_port


def run(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("CONNECTOR_")}
    return subprocess.run(
        [sys.executable, "-m", "connector", "run", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CONNECTOR_SINK__RATE_LIMIT": "5"}, "unknown setting CONNECTOR_SINK__RATE_LIMIT"),
        ({"CONNECTOR_SINK__RATE_LIMIT_PER_SECOND": "fast"}, "sink.rate_limit_per_second"),
        ({"CONNECTOR_METRICS__PORT": "70000"}, "metrics.port"),
        ({"CONNECTOR_KAFKA__TOPICS": "[broken"}, "kafka.topics"),
    ],
)
def test_bad_configuration_exits_2_with_one_line(env: dict[str, str], expected: str) -> None:
    """Unknown key or wrong type: exit 2, one line on stderr naming the setting."""
    result = run(env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    """--config naming no file is a configuration error."""
    result = run({}, "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "config file not found" in result.stderr


def test_unreachable_broker_exits_3_after_a_bounded_wait() -> None:
    """No broker: exit 3 after kafka.start_timeout_seconds, with one line naming the broker."""
    port = free_port()
    started = time.monotonic()
    result = run(
        {
            "CONNECTOR_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
            "CONNECTOR_KAFKA__START_TIMEOUT_SECONDS": "2",
            "CONNECTOR_METRICS__PORT": "0",
            "CONNECTOR_LOG_LEVEL": "ERROR",
        }
    )
    assert result.returncode == 3
    assert time.monotonic() - started < 30
    lines = result.stderr.strip().splitlines()
    assert (
        lines[-1]
        == f"connector: Kafka broker 127.0.0.1:{port} unreachable after 2s ({lines[-1].split('(', 1)[1]}"
    )
    assert "Traceback" not in result.stderr


def test_a_setting_given_by_its_old_name_is_read_and_logged() -> None:
    """``connector run`` logs ``setting_renamed`` (JSON, on stdout with its other lines) before it
    starts; ``connector config show`` keeps its answer clean and says it on stderr."""
    old = {"CONNECTOR_SINK__SETTLE_SECONDS": "25", "CONNECTOR_SINK__LINGER_SECONDS": "1"}
    result = run(
        {
            **old,
            "CONNECTOR_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "CONNECTOR_KAFKA__START_TIMEOUT_SECONDS": "1",
            "CONNECTOR_METRICS__PORT": "0",
        }
    )
    assert result.returncode == 3
    renamed = [json.loads(line) for line in result.stdout.splitlines() if "setting_renamed" in line]
    assert {(line["old"], line["new"]) for line in renamed} == {
        ("CONNECTOR_SINK__SETTLE_SECONDS", "CONNECTOR_KAFKA__SETTLE_SECONDS"),
        ("CONNECTOR_SINK__LINGER_SECONDS", "CONNECTOR_DELIVERY__LINGER_SECONDS"),
    }
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("CONNECTOR_")}
    shown = subprocess.run(
        [sys.executable, "-m", "connector", "config", "show"],
        env={**clean, **old},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    settings = json.loads(shown.stdout)
    assert (settings["kafka"]["settle_seconds"], settings["delivery"]["linger_seconds"]) == (25, 1)
    assert shown.stderr.count("setting_renamed") == 2


def test_validate_prints_each_error_and_exits_1(tmp_path: Path) -> None:
    """`connector validate FILE` prints line, stage, field path and rule; exit 1 if any fail."""
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"external_id": "ok-1"}\n'
        "not json\n"
        '{"event_type": "order.updated", "order": {"external_id": "x", "status": "open"}}\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "connector", "validate", str(events)], capture_output=True, text=True
    )
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("line 2: decode: value is not JSON")
    assert lines[1].startswith("line 3: validate: invalid order: order.status: Input should be 'active'")
    assert lines[-1] == "1 valid, 2 invalid"


def test_validate_reads_standard_input_and_exits_0_when_all_pass() -> None:
    """`connector validate -` reads stdin."""
    result = subprocess.run(
        [sys.executable, "-m", "connector", "validate", "--kind", "shoplazza", "-"],
        input='{"id": "o-1", "note": "hi"}\n',
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0
    assert result.stdout.strip() == "1 valid, 0 invalid"
