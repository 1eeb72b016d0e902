"""Simulators built from a gateway config (``metrogate sim`` and ``metrogate demo``).

The composition root for simulation: each driver kind names its simulator factory
as ``"module:function"`` (:data:`gateway.config.models.registry.KINDS`, contracts in
:mod:`simulators.factory`), and only this module resolves those references, so the
gateway proper never depends on :mod:`simulators`. Devices that reach their
instrument over the network get servers on 127.0.0.1; every serial bus gets a
pseudo-terminal answering for the devices on it.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from gateway.config.models.device import DeviceFields
from gateway.config.models.registry import KINDS, DriverKind
from gateway.config.schema import Config
from simulators.factory import LineSim, Served, SimConfigError
from simulators.pty import SimLine

__all__ = ["RunningSim", "SimConfigError", "run_simulators", "simulator_factory"]

log = logging.getLogger("metrogate.simulate")


@dataclass(frozen=True)
class RunningSim:
    """One listening simulator and the devices it serves."""

    kind: str
    endpoint: str
    devices: tuple[str, ...]
    server: object


def simulator_factory(kind: DriverKind[Any, Any]) -> Callable[..., Any] | None:
    """The function ``kind.simulator`` names, imported; None for a kind without one."""
    if kind.simulator is None:
        return None
    module, _, name = kind.simulator.partition(":")
    factory: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return factory


@asynccontextmanager
async def run_simulators(
    config: Config, *, free_ports: bool = False
) -> AsyncIterator[list[RunningSim]]:
    """Serve every simulatable enabled device of ``config`` on this machine.

    Network kinds get servers on 127.0.0.1 from their factory (with ``free_ports``
    each binds a free port and ``config`` is updated in place to point at it — what
    the demo and tests do); each serial bus gets a pseudo-terminal and its ``port``
    is pointed at it.
    """
    network: dict[str, list[DeviceFields]] = {}
    for dev in config.devices:
        if dev.enabled and KINDS[dev.driver].serial is None:
            network.setdefault(dev.driver, []).append(dev)
    running: list[RunningSim] = []
    async with AsyncExitStack() as stack:
        for name, devs in network.items():
            factory = simulator_factory(KINDS[name])
            if factory is None:
                log.warning("%s devices are not simulated: %s", name, ", ".join(d.id for d in devs))
                continue
            served: list[Served] = await stack.enter_async_context(
                factory(devs, free_ports=free_ports)
            )
            running += [RunningSim(name, s.endpoint, s.devices, s.server) for s in served]
        running += await _serial_sims(config, stack)
        yield running


async def _serial_sims(config: Config, stack: AsyncExitStack) -> list[RunningSim]:
    """One pseudo-terminal per bus, answering for every device on it.

    The bus's ``port`` is pointed at the pty (the simulated line is always local).
    Kinds without a simulator (generic ASCII instruments: their replies cannot be
    derived from a regular expression) are left out; a bus whose other devices are
    of several kinds is not simulated.
    """
    by_bus: dict[str, list[DeviceFields]] = {}
    for dev in config.devices:
        kind = KINDS[dev.driver]
        if dev.enabled and kind.serial is not None and kind.simulator is not None:
            by_bus.setdefault(kind.serial.bus(dev), []).append(dev)
    found: list[RunningSim] = []
    updaters: list[Callable[[float], None]] = []
    for bus in config.buses:
        devs = by_bus.get(bus.id, [])
        kinds = {d.driver for d in devs}
        if not devs:
            continue
        if len(kinds) > 1:
            # one simulated line speaks one protocol; a real line should too
            names = ", ".join(sorted(d.id for d in devs))
            log.warning("bus of %s mixes protocols: not simulated", names)
            continue
        (name,) = kinds
        factory = simulator_factory(KINDS[name])
        assert factory is not None  # kinds without one are not collected
        built: LineSim = factory(devs)
        responder, update = built
        line = stack.enter_context(SimLine(responder))
        bus.port = line.path
        updaters.append(update)
        found.append(RunningSim(name, line.path, tuple(d.id for d in devs), line))
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
