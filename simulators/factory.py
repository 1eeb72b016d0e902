"""Simulator factories: how ``metrogate sim`` gets a simulator for a driver kind.

Each driver kind in ``gateway.config.models.registry.KINDS`` names its factory as
``"module:function"`` (its ``simulator``); the command line resolves the reference
and calls the function with the kind's device config objects. Simulators import
nothing of the gateway, so a factory reads those objects by their field names; the
protocols below name what each factory reads. Two shapes, by how the kind reaches
its device:

**Line factory** (kinds on a serial bus): ``factory(devices) -> LineSim``. The
devices are the enabled devices of one bus, all of this kind. It returns the
:class:`~simulators.pty.Responder` that answers for all of them on the bus's
pseudo-terminal, and an ``update(t)`` that ``metrogate sim`` calls about four times
a second with the seconds since start, to move the simulated values.

**Network factory** (kinds that reach their device over the network):
``factory(devices, *, free_ports) -> AsyncContextManager[list[Served]]``. The devices
are every enabled device of the kind. It serves them on 127.0.0.1 while the block
runs and yields one :class:`Served` per server. With ``free_ports`` it binds free
ports and points each device at its server (it sets the device's address fields).

A point's ``sim:`` setting becomes a generator with :func:`point_generator`; a bad
setting raises :class:`SimConfigError` naming the device and point.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

from drivers.base import Value
from drivers.modbus_codec import DataType, PointSpec, Table
from simulators.pty import Responder
from simulators.values import Generator, build_generator

__all__ = [
    "HoleLike",
    "LineSim",
    "ModbusDeviceLike",
    "Served",
    "SimConfigError",
    "SimulatedPoint",
    "default_value",
    "modbus_generators",
    "point_generator",
]

LineSim = tuple[Responder, Callable[[float], None]]
"""What a line factory returns: the responder for the bus, and ``update(t)``."""


class Served(NamedTuple):
    """One running server of a network factory and the devices it answers for."""

    endpoint: str
    devices: tuple[str, ...]
    server: object


class SimConfigError(ValueError):
    """A point's ``sim:`` setting is invalid; the message names the device and point."""


class SimulatedPoint(Protocol):
    """A configured point as a simulator reads it."""

    @property
    def id(self) -> str: ...

    @property
    def sim(self) -> Any: ...


class ModbusPointLike(SimulatedPoint, Protocol):
    @property
    def type(self) -> DataType | None: ...


class HoleLike(Protocol):
    """Addresses ``start`` to ``end`` (inclusive) of ``table`` that the device rejects."""

    @property
    def table(self) -> Table: ...

    @property
    def start(self) -> int: ...

    @property
    def end(self) -> int: ...


class ModbusDeviceLike(Protocol):
    """A Modbus device config (TCP, RTU or ASCII) as its simulators read it."""

    @property
    def id(self) -> str: ...

    @property
    def unit(self) -> int: ...

    @property
    def points(self) -> Sequence[ModbusPointLike]: ...

    @property
    def holes(self) -> Sequence[HoleLike]: ...

    def specs(self) -> list[PointSpec]: ...


def default_value(dtype: DataType | None) -> Value:
    """What a point without ``sim:`` holds: false, empty or zero by its type."""
    if dtype is DataType.BOOL:
        return False
    if dtype is DataType.STRING:
        return ""
    return 0


def point_generator(device: str, point: SimulatedPoint, default: Value) -> Generator:
    """The generator of ``point``'s ``sim:`` setting; :class:`SimConfigError` when invalid."""
    try:
        return build_generator(point.sim, default)
    except ValueError as exc:
        raise SimConfigError(f"devices {device} point {point.id}: {exc}") from None


def modbus_generators(device: ModbusDeviceLike) -> list[tuple[PointSpec, Generator]]:
    """Each point of a Modbus device with the generator of its values."""
    return [
        (spec, point_generator(device.id, point, default_value(point.type)))
        for point, spec in zip(device.points, device.specs(), strict=True)
    ]
