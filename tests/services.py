"""Real service processes for tests: started on free loopback ports in temp dirs.

Each service can be stopped and restarted on the same port with the same data, so
tests can inject outages. Processes are always killed at teardown.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.eventually import eventually_blocking


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(
    port: int, *, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Return once 127.0.0.1:port accepts connections; AssertionError after ``timeout``.

    A ``proc`` that exits first fails at once (RuntimeError): it will not start listening.
    """

    def listening() -> bool:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    eventually_blocking(listening, f"a listener on 127.0.0.1:{port}", within=timeout)


def find_binary(name: str, *candidates: str) -> str:
    for c in (*candidates, shutil.which(name)):
        if c and os.path.exists(c):
            return c
    raise FileNotFoundError(f"{name} is not installed (the test command installs it with apt-get)")


class Mosquitto:
    """A real Mosquitto broker on 127.0.0.1, with persistence in its own directory."""

    def __init__(self, directory: Path, port: int | None = None, *, extra: str = "") -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.binary = find_binary("mosquitto", "/usr/sbin/mosquitto")
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf = self.dir / "mosquitto.conf"
        self.log = self.dir / "mosquitto.log"
        # with extra listeners each one carries its own authentication settings
        per_listener = "per_listener_settings true\n" if extra else ""
        self.conf.write_text(
            per_listener + f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            # as root, stay root: the files live in the test's private temp dir
            "user root\n"
            "persistence true\n"
            f"persistence_location {self.dir}/\n"
            "max_queued_messages 0\n"
            "max_inflight_messages 0\n"
            "set_tcp_nodelay true\n"
            "log_type error\nlog_type warning\n"
            f"log_dest file {self.log}\n" + extra
        )

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.proc is None, "already running"
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, proc=self.proc)

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
