"""The driver registry: the one table of driver kinds, as Telegraf has its plugin table.

Every ``driver:`` a config may name is one entry of :data:`KINDS`, and the entry
declares in one place everything the rest of metrogate needs to know about that kind:

``model``
    its config model (``gateway/config/models/``). The ``devices:`` discriminated
    union of the config file is built from these (:func:`device_union`).
``plan`` and ``describe``
    the device's read plan, compiled once when the config is loaded (the loader
    reports a :class:`PlanProblem` at its file:line:col) and carried on
    :class:`~gateway.config.loader.LoadedConfig`; ``describe`` turns it into the
    lines ``metrogate plan`` prints and the daemon logs at start.
``build``
    the driver object for one device, from the device and a :class:`BuildContext`
    (compiled plan, clock, the bus owner of a serial device). It only constructs;
    :mod:`gateway.acquisition.build` opens, runs and closes drivers.
``checks``
    what only this kind can check, over all its devices at once (Modbus overlaps,
    two devices on one TCP endpoint).
``serial``
    for a device on a serial bus (:class:`SerialNeeds`): whether it streams (then it
    needs the bus to itself), the address that tells its replies apart on the line,
    the wire time of one poll, and the family whose members may not mix on one line.
``evidence``
    the points whose values belong in the audit trail (DL/T 645 tamper counters,
    CJ/T 188 status bits declared as tamper evidence).
``simulator``
    ``"module:function"`` of its simulator factory (contracts in
    :mod:`simulators.factory`). Only the composition root, :mod:`gateway.cli.simulate`,
    resolves it: no gateway stage imports :mod:`simulators`.
``online``, ``browse``
    what ``metrogate check --online`` tries with the device itself before start (an
    OPC UA server: trust, login, nodes, types), as located findings; what
    ``metrogate browse`` lists of its server's address space.

The registry lives in the config stage because the config schema is built from it,
and the import rules put ``gateway.config`` below ``gateway.acquisition``. Nothing
outside this module dispatches on a driver kind or tests a device model's class
(``tests/unit/test_registry.py`` enforces it); docs/architecture.md says how to add
a kind.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar

from pydantic import Field

from drivers.ascii_generic import AsciiDriver, AsciiSpec
from drivers.ascii_generic import plan_line as ascii_plan_line
from drivers.base import Clock, DeviceRejected, Driver, DriverError, utc_now_us
from drivers.cjt188 import Cjt188Driver, Cjt188Point, PointError, StatusBit, point_targets
from drivers.cjt188 import family_of as cjt188_family
from drivers.cjt188 import plan_lines as cjt188_plan_lines
from drivers.dlt645 import TAMPER_DIS, Dlt645Driver, Dlt645Point
from drivers.dlt645 import plan_lines as dlt645_plan_lines
from drivers.modbus_codec import DataType
from drivers.modbus_common import plan_lines as modbus_plan_lines
from drivers.modbus_plan import Hole, PlanError, Request, plan
from drivers.modbus_serial import Framing, ModbusSerialDriver
from drivers.modbus_tcp import ModbusTcpDriver
from drivers.mtsics import MtSicsDriver
from drivers.mtsics import plan_line as mtsics_plan_line
from drivers.opcua_security import TrustList, check_key_pair, load_certificate
from drivers.serial_line import LineSettings, SerialBus, wire_time
from drivers.toledo import ToledoDriver
from drivers.toledo import plan_line as toledo_plan_line
from gateway.config.models.cjt188 import Cjt188Device
from gateway.config.models.device import DeviceFields
from gateway.config.models.modbus import ModbusPoint, ModbusTcpDevice
from gateway.config.models.opcua import OpcUaDevice
from gateway.config.models.serial import (
    AsciiDevice,
    BusConfig,
    Dlt645Device,
    ModbusAsciiDevice,
    ModbusRtuDevice,
    ModbusSerialDevice,
    MtSicsDevice,
    ScalePoint,
    SerialDevice,
    ToledoDevice,
)

if TYPE_CHECKING:  # asyncua is imported only where an OPC UA device is configured
    from drivers.opcua import BrowseEntry, OpcUaDriver, OpcUaPoint, Security

__all__ = [
    "KINDS",
    "BuildContext",
    "BusAddress",
    "DriverKind",
    "Finding",
    "PlanProblem",
    "SerialNeeds",
    "device_union",
]

D = TypeVar("D", bound=DeviceFields)
S = TypeVar("S", bound=SerialDevice)
P = TypeVar("P")

Finding = tuple[tuple[str | int, ...], str, str]
"""``(path in the file, message, "error" | "warning")``; the loader locates the path."""


class PlanProblem(ValueError):
    """A device's points cannot be planned. ``path`` is relative to the device
    (``("points", 3, "address")``), so the loader can locate it in the file."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


@dataclass(frozen=True, slots=True)
class BuildContext(Generic[P]):
    """What a builder gets besides the device: nothing global, everything passed in."""

    plan: P
    """The device's plan as compiled when the config was loaded."""
    clock: Clock
    bus: SerialBus | None = None
    """The owner of the device's serial line (serial kinds only)."""
    line: BusConfig | None = None
    """The configuration of that line (serial kinds only)."""

    def serial_bus(self) -> SerialBus:
        """The bus owner; a serial kind's builder is never called without one."""
        if self.bus is None:
            raise RuntimeError("a serial driver is built without its bus owner")
        return self.bus

    def timeout(self, own: float | None) -> float:
        """A serial device's reply timeout: its own, else its bus's."""
        if own is not None:
            return own
        if self.line is None:
            raise RuntimeError("a serial driver is built without its bus configuration")
        return self.line.timeout


@dataclass(frozen=True, slots=True)
class BusAddress:
    """Who answers on a serial line: two devices with equal ``(what, value)`` on one bus
    could not be told apart. The problem is reported at the device's key ``key``."""

    key: str
    what: str
    value: str


def _never(device: object) -> bool:
    return False


def _anonymous(device: object) -> BusAddress | None:
    return None


@dataclass(frozen=True, slots=True)
class SerialNeeds(Generic[S, P]):
    """How a kind uses a serial bus (its model derives from :class:`SerialDevice`)."""

    wire_time: Callable[[S, P, LineSettings], float]
    """Least line time of one poll: frames and gaps (``drivers.serial_line.wire_time``)."""
    address: Callable[[S], BusAddress | None] = _anonymous
    streams: Callable[[S], bool] = _never
    """Whether the instrument talks unasked; then it needs the bus to itself."""
    family: str | None = None
    """Kinds of one family must not share a line (one Modbus transmission mode per line)."""

    def bus(self, device: S) -> str:
        """The id of the bus the device names."""
        return device.bus


def _no_checks(devices: Sequence[tuple[int, Any]]) -> Iterable[Finding]:
    return ()


def _no_evidence(device: Any) -> frozenset[str]:
    return frozenset()


@dataclass(frozen=True, slots=True)
class DriverKind(Generic[D, P]):
    """One driver kind: what the config says, how it is checked, planned, built, simulated."""

    name: str
    """The ``driver:`` value (and the key in :data:`KINDS`)."""
    title: str
    """What people call the protocol, in messages ("Modbus RTU")."""
    model: type[D]
    plan: Callable[[D], P]
    """Compile the device's read plan once; raise :class:`PlanProblem`. Plans are pickled
    from the loading child process, so they are plain data."""
    describe: Callable[[D, P], list[str]]
    """One line per request of a poll, as the driver's ``describe_plan()`` prints them."""
    build: Callable[[D, BuildContext[P]], Driver]
    """Construct the device's driver (not open it) from the device and ``ctx.plan``."""
    checks: Callable[[Sequence[tuple[int, D]]], Iterable[Finding]] = _no_checks
    """Problems among this kind's devices, each given with its index in ``devices:``."""
    serial: SerialNeeds[Any, P] | None = None
    """None: the driver reaches its device itself (network)."""
    evidence: Callable[[D], frozenset[str]] = _no_evidence
    """Ids of the points whose values go to the audit trail when they change."""
    simulator: str | None = None
    """``"module:function"`` of the simulator factory; None: not simulated."""
    online: Callable[[D, P], Awaitable[list[Finding]]] | None = None
    """``metrogate check --online``: try the device itself (bounded), return what is wrong
    with its config, paths relative to the device; None: nothing to try before start."""
    browse: Callable[[D, str | None], Awaitable[list[BrowseEntry]]] | None = None
    """``metrogate browse``: the nodes below a path of the device's server, connecting
    with the device's settings; None: the kind has no address space to browse."""


def device_union() -> Any:
    """The type of one ``devices:`` item: every kind's model, told apart by ``driver``."""
    models = [kind.model for kind in KINDS.values()]
    return Annotated[functools.reduce(operator.or_, models), Field(discriminator="driver")]


# -- Modbus (TCP, RTU, ASCII): one point model, one planner ---------------------------------

ModbusPlan = tuple[Request, ...]
ModbusDevice = ModbusTcpDevice | ModbusSerialDevice


def _address_key(point: ModbusPoint) -> str:
    """The key that placed a point: ``ref`` when it was given, else ``address``."""
    return "ref" if point.ref is not None else "address"


def _modbus_plan(device: ModbusDevice) -> ModbusPlan:
    holes = [Hole(h.table, h.start, h.end + 1) for h in device.holes]
    try:
        requests = plan(
            device.specs(),
            max_registers=device.max_registers,
            max_bits=device.max_bits,
            max_gap=device.max_gap,
            holes=holes,
        )
    except PlanError as exc:
        j = next((j for j, p in enumerate(device.points) if p.id == exc.point), None)
        path = ("points",) if j is None else ("points", j, _address_key(device.points[j]))
        raise PlanProblem(path, str(exc)) from None
    return tuple(requests)


def _modbus_points(devices: Sequence[tuple[int, ModbusDevice]]) -> Iterator[Finding]:
    """A device without points; two points on one register (except two bits of it)."""
    for i, dev in devices:
        if not dev.points:
            yield ("devices", i, "points"), "a Modbus device needs at least one point", "error"
            continue
        specs = dev.specs()
        for a in range(len(specs)):
            for b in range(a):
                pa, pb = specs[a], specs[b]
                if pa.table is not pb.table or pa.address >= pb.end or pb.address >= pa.end:
                    continue
                bits = pa.type is DataType.BOOL and pb.type is DataType.BOOL
                if bits and pa.bit is not None and pb.bit is not None and pa.bit != pb.bit:
                    continue  # two bits of one register
                yield (
                    ("devices", i, "points", a, _address_key(dev.points[a])),
                    f"{pa.table.value} {pa.address}..{pa.end - 1} overlaps point {pb.id!r} "
                    f"({pb.address}..{pb.end - 1})",
                    "error",
                )


def _modbus_tcp_checks(devices: Sequence[tuple[int, ModbusTcpDevice]]) -> Iterator[Finding]:
    """The points of each device; one unit per ``host:port`` and unit; one framing per port."""
    yield from _modbus_points(devices)
    claims: dict[tuple[str, int, int], int] = {}
    framing: dict[tuple[str, int], tuple[str, int]] = {}
    for i, dev in devices:
        key = (dev.host, dev.port, dev.unit)
        if key in claims:
            yield (
                ("devices", i, "unit"),
                f"{dev.host}:{dev.port} unit {dev.unit} is already claimed by "
                f"devices[{claims[key]}]",
                "error",
            )
        claims.setdefault(key, i)
        other = framing.setdefault((dev.host, dev.port), (dev.framing, i))
        if other[0] != dev.framing:
            yield (
                ("devices", i, "framing"),
                f"{dev.host}:{dev.port} is used with framing {other[0]!r} by devices[{other[1]}]",
                "error",
            )


def _describe_modbus_tcp(device: ModbusTcpDevice, requests: ModbusPlan) -> list[str]:
    return modbus_plan_lines(requests, device.unit)


def _build_modbus_tcp(device: ModbusTcpDevice, ctx: BuildContext[ModbusPlan]) -> Driver:
    return ModbusTcpDriver(
        device.id,
        device.host,
        device.port,
        device.unit,
        list(ctx.plan),
        timeout=device.timeout,
        rtu_framing=device.framing == "rtu",
        clock=ctx.clock,
    )


def _modbus_unit(device: ModbusSerialDevice) -> BusAddress:
    return BusAddress("unit", "unit", str(device.unit))


@dataclass(frozen=True, slots=True)
class _ModbusSerial:
    """The parts of the RTU and ASCII kinds that differ only by the framing."""

    framing: Framing

    def describe(self, device: ModbusSerialDevice, requests: ModbusPlan) -> list[str]:
        return modbus_plan_lines(requests, device.unit, self.framing)

    def build(self, device: ModbusSerialDevice, ctx: BuildContext[ModbusPlan]) -> Driver:
        return ModbusSerialDriver(
            device.id,
            ctx.serial_bus(),
            device.unit,
            ctx.plan,
            framing=self.framing,
            timeout=ctx.timeout(device.timeout),
            clock=ctx.clock,
        )

    def wire_time(
        self, device: ModbusSerialDevice, requests: ModbusPlan, line: LineSettings
    ) -> float:
        # ASCII sends two hex characters per byte, plus ':' CR LF; its LRC replaces the CRC
        factor, extra = (2, 3) if self.framing == "ascii" else (1, 0)
        total = 0.0
        for r in requests:
            data = (r.count + 7) // 8 if r.table.is_bit else 2 * r.count
            total += wire_time(factor * 8 + extra, factor * (5 + data) + extra, line)
        return total

    def needs(self) -> SerialNeeds[ModbusSerialDevice, ModbusPlan]:
        return SerialNeeds(self.wire_time, address=_modbus_unit, family="modbus")


_RTU, _ASCII = _ModbusSerial("rtu"), _ModbusSerial("ascii")


# -- scales and balances -------------------------------------------------------------------


def _no_plan(device: Any) -> None:
    return None


def _describe_mtsics(device: MtSicsDevice, _plan: None) -> list[str]:
    point = device.points[0]
    return [mtsics_plan_line(device.command, point.id, point.unit)]


def _build_mtsics(device: MtSicsDevice, ctx: BuildContext[None]) -> Driver:
    point = device.points[0]
    return MtSicsDriver(
        device.id,
        ctx.serial_bus(),
        command=device.command,
        point=point.id,
        unit=point.unit,
        timeout=ctx.timeout(device.timeout),
        clock=ctx.clock,
    )


def _mtsics_wire_time(device: MtSicsDevice, _plan: None, line: LineSettings) -> float:
    return wire_time(4, 20, line)


def _one_balance(device: MtSicsDevice) -> BusAddress:
    # MT-SICS has no addresses: two balances on one line would both answer
    return BusAddress("bus", "mtsics", "")


def _toledo_points(device: ToledoDevice) -> tuple[ScalePoint, ScalePoint | None]:
    weight = next(p for p in device.points if p.field == "weight")
    tare = next((p for p in device.points if p.field == "tare"), None)
    return weight, tare


def _describe_toledo(device: ToledoDevice, _plan: None) -> list[str]:
    weight, tare = _toledo_points(device)
    return [toledo_plan_line(weight.id, None if tare is None else tare.id)]


def _build_toledo(device: ToledoDevice, ctx: BuildContext[None]) -> Driver:
    weight, tare = _toledo_points(device)
    return ToledoDriver(
        device.id,
        ctx.serial_bus(),
        checksum=device.checksum,
        unit=weight.unit,
        weight_point=weight.id,
        tare_point=None if tare is None else tare.id,
        clock=ctx.clock,
    )


def _streams_always(device: object) -> bool:
    return True


def _listens_only(device: object, _plan: object, line: LineSettings) -> float:
    return 0.0


# -- generic ASCII instruments -------------------------------------------------------------


def _ascii_plan(device: AsciiDevice) -> AsciiSpec:
    return device.ascii_spec()


def _describe_ascii(device: AsciiDevice, spec: AsciiSpec) -> list[str]:
    return [ascii_plan_line(spec)]


def _build_ascii(device: AsciiDevice, ctx: BuildContext[AsciiSpec]) -> Driver:
    return AsciiDriver(
        device.id, ctx.serial_bus(), ctx.plan, timeout=ctx.timeout(device.timeout), clock=ctx.clock
    )


def _ascii_streams(device: AsciiDevice) -> bool:
    return device.request is None


def _ascii_wire_time(device: AsciiDevice, _spec: AsciiSpec, line: LineSettings) -> float:
    return 0.0 if device.request is None else wire_time(len(device.request), 32, line)


# -- DL/T 645 meters -----------------------------------------------------------------------

Dlt645Plan = tuple[Dlt645Point, ...]


def _dlt645_plan(device: Dlt645Device) -> Dlt645Plan:
    return tuple(p.point() for p in device.points)


def _describe_dlt645(device: Dlt645Device, points: Dlt645Plan) -> list[str]:
    return dlt645_plan_lines(device.address, points)


def _build_dlt645(device: Dlt645Device, ctx: BuildContext[Dlt645Plan]) -> Driver:
    return Dlt645Driver(
        device.id,
        ctx.serial_bus(),
        device.address,
        ctx.plan,
        timeout=ctx.timeout(device.timeout),
        preamble=device.preamble,
        clock=ctx.clock,
    )


def _dlt645_wire_time(device: Dlt645Device, points: Dlt645Plan, line: LineSettings) -> float:
    # request: preamble, 68 A0..A5 68 11 04 DI0..DI3 CS 16; the reply carries the value too
    return sum(wire_time(16 + device.preamble, 20 + p.item.length, line) for p in points)


def _meter_address(device: Dlt645Device) -> BusAddress:
    return BusAddress("address", "address", device.address)


def _tamper_counters(device: Dlt645Device) -> frozenset[str]:
    return frozenset(p.id for p in device.points if int(p.di, 16) in TAMPER_DIS)


# -- CJ/T 188 water, heat and gas meters -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cjt188Plan:
    """What one poll of a meter reads: the current data (901FH), into these points."""

    points: tuple[Cjt188Point, ...]
    status_bits: tuple[StatusBit, ...]


def _cjt188_plan(device: Cjt188Device) -> Cjt188Plan:
    points = tuple(Cjt188Point(p.id, p.field, p.unit, p.scale, p.offset) for p in device.points)
    bits = tuple(b.status_bit() for b in device.status_bits)
    try:
        point_targets(cjt188_family(device.meter_type), points, bits)
    except PointError as exc:
        raise PlanProblem(("points", exc.index, exc.key), str(exc)) from None
    return Cjt188Plan(points, bits)


def _describe_cjt188(device: Cjt188Device, plan: Cjt188Plan) -> list[str]:
    return cjt188_plan_lines(device.address, device.meter_type, plan.points)


def _build_cjt188(device: Cjt188Device, ctx: BuildContext[Cjt188Plan]) -> Driver:
    return Cjt188Driver(
        device.id,
        ctx.serial_bus(),
        device.address,
        device.meter_type,
        ctx.plan.points,
        timeout=ctx.timeout(device.timeout),
        di_order=device.di_order,
        preamble=device.preamble,
        status_bits=ctx.plan.status_bits,
        clock=ctx.clock,
    )


def _cjt188_wire_time(device: Cjt188Device, plan: Cjt188Plan, line: LineSettings) -> float:
    # request: preamble, 68 T A0..A6 C L DI0 DI1 SER CS 16; the reply: 2 FE, 13 bytes of
    # frame around DI, SER and the current data (19 bytes, 43 for heat meters)
    body = 43 if device.meter_type >> 4 == 2 else 19
    return wire_time(16 + device.preamble, 2 + 13 + 3 + body, line)


def _cjt188_address(device: Cjt188Device) -> BusAddress | None:
    # the wildcard is no address: the kind's check keeps such a meter alone on its line
    return None if device.wildcard else BusAddress("address", "meter address", device.address)


def _cjt188_checks(devices: Sequence[tuple[int, Cjt188Device]]) -> Iterator[Finding]:
    """A meter without points; a wildcard meter that is not the only meter on its line."""
    by_bus: dict[str, list[tuple[int, Cjt188Device]]] = {}
    for i, dev in devices:
        if not dev.points:
            yield ("devices", i, "points"), "a CJ/T 188 meter needs at least one point", "error"
        if dev.enabled:
            by_bus.setdefault(dev.bus, []).append((i, dev))
    for bus, meters in by_bus.items():
        wildcards = [(i, d) for i, d in meters if d.wildcard]
        if not wildcards or len(meters) == 1:
            continue
        first = meters[0][0]
        for i, _dev in wildcards:
            other = first if i != first else meters[1][0]
            yield (
                ("devices", i, "address"),
                f"the wildcard address answers for the one meter of a line, but bus {bus!r} "
                f"has other CJ/T 188 meters (devices[{other}]): give this meter its address",
                "error",
            )


def _cjt188_tamper(device: Cjt188Device) -> frozenset[str]:
    fields = device.tamper_fields()
    return frozenset(p.id for p in device.points if p.field in fields)


# -- OPC UA servers ---------------------------------------------------------------------------

OpcUaPlan = tuple["OpcUaPoint", ...]


def _opcua_plan(device: OpcUaDevice) -> OpcUaPlan:
    from drivers.opcua import Deadband, OpcUaPoint

    return tuple(
        OpcUaPoint(
            p.id,
            node=p.node,
            path=p.path,
            kind=p.kind,
            scale=p.scale,
            offset=p.offset,
            sampling_interval=p.sampling_interval,
            queue_size=p.queue_size,
            deadband=None if p.deadband is None else Deadband(p.deadband.kind, p.deadband.value),
            unit=p.unit,
            low=p.low,
            high=p.high,
        )
        for p in device.points
    )


def _describe_opcua(device: OpcUaDevice, points: OpcUaPlan) -> list[str]:
    from drivers.opcua import plan_lines

    return plan_lines(device.mode, device.publishing_interval, points)


def _opcua_security(device: OpcUaDevice) -> Security:
    from drivers.opcua import Security

    sec = device.security
    return Security(
        mode=sec.mode,
        policy=sec.policy,
        certificate=sec.certificate,
        private_key=sec.private_key,
        trusted_servers=tuple(sec.trusted_servers),
        trust_unknown_server=sec.accept_unknown_server,
    )


def _build_opcua(device: OpcUaDevice, ctx: BuildContext[OpcUaPlan]) -> OpcUaDriver:
    from drivers.opcua import OpcUaDriver

    return OpcUaDriver(
        device.id,
        device.url,
        ctx.plan,
        timeout=device.timeout,
        mode=device.mode,
        publishing_interval=device.publishing_interval,
        security=_opcua_security(device),
        username=device.username,
        password=None if device.password is None else device.password.get_secret_value(),
        clock=ctx.clock,
    )


_SUBSCRIBE_ONLY = ("sampling_interval", "queue_size", "deadband")


def _opcua_files(i: int, dev: OpcUaDevice) -> Iterator[Finding]:
    """The security files: certificate and key load and belong together, the trust list
    loads and trusts something when the channel is secured."""
    sec = dev.security
    at = ("devices", i, "security")
    if sec.certificate is not None and sec.private_key is not None:
        try:
            load_certificate(sec.certificate)
        except (OSError, ValueError) as exc:
            yield (*at, "certificate"), _file_problem(exc), "error"
        else:
            try:
                check_key_pair(sec.certificate, sec.private_key)
            except (OSError, ValueError) as exc:
                yield (*at, "private_key"), _file_problem(exc), "error"
    for k, location in enumerate(sec.trusted_servers):
        if not location.exists():
            yield (*at, "trusted_servers", k), f"{location}: no such file or folder", "error"
            continue
        try:
            TrustList([location])
        except (OSError, ValueError) as exc:
            yield (*at, "trusted_servers", k), _file_problem(exc), "error"
    if sec.accept_unknown_server:
        yield (
            (*at, "accept_unknown_server"),
            "any server certificate is accepted: use this while commissioning only, then "
            "put the server's certificate in trusted_servers",
            "warning",
        )
    elif sec.secured and not sec.trusted_servers:
        yield (
            (*at, "trusted_servers"),
            f"security mode {sec.mode} trusts no server: add the server's certificate "
            "(metrogate scan --opcua URL shows its fingerprint)",
            "error",
        )


def _file_problem(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


def _opcua_checks(devices: Sequence[tuple[int, OpcUaDevice]]) -> Iterator[Finding]:
    """A server without points; subscription settings on a polled device; the security
    files (each located at its key)."""
    for i, dev in devices:
        if not dev.points:
            yield ("devices", i, "points"), "an OPC UA device needs at least one point", "error"
        if dev.mode == "poll":
            for j, p in enumerate(dev.points):
                for key in _SUBSCRIBE_ONLY:
                    if key in p.model_fields_set:
                        yield (
                            ("devices", i, "points", j, key),
                            f"{key} applies to mode: subscribe; this device polls",
                            "warning",
                        )
        yield from _opcua_files(i, dev)


async def _opcua_online(device: OpcUaDevice, points: OpcUaPlan) -> list[Finding]:
    """Connect as the daemon would: trust, login, every node found and of a usable type,
    the subscription and its monitored items (subscribe mode); then disconnect."""
    from drivers.opcua import (
        AuthenticationFailed,
        SecurityRejected,
        SubscriptionRefused,
        UntrustedServer,
    )

    driver = _build_opcua(device, BuildContext(points, utc_now_us))
    found: list[Finding] = []
    problems = []
    try:
        async with driver:
            try:
                await driver.read()
            finally:
                problems = driver.problems()  # while the session is there
    except UntrustedServer as exc:
        found.append((("security", "trusted_servers"), str(exc), "error"))
    except SecurityRejected as exc:
        found.append((("security", "mode"), str(exc), "error"))
    except AuthenticationFailed as exc:
        found.append((("username",), str(exc), "error"))
    except SubscriptionRefused as exc:
        found.append((("mode",), str(exc), "error"))
    except DeviceRejected as exc:
        if not problems:  # else the points say what is wrong
            found.append((("url",), str(exc), "error"))
    except DriverError as exc:
        found.append((("url",), str(exc), "error"))
    index = {p.id: j for j, p in enumerate(device.points)}
    for problem in problems:
        j = index[problem.point]
        key = "node" if device.points[j].node is not None else "path"
        found.append((("points", j, key), str(problem), "error"))
    return found


async def _opcua_browse(device: OpcUaDevice, path: str | None) -> list[BrowseEntry]:
    from drivers.opcua import browse

    return await browse(
        device.url,
        path,
        security=_opcua_security(device),
        username=device.username,
        password=None if device.password is None else device.password.get_secret_value(),
        request_timeout=max(device.timeout, 2.0),
        device_id=device.id,
    )


# -- the table -----------------------------------------------------------------------------

KINDS: dict[str, DriverKind[Any, Any]] = {
    "modbus_tcp": DriverKind(
        name="modbus_tcp",
        title="Modbus TCP",
        model=ModbusTcpDevice,
        plan=_modbus_plan,
        describe=_describe_modbus_tcp,
        build=_build_modbus_tcp,
        checks=_modbus_tcp_checks,
        simulator="simulators.modbus_device:serve_modbus_tcp",
    ),
    "modbus_rtu": DriverKind(
        name="modbus_rtu",
        title="Modbus RTU",
        model=ModbusRtuDevice,
        plan=_modbus_plan,
        describe=_RTU.describe,
        build=_RTU.build,
        checks=_modbus_points,
        serial=_RTU.needs(),
        simulator="simulators.serial_instruments:modbus_rtu_line",
    ),
    "modbus_ascii": DriverKind(
        name="modbus_ascii",
        title="Modbus ASCII",
        model=ModbusAsciiDevice,
        plan=_modbus_plan,
        describe=_ASCII.describe,
        build=_ASCII.build,
        checks=_modbus_points,
        serial=_ASCII.needs(),
        simulator="simulators.serial_instruments:modbus_ascii_line",
    ),
    "mtsics": DriverKind(
        name="mtsics",
        title="MT-SICS",
        model=MtSicsDevice,
        plan=_no_plan,
        describe=_describe_mtsics,
        build=_build_mtsics,
        serial=SerialNeeds(_mtsics_wire_time, address=_one_balance),
        simulator="simulators.serial_instruments:mtsics_line",
    ),
    "toledo_continuous": DriverKind(
        name="toledo_continuous",
        title="Toledo continuous output",
        model=ToledoDevice,
        plan=_no_plan,
        describe=_describe_toledo,
        build=_build_toledo,
        serial=SerialNeeds(_listens_only, streams=_streams_always),
        simulator="simulators.serial_instruments:toledo_line",
    ),
    "ascii": DriverKind(
        name="ascii",
        title="ASCII",
        model=AsciiDevice,
        plan=_ascii_plan,
        describe=_describe_ascii,
        build=_build_ascii,
        serial=SerialNeeds(_ascii_wire_time, streams=_ascii_streams),
        simulator=None,  # replies cannot be derived from a regular expression
    ),
    "dlt645": DriverKind(
        name="dlt645",
        title="DL/T 645",
        model=Dlt645Device,
        plan=_dlt645_plan,
        describe=_describe_dlt645,
        build=_build_dlt645,
        serial=SerialNeeds(_dlt645_wire_time, address=_meter_address),
        evidence=_tamper_counters,
        simulator="simulators.serial_instruments:dlt645_line",
    ),
    "cjt188": DriverKind(
        name="cjt188",
        title="CJ/T 188",
        model=Cjt188Device,
        plan=_cjt188_plan,
        describe=_describe_cjt188,
        build=_build_cjt188,
        checks=_cjt188_checks,
        serial=SerialNeeds(_cjt188_wire_time, address=_cjt188_address),
        evidence=_cjt188_tamper,
        simulator="simulators.cjt188:cjt188_line",
    ),
    "opcua": DriverKind(
        name="opcua",
        title="OPC UA",
        model=OpcUaDevice,
        plan=_opcua_plan,
        describe=_describe_opcua,
        build=_build_opcua,
        checks=_opcua_checks,
        simulator="simulators.opcua_server:serve_opcua",
        online=_opcua_online,
        browse=_opcua_browse,
    ),
}
"""Every driver kind, by its ``driver:`` name; the order is the schema's."""
