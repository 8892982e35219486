"""Start and stop the project's local Kafka broker (``connector/broker/kafka``) from Python: tests, the
demo and benchmarks. Needs bash, Java 17+ and, until the broker jars are cached, Maven."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

from connector.errors import BrokerUnavailable

SCRIPT = Path(__file__).resolve().parent / "broker" / "kafka"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LocalKafka:
    """A single-node KRaft broker in a temporary directory, stopped on exit."""

    def __init__(
        self,
        workdir: str | Path | None = None,
        extra_properties: str = "",
        sasl_user: str | None = None,
        sasl_password: str | None = None,
    ) -> None:
        if not SCRIPT.exists():
            raise FileNotFoundError(f"{SCRIPT} not found: the package was installed without its data files")
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="connector-kafka-")
        self.workdir = Path(workdir or self._tmp.name)  # type: ignore[union-attr]
        self.port = free_port()
        self._extra = extra_properties
        self._sasl = (sasl_user, sasl_password) if sasl_user and sasl_password else None
        self.sasl_port = free_port() if self._sasl else None

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` of the broker's plaintext listener."""
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap_servers(self) -> str:
        """``host:port`` of the SASL_PLAINTEXT listener (SCRAM-SHA-256/512 and PLAIN)."""
        return f"127.0.0.1:{self.sasl_port}"

    def start(self) -> None:
        """Fetch the jars if needed, format and start the broker; returns once it serves.

        Raises :class:`BrokerUnavailable` with one line saying what is missing (bash, Java 17+, Maven
        while the jars are not cached) or that the broker did not start."""
        bash = shutil.which("bash")
        if bash is None:
            raise BrokerUnavailable("the local Kafka broker needs bash on PATH")
        env = os.environ.copy()
        env["KAFKA_CONTROLLER_PORT"] = str(free_port())
        check = subprocess.run([bash, str(SCRIPT), "check"], env=env, capture_output=True, text=True)
        if check.returncode != 0:
            lines = check.stderr.strip().splitlines()
            raise BrokerUnavailable(lines[-1] if lines else f"{SCRIPT} check failed")
        args = [bash, str(SCRIPT), "start", str(self.workdir), str(self.port)]
        if self._extra:
            props = self.workdir / "extra.properties"
            self.workdir.mkdir(parents=True, exist_ok=True)
            props.write_text(self._extra)
            args.append(str(props))
        if self._sasl:
            env.update(KAFKA_SASL_PORT=str(self.sasl_port), KAFKA_SASL_USER=self._sasl[0],
                       KAFKA_SASL_PASSWORD=self._sasl[1])  # fmt: skip
        if subprocess.run(args, check=False, env=env).returncode != 0:
            raise BrokerUnavailable("the local Kafka broker did not start (its launcher said why above)")

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and remove its directory."""
        subprocess.run([shutil.which("bash") or "bash", str(SCRIPT), "stop", str(self.workdir)], check=False)
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
