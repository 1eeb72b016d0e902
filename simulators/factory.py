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

A point's ``sim:`` setting becomes a generator with :func:`point_generator`, or, with
its faults, a :class:`PointSim` (:func:`point_sim`); a device's ``sim:`` (its faults)
becomes a :class:`DeviceSim` (:func:`device_sim`). A bad setting, or a fault the
kind's simulator cannot show, raises :class:`SimConfigError` naming the device and
point. The forms (docs/simulator.md)::

    sim: 21.5                                    # a point: a constant
    sim: {kind: sine, mean: 20, amplitude: 2, period: 60}    # a generator
    sim: {value: 21.5, fault: "drift,0.01"}      # a value and its faults
    sim: {value: 3.2, status: BadSensorFailure, type: Float}   # OPC UA
    sim: {fault: silent}                         # a device: its answers
    sim: {fault: ["slow,1.5", stuck]}            # several at once
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from drivers.base import Value
from drivers.modbus_codec import DataType, PointSpec, Table
from simulators.faults import Fault, SimValue, TransportFault, ValueFault, parse_faults
from simulators.pty import Responder
from simulators.values import Generator, build_generator

__all__ = [
    "DeviceSim",
    "HoleLike",
    "LineSim",
    "ModbusDeviceLike",
    "PointSim",
    "Served",
    "SimConfigError",
    "SimulatedDevice",
    "SimulatedPoint",
    "default_value",
    "device_sim",
    "modbus_generators",
    "point_generator",
    "point_sim",
]

LineSim = tuple[Responder, Callable[[float], None]]
"""What a line factory returns: the responder for the bus, and ``update(t)``."""


class Served(NamedTuple):
    """One running server of a network factory and the devices it answers for."""

    endpoint: str
    devices: tuple[str, ...]
    server: object


class SimConfigError(ValueError):
    """A ``sim:`` setting is invalid, or asks for a fault the simulator cannot show; the
    message names the device and point, ``device`` and ``point`` say which they are."""

    def __init__(self, message: str, device: str | None = None, point: str | None = None) -> None:
        super().__init__(message)
        self.device = device
        self.point = point


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
    def sim(self) -> Any: ...

    @property
    def unit(self) -> int: ...

    @property
    def points(self) -> Sequence[ModbusPointLike]: ...

    @property
    def holes(self) -> Sequence[HoleLike]: ...

    def specs(self) -> list[PointSpec]: ...


class SimulatedDevice(Protocol):
    """A configured device as a simulator reads its ``sim:``."""

    @property
    def id(self) -> str: ...

    @property
    def sim(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class DeviceSim:
    """A device's faults on request: of its answers, and of all its values."""

    faults: tuple[TransportFault, ...] = ()
    value_fault: ValueFault | None = None

    def has(self, kind: str) -> TransportFault | None:
        """The fault of ``kind``, if the device has it."""
        return next((f for f in self.faults if f.kind == kind), None)


@dataclass(frozen=True, slots=True)
class PointSim:
    """A point's simulated value (its fault applied, from the start), and what else the
    simulator shows for it: transport faults of the point, an OPC UA status and type."""

    value: Generator
    faults: tuple[TransportFault, ...] = ()
    status: str | None = None
    data_type: str | None = None

    def has(self, kind: str) -> TransportFault | None:
        return next((f for f in self.faults if f.kind == kind), None)


_VALUE_FAULTS = ("stuck", "drift", "step")


def _split(
    where: str,
    faults: list[Fault],
    supported: Collection[str],
    scope: str,
    device: str,
    point: str | None = None,
) -> tuple[tuple[TransportFault, ...], ValueFault | None]:
    transport: list[TransportFault] = []
    value: ValueFault | None = None
    for f in faults:
        if not isinstance(f, TransportFault):
            if value is not None:
                raise SimConfigError(
                    f"{where}: one value fault at a time (stuck, drift or step)", device, point
                )
            value = f
        elif f.kind not in supported:
            can = ", ".join([*supported, *_VALUE_FAULTS])
            raise SimConfigError(
                f"{where}: fault {f.kind!r} is not something this simulator does for a {scope} "
                f"(it does: {can})",
                device,
                point,
            )
        else:
            transport.append(f)
    return tuple(transport), value


def device_sim(device: SimulatedDevice, supported: Collection[str]) -> DeviceSim:
    """A device's ``sim:`` (``{fault: ...}``); ``supported`` are the transport faults the
    kind's simulator can show for a device. Raises :class:`SimConfigError`."""
    spec = getattr(device, "sim", None)
    if spec is None:
        return DeviceSim()
    where = f"devices {device.id} sim"
    if not isinstance(spec, Mapping) or set(spec) - {"fault"}:
        raise SimConfigError(
            f"{where}: a device's sim: is {{fault: KIND[,PARAM] or a list}}", device.id
        )
    try:
        faults = parse_faults(spec.get("fault"))
    except ValueError as exc:
        raise SimConfigError(f"{where}: {exc}", device.id) from None
    transport, value = _split(where, faults, supported, "device", device.id)
    return DeviceSim(transport, value)


_POINT_KEYS = {"value", "fault", "status", "type"}


def point_sim(
    device: SimulatedDevice,
    point: SimulatedPoint,
    default: Value,
    *,
    supported: Collection[str] = (),
    with_device: DeviceSim | None = None,
) -> PointSim:
    """A point's ``sim:`` with its faults (and the device's value fault, unless the point
    has its own); ``supported`` are the transport faults the kind's simulator can show
    for one point. Raises :class:`SimConfigError`."""
    spec = point.sim
    where = f"devices {device.id} point {point.id}"
    extended = isinstance(spec, Mapping) and "kind" not in spec
    value_spec = spec.get("value") if extended else spec
    try:
        generator = build_generator(value_spec, default)
        faults: list[Fault] = []
        status = data_type = None
        if extended:
            unknown = set(spec) - _POINT_KEYS
            if unknown:
                raise ValueError(
                    f"sim: unknown key {sorted(unknown)[0]!r} (a point's sim: is a value, a "
                    f"generator, or a mapping of {', '.join(sorted(_POINT_KEYS))})"
                )
            faults = parse_faults(spec.get("fault"))
            status = spec.get("status")
            data_type = spec.get("type")
            if status is not None:
                faults.append(TransportFault("status", status=str(status)))
    except ValueError as exc:
        raise SimConfigError(f"{where}: {exc}", device.id, point.id) from None
    transport, value_fault = _split(where, faults, supported, "point", device.id, point.id)
    if value_fault is None and with_device is not None:
        value_fault = with_device.value_fault
    if value_fault is not None:
        wrapped = SimValue(generator)
        wrapped.set_fault(value_fault, 0.0)
        generator = wrapped
    status_fault = next((f for f in transport if f.kind == "status"), None)
    return PointSim(
        generator,
        transport,
        status_fault.status if status_fault is not None else None,
        None if data_type is None else str(data_type),
    )


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
        raise SimConfigError(
            f"devices {device} point {point.id}: {exc}", device, point.id
        ) from None


def modbus_generators(
    device: ModbusDeviceLike, with_device: DeviceSim | None = None
) -> list[tuple[PointSpec, Generator]]:
    """Each point of a Modbus device with the generator of its values (value faults of
    the point, or of the device, applied)."""
    return [
        (spec, point_sim(device, point, default_value(point.type), with_device=with_device).value)
        for point, spec in zip(device.points, device.specs(), strict=True)
    ]
