"""Configuration of serial lines (``buses:``) and the devices on them.

One :class:`BusConfig` per physical port; every serial device names its bus. The
device models (``driver:`` ``modbus_rtu``, ``modbus_ascii``, ``mtsics``,
``toledo_continuous``, ``ascii``, ``dlt645``) join the main ``devices:``
discriminated union as :data:`SerialDeviceConfig`. Checks that span several
objects (unknown bus, two claims on one port, a poll the line cannot carry) are
in :func:`cross_check`, which returns located problems instead of raising.
:func:`build_serial_drivers` turns validated models into running drivers that
share one :class:`drivers.serial_line.SerialBus` per bus. See docs/serial.md.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from drivers.ascii_generic import AsciiDriver, AsciiSpec
from drivers.base import Clock, Driver, Quality, Reason, utc_now_us
from drivers.dlt645 import DATA_ITEMS, DataItem, Dlt645Driver, Dlt645Point, encode_address
from drivers.modbus_codec import Order, PointSpec
from drivers.modbus_plan import Hole, Request, plan
from drivers.modbus_serial import ModbusSerialDriver
from drivers.mtsics import MtSicsDriver
from drivers.serial_line import LineSettings, Rs485, SerialBus, wire_time
from drivers.toledo import ToledoDriver
from gateway.common.types import Duration, Ident, Strict
from gateway.config.models.metrology import DeviceMetrologyFields, PointMetrologyFields
from gateway.config.models.modbus import HoleConfig, ModbusPoint

__all__ = [
    "AsciiDevice",
    "BusConfig",
    "Dlt645Device",
    "ModbusAsciiDevice",
    "ModbusRtuDevice",
    "MtSicsDevice",
    "SerialDeviceConfig",
    "ToledoDevice",
    "build_serial_drivers",
    "cross_check",
    "sweep_wire_time",
]

Problem = tuple[tuple[str | int, ...], str]


def _stop_bits(v: float) -> float:
    if v not in (1, 1.5, 2):
        raise ValueError("stopbits is 1, 1.5 or 2")
    return v


def _data_identifier(v: str) -> str:
    text = v.lower().removeprefix("0x").replace(" ", "")
    if not re.fullmatch(r"[0-9a-f]{8}", text):
        raise ValueError(f"DI {v!r}: 8 hex digits, e.g. 00010000")
    return text.upper()


def _meter_address(v: object) -> str:
    text = str(v).strip()
    if text.isdigit() and len(text) < 12:
        text = text.zfill(12)  # YAML reads 000012345678 as a number
    encode_address(text)  # raises ValueError naming what is wrong
    return text


StopBits = Annotated[float, AfterValidator(_stop_bits)]
"""Stop bits of a serial line: 1, 1.5 or 2."""
DataIdentifier = Annotated[str, AfterValidator(_data_identifier)]
"""A DL/T 645 data identifier DI3..DI0: 8 hex digits ("0x" and blanks allowed), kept upper-case."""
MeterAddress = Annotated[str, BeforeValidator(_meter_address)]
"""A DL/T 645 meter address: 12 decimal digits (fewer are zero-padded, numbers accepted)."""


class Rs485Config(Strict):
    """Kernel RS-485 direction control, for UARTs whose RTS drives the transceiver's DE/RE."""

    rts_level_for_tx: bool = True
    rts_level_for_rx: bool = False
    delay_before_tx: Duration | None = None
    delay_before_rx: Duration | None = None


class BusConfig(Strict):
    """One physical serial line and its single owner."""

    id: Ident
    port: str = Field(
        min_length=1,
        description="Device path (/dev/ttyUSB0, /dev/serial/by-id/...) or pyserial URL "
        "(socket://host:port, rfc2217://host:port) for serial device servers.",
    )
    baudrate: int = Field(9600, ge=50, le=4_000_000)
    parity: Literal["N", "E", "O"] = "E"
    bytesize: Literal[7, 8] = 8
    stopbits: StopBits = Field(1, description="1, 1.5 or 2.")
    inter_frame_gap: Duration | None = Field(
        None, description="Silence before each request; default t3.5 from the baud rate."
    )
    rs485: Rs485Config | None = None
    timeout: Duration = Field(0.5, description="Default reply timeout of devices on this bus.")
    quarantine_after: int = Field(
        3, ge=1, le=100, description="Consecutive failures before back-off."
    )
    backoff: Duration = Field(1.0, description="First quarantine period; doubles per failed probe.")
    max_backoff: Duration = Field(60.0, description="Cap of the quarantine period.")

    def settings(self) -> LineSettings:
        r = self.rs485
        return LineSettings(
            port=self.port,
            baudrate=self.baudrate,
            parity=self.parity,
            bytesize=self.bytesize,
            stopbits=self.stopbits,
            inter_frame_gap=self.inter_frame_gap,
            rs485=None
            if r is None
            else Rs485(
                r.rts_level_for_tx, r.rts_level_for_rx, r.delay_before_tx, r.delay_before_rx
            ),
        )


class _SerialDevice(DeviceMetrologyFields):
    id: Ident
    enabled: bool = True
    description: str | None = None
    bus: Ident = Field(description="Id of the bus (serial line) the device is wired to.")
    poll: Duration = Field(1.0, description="Poll period.")
    timeout: Duration | None = Field(None, description="Reply timeout; default: the bus's.")
    profile: str | None = Field(None, description="Device profile in config/profiles/ (by name).")


class _ModbusSerial(_SerialDevice):
    unit: int = Field(1, ge=1, le=247, description="Modbus slave address.")
    order: Order = Field(Order.ABCD, description="Default byte/word order of the device.")
    max_gap: int = Field(10, ge=0, le=124)
    max_registers: int = Field(125, ge=1, le=125)
    max_bits: int = Field(2000, ge=1, le=2000)
    holes: list[HoleConfig] = Field(default_factory=list)
    points: list[ModbusPoint] = Field(default_factory=list)

    def specs(self) -> list[PointSpec]:
        return [p.point_spec(self.order) for p in self.points]

    def requests(self) -> list[Request]:
        holes = [Hole(h.table, h.start, h.end + 1) for h in self.holes]
        return plan(
            self.specs(),
            max_registers=self.max_registers,
            max_bits=self.max_bits,
            max_gap=self.max_gap,
            holes=holes,
        )


class ModbusRtuDevice(_ModbusSerial):
    driver: Literal["modbus_rtu"]


class ModbusAsciiDevice(_ModbusSerial):
    driver: Literal["modbus_ascii"]


class ScalePoint(PointMetrologyFields):
    id: Ident
    field: Literal["weight", "tare"] = "weight"
    unit: str | None = Field(None, description="Expected unit; another unit reads as bad.")
    description: str | None = None


class MtSicsDevice(_SerialDevice):
    driver: Literal["mtsics"]
    command: Literal["S", "SI"] = Field(
        "S", description="S: wait for a stable weight; SI: weight now (may be dynamic)."
    )
    points: list[ScalePoint] = Field(
        default_factory=lambda: [ScalePoint(id="weight")], min_length=1, max_length=1
    )

    @model_validator(mode="after")
    def _weight_only(self) -> MtSicsDevice:
        if self.points[0].field != "weight":
            raise ValueError("an MT-SICS balance has one point, field weight")
        return self


class ToledoDevice(_SerialDevice):
    driver: Literal["toledo_continuous"]
    checksum: bool = Field(True, description="Frames end with the checksum byte.")
    points: list[ScalePoint] = Field(
        default_factory=lambda: [ScalePoint(id="weight")], min_length=1, max_length=2
    )

    @model_validator(mode="after")
    def _fields(self) -> ToledoDevice:
        fields = [p.field for p in self.points]
        if "weight" not in fields or len(set(fields)) != len(fields):
            raise ValueError("points: one weight and at most one tare")
        return self


_QUALITY_SPEC = re.compile(r"^(good|uncertain|bad)(?:/([a-z_]+))?$")


def parse_verdict(text: str) -> tuple[Quality, Reason | None]:
    """``"good"``, ``"uncertain/not_stable"``, ``"bad/device_failure"`` → (quality, reason)."""
    m = _QUALITY_SPEC.match(text.strip())
    if m is None:
        raise ValueError(f"{text!r}: write good, uncertain/REASON or bad/REASON")
    quality = Quality(m.group(1))
    if m.group(2) is None:
        if quality is not Quality.GOOD:
            raise ValueError(f"{text!r}: uncertain and bad need a reason, e.g. bad/device_failure")
        return quality, None
    try:
        return quality, Reason(m.group(2))
    except ValueError:
        names = ", ".join(r.value for r in Reason)
        raise ValueError(f"{text!r}: unknown reason; one of {names}") from None


class AsciiPoint(PointMetrologyFields):
    id: Ident
    unit: str | None = Field(None, description="Expected text of the unit group, if any.")
    scale: float = 1.0
    offset: float = 0.0
    description: str | None = None


class AsciiDevice(_SerialDevice):
    driver: Literal["ascii"]
    request: str | None = Field(
        None, description='Text sent each poll (YAML escapes: "R\\r\\n"); omit for streaming.'
    )
    response: str = Field(description="Regex with named groups value (required), unit, status.")
    terminator: str = Field("\r\n", min_length=1, description="End of each reply line.")
    status: dict[str, str] = Field(
        default_factory=dict, description='Status text → "good", "uncertain/REASON", "bad/REASON".'
    )
    unknown_status: str = "bad/device_failure"
    points: list[AsciiPoint] = Field(min_length=1, max_length=1)

    @field_validator("response")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            pattern = re.compile(v)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        if "value" not in pattern.groupindex:
            raise ValueError("the regular expression needs a named group (?P<value>...)")
        return v

    @model_validator(mode="after")
    def _verdicts(self) -> AsciiDevice:
        for text in [*self.status.values(), self.unknown_status]:
            parse_verdict(text)
        return self

    def ascii_spec(self) -> AsciiSpec:
        p = self.points[0]
        return AsciiSpec(
            pattern=re.compile(self.response),
            request=None if self.request is None else self.request.encode("latin-1"),
            terminator=self.terminator.encode("latin-1"),
            status_map={k: parse_verdict(v) for k, v in self.status.items()},
            unknown_status=parse_verdict(self.unknown_status),
            point=p.id,
            unit=p.unit,
            scale=p.scale,
            offset=p.offset,
        )


class Dlt645PointConfig(PointMetrologyFields):
    id: Ident
    di: DataIdentifier = Field(description='Data identifier DI3..DI0 in hex, e.g. "00010000".')
    length: int | None = Field(None, ge=1, le=8, description="BCD bytes (for unknown DIs).")
    decimals: int | None = Field(None, ge=0, le=8)
    signed: bool | None = None
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _layout(self) -> Dlt645PointConfig:
        if int(self.di, 16) not in DATA_ITEMS and (self.length is None or self.decimals is None):
            raise ValueError(f"DI {self.di} is not built in: give length and decimals")
        return self

    def point(self) -> Dlt645Point:
        di = int(self.di, 16)
        known = DATA_ITEMS.get(di, DataItem(0, 0, ""))
        item = DataItem(
            self.length or known.length,
            self.decimals if self.decimals is not None else known.decimals,
            self.unit or known.unit,
            self.signed if self.signed is not None else known.signed,
            known.name,
        )
        return Dlt645Point(self.id, di, item, self.scale, self.offset)


class Dlt645Device(_SerialDevice):
    driver: Literal["dlt645"]
    address: MeterAddress = Field(
        description="Meter address: 12 decimal digits as printed on the meter."
    )
    preamble: int = Field(4, ge=0, le=4, description="FE bytes sent before each request.")
    points: list[Dlt645PointConfig] = Field(default_factory=list)


SerialDeviceConfig = (
    ModbusRtuDevice | ModbusAsciiDevice | MtSicsDevice | ToledoDevice | AsciiDevice | Dlt645Device
)
"""Every serial device model; the main config's ``devices:`` union includes these."""

_SERIAL = (
    ModbusRtuDevice,
    ModbusAsciiDevice,
    MtSicsDevice,
    ToledoDevice,
    AsciiDevice,
    Dlt645Device,
)


def _streaming(d: object) -> bool:
    return isinstance(d, ToledoDevice) or (isinstance(d, AsciiDevice) and d.request is None)


def sweep_wire_time(device: object, bus: BusConfig) -> float:
    """Least line time one poll of ``device`` takes (frames on the wire and gaps)."""
    s = bus.settings()
    if isinstance(device, ModbusRtuDevice | ModbusAsciiDevice):
        total = 0.0
        factor = 2 if isinstance(device, ModbusAsciiDevice) else 1
        for r in device.requests():
            data = (r.count + 7) // 8 if r.table.is_bit else 2 * r.count
            extra = 3 if factor == 2 else 0  # ':' CR LF, LRC replaces CRC
            total += wire_time(factor * 8 + extra, factor * (5 + data) + extra, s)
        return total
    if isinstance(device, Dlt645Device):
        return sum(
            wire_time(16 + device.preamble, 4 + 12 + 4 + p.point().item.length, s)
            for p in device.points
        )
    if isinstance(device, MtSicsDevice):
        return wire_time(4, 20, s)
    if isinstance(device, AsciiDevice) and device.request is not None:
        return wire_time(len(device.request), 32, s)
    return 0.0


_MODBUS_SERIAL = (ModbusRtuDevice, ModbusAsciiDevice)


def cross_check(buses: Sequence[BusConfig], devices: Sequence[object]) -> list[Problem]:
    """Problems between buses and serial devices; ``devices`` is the whole ``devices:`` list
    (non-serial entries are skipped, indices stay those of the file)."""
    problems: list[Problem] = []
    by_id: dict[str, int] = {}
    by_port: dict[str, int] = {}
    for i, b in enumerate(buses):
        if b.id in by_id:
            problems.append((("buses", i, "id"), f"bus id {b.id!r} is already used"))
        by_id.setdefault(b.id, i)
        if b.port in by_port:
            other = buses[by_port[b.port]]
            what = "with different line settings" if other.settings() != b.settings() else "too"
            problems.append(
                (("buses", i, "port"), f"port {b.port} is already claimed by bus {other.id!r} "
                 f"{what}: one owner per port — put all its devices on one bus")
            )  # fmt: skip
        by_port.setdefault(b.port, i)
        if b.max_backoff < b.backoff:
            problems.append((("buses", i, "max_backoff"), "max_backoff must be ≥ backoff"))
    members: dict[str, list[tuple[int, object]]] = {}
    for j, d in enumerate(devices):
        if not isinstance(d, _SERIAL) or not d.enabled:
            continue
        if d.bus not in by_id:
            known = ", ".join(sorted(by_id)) or "none defined"
            problems.append((("devices", j, "bus"), f"unknown bus {d.bus!r} (buses: {known})"))
            continue
        members.setdefault(d.bus, []).append((j, d))
    for bus_id, group in members.items():
        bus = buses[by_id[bus_id]]
        streaming = [j for j, d in group if _streaming(d)]
        if streaming and len(group) > 1:
            for j in streaming:
                problems.append(
                    (("devices", j, "bus"), f"a streaming instrument needs bus {bus_id!r} to "
                     "itself, but other devices are on it")
                )  # fmt: skip
        framings = {type(d).__name__: j for j, d in group if isinstance(d, _MODBUS_SERIAL)}
        if len(framings) > 1:
            j = max(framings.values())
            problems.append(
                (("devices", j, "driver"), f"bus {bus_id!r} mixes Modbus RTU and Modbus ASCII: "
                 "every device on one serial line must use the same transmission mode")
            )  # fmt: skip
        seen: dict[tuple[str, str], int] = {}
        for j, d in group:
            key: tuple[str, str] | None = None
            if isinstance(d, ModbusRtuDevice | ModbusAsciiDevice):
                key = ("unit", str(d.unit))
            elif isinstance(d, Dlt645Device):
                key = ("address", d.address)
            elif isinstance(d, MtSicsDevice):
                key = ("mtsics", "")
            if key is None:
                continue
            if key in seen:
                problems.append(
                    (("devices", j, key[0] if key[0] != "mtsics" else "bus"),
                     f"same {key[0]} as devices[{seen[key]}] on bus {bus_id!r}: replies "
                     "could not be told apart")
                )  # fmt: skip
            seen.setdefault(key, j)
        sweep = 0.0
        load = 0.0
        for _, d in group:
            assert isinstance(d, _SerialDevice)
            t = sweep_wire_time(d, bus)
            sweep += t
            load += t / d.poll if d.poll > 0 else float("inf")
        if load > 1.0:
            for j, d in group:
                assert isinstance(d, _SerialDevice)
                if d.poll < sweep:
                    problems.append(
                        (("devices", j, "poll"),
                         f"the devices on bus {bus_id!r} need at least {sweep:.3f}s of wire time "
                         f"per sweep at {bus.baudrate} baud ({load:.0%} of the line): a "
                         f"{d.poll:g}s poll is impossible; poll slower, read fewer registers or "
                         "raise the baud rate")
                    )  # fmt: skip
    return problems


@contextlib.asynccontextmanager
async def build_serial_drivers(
    buses: Sequence[BusConfig], devices: Sequence[object], clock: Clock = utc_now_us
) -> AsyncIterator[dict[str, Driver]]:
    """One driver per enabled serial device, sharing one :class:`SerialBus` per bus.

    Call after :func:`cross_check` found nothing. The buses belong to this context
    (ports open lazily at the first transaction and close when it exits); the
    drivers are returned *not entered*: the caller enters each one (streaming
    drivers start their reader there) and exits it before this context ends.
    """
    async with contextlib.AsyncExitStack() as stack:
        owners: dict[str, SerialBus] = {}
        for b in buses:
            owners[b.id] = await stack.enter_async_context(
                SerialBus(
                    b.settings(),
                    failures_to_quarantine=b.quarantine_after,
                    initial_backoff=b.backoff,
                    max_backoff=b.max_backoff,
                )
            )
        by_id = {b.id: b for b in buses}
        drivers: dict[str, Driver] = {}
        for d in devices:
            if not isinstance(d, _SERIAL) or not d.enabled:
                continue
            bus, cfg = owners[d.bus], by_id[d.bus]
            timeout = d.timeout if d.timeout is not None else cfg.timeout
            drv: Driver
            if isinstance(d, ModbusRtuDevice | ModbusAsciiDevice):
                framing: Literal["rtu", "ascii"] = "rtu" if d.driver == "modbus_rtu" else "ascii"
                drv = ModbusSerialDriver(
                    d.id, bus, d.unit, d.requests(), framing=framing, timeout=timeout, clock=clock
                )
            elif isinstance(d, MtSicsDevice):
                p = d.points[0]
                drv = MtSicsDriver(
                    d.id, bus, command=d.command, point=p.id, unit=p.unit, timeout=timeout,
                    clock=clock,
                )  # fmt: skip
            elif isinstance(d, ToledoDevice):
                weight = next(p for p in d.points if p.field == "weight")
                tare = next((p for p in d.points if p.field == "tare"), None)
                drv = ToledoDriver(
                    d.id, bus, checksum=d.checksum, unit=weight.unit, weight_point=weight.id,
                    tare_point=tare.id if tare else None, clock=clock,
                )  # fmt: skip
            elif isinstance(d, AsciiDevice):
                drv = AsciiDriver(d.id, bus, d.ascii_spec(), timeout=timeout, clock=clock)
            else:
                drv = Dlt645Driver(
                    d.id, bus, d.address, [p.point() for p in d.points], timeout=timeout,
                    preamble=d.preamble, clock=clock,
                )  # fmt: skip
            drivers[d.id] = drv
        yield drivers
