"""Simulators built from a gateway config (``metrogate sim`` and ``metrogate demo``).

The composition root for simulation: it turns the same device and point
definitions the gateway reads into simulated instruments. Only the CLI imports it;
the gateway proper never depends on :mod:`simulators`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from drivers.modbus_codec import DataType
from gateway.config_modbus import ModbusTcpDevice
from gateway.config_schema import Config
from simulators.modbus_device import ModbusTcpSimulator, SimPoint
from simulators.values import build_generator


class SimConfigError(ValueError):
    """A point's ``sim:`` setting is invalid; the message names the device and point."""


@dataclass(frozen=True)
class RunningSim:
    """One listening simulator and the devices it serves."""

    kind: str
    endpoint: str
    devices: tuple[str, ...]
    server: object


def _default(dtype: DataType | None) -> bool | str | int:
    if dtype is DataType.BOOL:
        return False
    if dtype is DataType.STRING:
        return ""
    return 0


def modbus_sim_points(dev: ModbusTcpDevice) -> list[SimPoint]:
    out = []
    for point in dev.points:
        try:
            gen = build_generator(point.sim, _default(point.type))
        except ValueError as exc:
            raise SimConfigError(f"devices {dev.id} point {point.id}: sim: {exc}") from None
        out.append(SimPoint(point.point_spec(dev.order), gen))
    return out


@asynccontextmanager
async def run_simulators(
    config: Config, *, free_ports: bool = False
) -> AsyncIterator[list[RunningSim]]:
    """Serve every simulatable device of ``config`` on 127.0.0.1.

    Modbus TCP devices sharing a host:port share one simulated server (one unit
    each). With ``free_ports`` each server binds a free port and ``config`` is
    updated in place to point at it — what the demo and tests do.
    """
    groups: dict[tuple[str, int], list[ModbusTcpDevice]] = defaultdict(list)
    for dev in config.devices:
        if isinstance(dev, ModbusTcpDevice) and dev.enabled:
            groups[(dev.host, dev.port)].append(dev)
    running: list[RunningSim] = []
    async with AsyncExitStack() as stack:
        for (_host, port), devs in groups.items():
            units = {d.unit: modbus_sim_points(d) for d in devs}
            holes = {d.unit: [(h.table, h.start, h.end + 1) for h in d.holes] for d in devs}
            sim = ModbusTcpSimulator(
                units,
                port=0 if free_ports else port,
                holes=holes,
                name="+".join(d.id for d in devs),
            )
            await stack.enter_async_context(sim)
            for d in devs:
                if free_ports:
                    d.host, d.port = "127.0.0.1", sim.port
            running.append(
                RunningSim("modbus_tcp", f"127.0.0.1:{sim.port}", tuple(d.id for d in devs), sim)
            )
        serial = await _serial_sims(config, stack)
        running += serial
        yield running


async def _serial_sims(config: Config, stack: AsyncExitStack) -> list[RunningSim]:
    try:
        from gateway.config_serial import run_serial_simulators
    except ImportError:
        return []
    found: list[RunningSim] = []
    for kind, endpoint, devices, server in await stack.enter_async_context(
        run_serial_simulators(config)
    ):
        found.append(RunningSim(kind, endpoint, tuple(devices), server))
    return found
