"""Whole-system fixtures: the daemon as a subprocess on PostgreSQL and RabbitMQ.

The SMTP server, the push receiver, the broker names and the empty PostgreSQL
database are the daemon tests' fixtures (``tests/daemon/conftest.py``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from daemon.conftest import (  # noqa: F401 - fixtures shared with the daemon tests
    PushReceiver,
    RabbitMQ,
    SmtpServer,
    free_port,
    push_receiver,
    rabbitmq,
    smtp_server,
)


@dataclass
class Daemon:
    """``fmn-daemon run`` in a subprocess; its log goes to a file."""

    config: Path
    fm_config: Path
    http_port: int
    log: Path
    extra: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    runs: int = 0
    logs: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, *extra: str, wait_ready: bool = True) -> None:
        assert self.process is None or self.process.poll() is not None
        self.runs += 1
        log = self.log.with_suffix(f".{self.runs}.log")
        self.logs.append(str(log))
        with log.open("wb") as handle:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "fmn_daemon.cli",
                    "--config",
                    str(self.config),
                    "run",
                    "--fedora-messaging-config",
                    str(self.fm_config),
                    *self.extra,
                    *extra,
                ],
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )
        if wait_ready:
            self.wait_ready()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the daemon exited ({self.process.returncode}):\n{self.output()}"
                )
            try:
                with urllib.request.urlopen(f"{self.base_url}/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"the daemon was not ready within {timeout}s:\n{self.output()}")

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(
                    f"the daemon did not stop on SIGTERM:\n{self.output()}"
                ) from None
        return int(self.process.returncode)

    def output(self) -> str:
        return "\n".join(Path(p).read_text(errors="replace") for p in self.logs if Path(p).exists())


@pytest.fixture
def make_daemon(
    tmp_path: Path,
    rabbitmq: RabbitMQ,  # noqa: F811 - the fixture imported above
) -> Iterator[Callable[..., Daemon]]:
    """Builds a ``Daemon`` from fmn settings (TOML text); stops it at the end of the test."""
    daemons: list[Daemon] = []

    def make(database_url: str, settings: str = "", *extra: str) -> Daemon:
        port = free_port()
        config = tmp_path / f"fmn-{len(daemons)}.toml"
        config.write_text(
            f"database_url = {json.dumps(database_url)}\n{settings}\n"
            f'[http]\nport = {port}\npublic_url = "http://127.0.0.1:{port}"\n'
            f'secret_key = "e2e-secret"\n',
            encoding="utf-8",
        )
        daemon = Daemon(
            config, rabbitmq.config_path, port, tmp_path / f"daemon-{len(daemons)}", tuple(extra)
        )
        daemons.append(daemon)
        return daemon

    yield make
    for daemon in daemons:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.1)
