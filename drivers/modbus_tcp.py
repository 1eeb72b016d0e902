"""Modbus TCP driver (pymodbus async client, one connection per device).

Reconnection is the caller's business (the device poller backs off with
:class:`drivers.backoff.Backoff`): the pymodbus client's own automatic reconnect is
disabled so that one back-off policy governs every driver.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from drivers.base import Clock, DeviceUnreachable, Sample, utc_now_us
from drivers.modbus_common import PlanExecutor
from drivers.modbus_plan import Request


class ModbusTcpDriver:
    """One Modbus TCP device (or one unit id behind a TCP gateway)."""

    def __init__(
        self,
        device_id: str,
        host: str,
        port: int,
        unit: int,
        requests: list[Request],
        *,
        timeout: float,
        rtu_framing: bool = False,
        clock: Clock = utc_now_us,
    ) -> None:
        self.device_id = device_id
        scheme = "rtu-over-tcp" if rtu_framing else "tcp"
        self.endpoint = f"{scheme}://{host}:{port}/{unit}"
        self._host, self._port, self._timeout = host, port, timeout
        self._rtu = rtu_framing
        self._exec = PlanExecutor(
            device_id, self.endpoint, unit, requests, timeout=timeout, clock=clock
        )
        self._client: AsyncModbusTcpClient | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._drop()

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _connected(self) -> AsyncModbusTcpClient:
        if self._client is not None and self._client.connected:
            return self._client
        self._drop()
        from pymodbus import FramerType

        client = AsyncModbusTcpClient(
            self._host,
            port=self._port,
            framer=FramerType.RTU if self._rtu else FramerType.SOCKET,
            timeout=self._timeout,
            retries=0,
            reconnect_delay=0,
            name=self.device_id,
        )
        try:
            ok = await client.connect()
        except (OSError, ModbusException) as exc:
            client.close()
            raise DeviceUnreachable(self.device_id, self.endpoint, str(exc)) from exc
        if not ok:
            client.close()
            raise DeviceUnreachable(self.device_id, self.endpoint, "connection refused")
        self._client = client
        return client

    async def read(self) -> list[Sample]:
        client = await self._connected()
        try:
            return await self._exec.run(client)
        except DeviceUnreachable:
            self._drop()
            raise

    def describe_plan(self) -> list[str]:
        return self._exec.describe()

    def identity(self) -> dict[str, str]:
        return {}
