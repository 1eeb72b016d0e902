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

from gateway.config.loader import LoadedConfig, Problem
from gateway.config.models.device import DeviceFields
from gateway.config.models.registry import KINDS, DriverKind
from gateway.config.schema import Config
from simulators.factory import LineSim, Served, SimConfigError
from simulators.faults import parse_fault
from simulators.pty import SimLine

__all__ = [
    "RunningSim",
    "SimConfigError",
    "apply_requests",
    "run_simulators",
    "sim_problem",
    "simulator_factory",
]

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


def _target(config: Config, text: str, option: str) -> tuple[DeviceFields, Any | None, str]:
    """``DEVICE[:POINT]=SPEC`` → the device, the point (or None) and SPEC."""
    target, sep, spec = text.partition("=")
    device_id, _, point_id = target.strip().partition(":")
    if not sep or not device_id or not spec.strip():
        raise SimConfigError(f"{option} {text!r}: write DEVICE[:POINT]=...")
    device = next((d for d in config.devices if d.id == device_id), None)
    if device is None:
        raise SimConfigError(f"{option} {text!r}: no device {device_id!r}")
    if not point_id:
        return device, None, spec.strip()
    points = list(getattr(device, "points", []) or [])
    point = next((p for p in points if str(p.id) == point_id), None)
    if point is None:
        raise SimConfigError(f"{option} {text!r}: device {device_id} has no point {point_id!r}")
    return device, point, spec.strip()


def _scalar(text: str) -> Any:
    """A ``--value`` as YAML would read it: a number, true/false, else the text."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def apply_requests(config: Config, faults: list[str], values: list[str]) -> None:
    """``metrogate sim --fault DEVICE[:POINT]=KIND[,PARAM]`` and ``--value DEVICE:POINT=V``:
    merged into the ``sim:`` of the config objects (in place) before the simulators are
    built, so a fault from the command line is one from the file. Raises
    :class:`SimConfigError` naming the option."""
    for text in faults:
        device, point, spec = _target(config, text, "--fault")
        try:
            parse_fault(spec)
        except ValueError as exc:
            raise SimConfigError(f"--fault {text!r}: {exc}") from None
        holder = device if point is None else point
        current = holder.sim
        if point is None:
            listed = (current or {}).get("fault") if isinstance(current, dict) else None
            holder.sim = {"fault": [*_as_list(listed), spec]}
        elif isinstance(current, dict) and "kind" not in current:
            holder.sim = {**current, "fault": [*_as_list(current.get("fault")), spec]}
        else:
            holder.sim = {"value": current, "fault": [spec]}
    for text in values:
        device, point, spec = _target(config, text, "--value")
        if point is None:
            raise SimConfigError(f"--value {text!r}: a value is a point's: DEVICE:POINT=VALUE")
        current = point.sim
        if isinstance(current, dict) and "kind" not in current:
            point.sim = {**current, "value": _scalar(spec)}
        else:
            point.sim = _scalar(spec)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def sim_problem(loaded: LoadedConfig, exc: SimConfigError) -> Problem:
    """A simulator setting's problem located at its ``sim:`` in the file (or at the
    device or point it is about, when the setting came from the command line)."""
    path: tuple[str | int, ...] = ()
    for i, dev in enumerate(loaded.config.devices):
        if dev.id != exc.device:
            continue
        path = ("devices", i, "sim")
        if exc.point is not None:
            points = [str(p.id) for p in getattr(dev, "points", []) or []]
            if exc.point in points:
                path = ("devices", i, "points", points.index(exc.point), "sim")
    return loaded.locate(path, str(exc))


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
