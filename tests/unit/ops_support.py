"""Shared pieces of the ops tests: a notify socket, a driver that can hang, a clock."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from types import TracebackType
from typing import Self

from drivers.base import Quality, Sample
from gateway.config.loader import LoadedConfig, load_config


class NotifySocket:
    """A real AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.setblocking(False)

    def messages(self) -> list[str]:
        """Every datagram received so far (non-blocking)."""
        out = []
        while True:
            try:
                out.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return out

    def close(self) -> None:
        self.sock.close()


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class HangableDriver:
    """A driver (satisfies drivers.base.Driver) whose read can be made to hang forever."""

    def __init__(self, device_id: str, points: list[str]) -> None:
        self.device_id = device_id
        self.endpoint = f"test://{device_id}"
        self.points = points
        self.hang = False
        self.reads = 0
        self._never = asyncio.Event()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def read(self) -> list[Sample]:
        self.reads += 1
        if self.hang:
            await self._never.wait()  # the injected hang: a read that never returns
        return [Sample(p, 1.5, 1.5, Quality.GOOD, None, 1_700_000_000_000_000) for p in self.points]

    def describe_plan(self) -> list[str]:
        return ["one request"]

    def identity(self) -> dict[str, str]:
        return {}


def one_device_config(
    tmp: Path, *, poll: str = "1s", extra: str = "", devices: int = 1
) -> LoadedConfig:
    """A valid gateway config with Modbus TCP devices (never contacted by unit tests)."""
    devs = "".join(
        f"  - id: dev{i}\n    driver: modbus_tcp\n    host: 127.0.0.1\n    port: 1502\n"
        f"    unit: {i}\n"
        f"    poll: {poll}\n    timeout: 100ms\n    points:\n"
        "      - {id: p0, table: holding, address: 0, type: float32, unit: bar}\n"
        for i in range(1, devices + 1)
    )
    path = tmp / "gateway.yaml"
    path.write_text(
        f"gateway: {{id: gw1, site: s1, state_dir: {tmp / 'state'}}}\n{extra}devices:\n{devs}"
    )
    return load_config(path)
