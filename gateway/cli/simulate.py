"""Simulators built from a gateway config (``metrogate sim`` and ``metrogate demo``).

The composition root for simulation: it turns the same device and point
definitions the gateway reads into simulated instruments. Only the CLI imports it;
the gateway proper never depends on :mod:`simulators`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from drivers.modbus_codec import DataType, PointSpec, raw_from_engineering
from gateway.config.models.modbus import ModbusTcpDevice
from gateway.config.models.serial import (
    Dlt645Device,
    ModbusAsciiDevice,
    ModbusRtuDevice,
    MtSicsDevice,
    ToledoDevice,
)
from gateway.config.schema import Config
from simulators.modbus_device import ModbusTcpSimulator, SimPoint
from simulators.pty import Responder, SimLine
from simulators.serial_instruments import Dlt645Sim, MtSicsSim, RtuBusSim, RtuSlave, ToledoSim
from simulators.values import build_generator

log = logging.getLogger("metrogate.simulate")

SERIAL_KINDS = (ModbusRtuDevice, ModbusAsciiDevice, MtSicsDevice, ToledoDevice, Dlt645Device)


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
    """One pseudo-terminal per bus, answering for every device on it.

    The bus's ``port`` is pointed at the pty (the simulated line is always local).
    Values: Modbus points follow their ``sim:`` setting; a balance shows about
    100 g, a scale 12.34 kg, a DL/T 645 meter a growing energy count with plausible
    voltage and current. Generic ASCII instruments cannot be derived from their
    regular expression and are not simulated.
    """
    by_bus: dict[str, list[object]] = defaultdict(list)
    for dev in config.devices:
        if dev.enabled and isinstance(dev, SERIAL_KINDS):
            by_bus[dev.bus].append(dev)
    found: list[RunningSim] = []
    updaters: list[Callable[[float], None]] = []
    for bus in config.buses:
        devs = by_bus.get(bus.id, [])
        built = _responder(devs)
        if built is None:
            continue
        responder, update = built
        line = stack.enter_context(SimLine(responder))
        bus.port = line.path
        updaters.append(update)
        ids = tuple(str(getattr(d, "id", "?")) for d in devs)
        found.append(RunningSim(str(getattr(devs[0], "driver", "serial")), line.path, ids, line))
    if updaters:
        await stack.enter_async_context(_background(_refresh(updaters), "serial-sim-values"))
    return found


@asynccontextmanager
async def _background(work: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    """Run ``work`` while the block runs; cancel it when the block ends."""
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(work, name=name)
        try:
            yield
        finally:
            task.cancel()


async def _refresh(updaters: list[Callable[[float], None]]) -> None:
    t0 = time.monotonic()
    while True:
        for update in updaters:
            update(time.monotonic() - t0)
        await asyncio.sleep(0.25)


def _responder(devs: list[object]) -> tuple[Responder, Callable[[float], None]] | None:
    kinds = {type(d) for d in devs}
    if not devs:
        return None
    if len(kinds) > 1:
        # one simulated line speaks one protocol; a real line should too
        names = ", ".join(sorted(str(getattr(d, "id", "?")) for d in devs))
        log.warning("bus of %s mixes protocols: not simulated", names)
        return None
    first = devs[0]
    if isinstance(first, ModbusRtuDevice | ModbusAsciiDevice):
        slaves: dict[int, RtuSlave] = {}
        gens: list[tuple[RtuSlave, PointSpec, object]] = []
        for d in devs:
            assert isinstance(d, ModbusRtuDevice | ModbusAsciiDevice)
            specs = d.specs()
            slave = RtuSlave(specs)
            slaves[d.unit] = slave
            for point, spec in zip(d.points, specs, strict=True):
                gens.append((slave, spec, build_generator(point.sim, _default(point.type))))
        framing: Literal["rtu", "ascii"] = (
            "ascii" if isinstance(first, ModbusAsciiDevice) else "rtu"
        )

        def update_modbus(t: float) -> None:
            for slave, spec, gen in gens:
                slave.set(spec.id, raw_from_engineering(spec, gen.value(t)))  # type: ignore[attr-defined]

        update_modbus(0.0)
        return RtuBusSim(slaves, framing=framing), update_modbus
    if isinstance(first, MtSicsDevice):
        balance = MtSicsSim(weight=100.0, unit=first.points[0].unit or "g")

        def update_balance(t: float) -> None:
            balance.weight = round(100.0 + 0.05 * math.sin(t / 3), 2)

        return balance, update_balance
    if isinstance(first, ToledoDevice):
        scale = ToledoSim(weight=12.34)
        return scale, lambda t: None
    if isinstance(first, Dlt645Device):
        meters: dict[str, dict[int, int]] = {}
        for d in devs:
            assert isinstance(d, Dlt645Device)
            meters[d.address] = {p.point().di: 0 for p in d.points}
        meter = Dlt645Sim(meters)

        def update_meters(t: float) -> None:
            for values in meter.values.values():
                for di in values:
                    values[di] = _meter_value(di, t)

        update_meters(0.0)
        return meter, update_meters
    return None


def _meter_value(di: int, t: float) -> int:
    """BCD digits of a plausible single-phase meter reading at time ``t``."""
    current = 5000 + int(500 * math.sin(t / 7))  # XXX.XXX A
    match di:
        case 0x00010000:  # forward active energy, XXXXXX.XX kWh
            return 123456 + int(t * 10)
        case 0x02010100:  # phase-A voltage, XXX.X V
            return 2300 + int(20 * math.sin(t / 5))
        case 0x02020100:
            return current
        case 0x02030000:  # active power, XX.XXXX kW
            return current * 23 // 100 * 10
        case 0x02060000:  # power factor, X.XXX
            return 985
        case 0x02800002:  # frequency, XX.XX Hz
            return 5000 + int(3 * math.sin(t))
    return 3  # reverse energy and tamper counters: small and steady
