"""Building drivers from device configs: the registry of driver kinds.

The registry maps a config ``driver`` name to a builder. Serial drivers share bus
owners, so all drivers are built together inside one :class:`AsyncExitStack` that
the runtime holds for its lifetime.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

from drivers.base import Clock, Driver, utc_now_us
from drivers.modbus_tcp import ModbusTcpDriver
from gateway.config.checks import modbus_plan
from gateway.config.models.modbus import ModbusTcpDevice
from gateway.config.schema import Config


def build_modbus_tcp(dev: ModbusTcpDevice, clock: Clock) -> Driver:
    return ModbusTcpDriver(
        dev.id,
        dev.host,
        dev.port,
        dev.unit,
        modbus_plan(dev),
        timeout=dev.timeout,
        rtu_framing=dev.framing == "rtu",
        clock=clock,
    )


BUILDERS: dict[str, Callable[[Any, Clock], Driver]] = {"modbus_tcp": build_modbus_tcp}
"""Drivers that need nothing shared; serial drivers come from gateway.config.models.serial."""


async def build_drivers(
    config: Config, stack: AsyncExitStack, *, clock: Clock = utc_now_us, only: str | None = None
) -> dict[str, Driver]:
    """One driver per enabled device (or just ``only``), entered on ``stack``."""
    devices = [d for d in config.devices if d.enabled and (only is None or d.id == only)]
    drivers: dict[str, Driver] = {}
    serial = [d for d in devices if d.driver not in BUILDERS]
    for dev in devices:
        if dev.driver in BUILDERS:
            drivers[dev.id] = await stack.enter_async_context(BUILDERS[dev.driver](dev, clock))
    if serial:
        from gateway.config.models.serial import build_serial_drivers

        built = await stack.enter_async_context(build_serial_drivers(config.buses, serial, clock))
        for dev_id, drv in built.items():
            drivers[dev_id] = await stack.enter_async_context(drv)
    return {d.id: drivers[d.id] for d in devices if d.id in drivers}
