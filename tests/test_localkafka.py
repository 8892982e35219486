"""The local broker's launcher ships in the package and says in one line what it needs when that is missing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from connector.errors import BrokerUnavailable
from connector.localkafka import SCRIPT, LocalKafka

ROOT = Path(__file__).resolve().parents[1]


def test_the_launcher_is_package_data() -> None:
    """The launcher and the files it reads sit inside the package, where an install puts them."""
    assert SCRIPT.parent == ROOT / "connector" / "broker"
    for name in ("kafka", "kafka-pom.xml", "kafka-log4j2.properties"):
        assert (SCRIPT.parent / name).is_file()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"connector.broker" = ["kafka", "kafka-pom.xml", "kafka-log4j2.properties"]' in pyproject


def test_demo_without_java_exits_3_with_one_line_saying_so(tmp_path: Path) -> None:
    """No Java: `connector demo` stops before anything else with one line naming what it needs."""
    env = {**os.environ, "JAVA_HOME": str(tmp_path / "no-jdk")}
    result = subprocess.run(
        [sys.executable, "-m", "connector", "demo"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3
    assert result.stderr.splitlines() == [
        f"connector: the local Kafka broker needs Java 17 or later: '{tmp_path}/no-jdk/bin/java' not found "
        "(install a JDK/JRE 17+ or set JAVA_HOME)"
    ]


def test_without_maven_or_cached_jars_one_line_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jars not cached and no Maven on PATH: one line naming Maven and where the jars would go."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sed", "head", "dirname", "java"):
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"{tool} not installed")
        (bin_dir / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("KAFKA_JARS_DIR", str(tmp_path / "jars"))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(BrokerUnavailable) as raised:
        LocalKafka(workdir=tmp_path / "broker").start()
    version = re.search(r"<kafka.version>(.+)</kafka.version>", (SCRIPT.parent / "kafka-pom.xml").read_text())
    assert version is not None
    assert str(raised.value) == (
        f"the local Kafka broker needs Maven (mvn) once, to download Kafka {version.group(1)} into "
        f"{tmp_path}/jars (or set KAFKA_JARS_DIR to a folder holding its jars)"
    )


def test_scripts_kafka_runs_the_packaged_launcher() -> None:
    """The checkout's scripts/kafka is a thin wrapper: same usage text, same exit code."""
    wrapper = subprocess.run([ROOT / "scripts" / "kafka"], capture_output=True, text=True)
    direct = subprocess.run(["bash", SCRIPT], capture_output=True, text=True)
    assert wrapper.returncode == direct.returncode == 2
    assert wrapper.stderr == direct.stderr
    assert "kafka start DIR PORT [PROPS]" in wrapper.stderr
