"""Configuration of serial lines (``buses:``) and the devices on them.

One :class:`BusConfig` per physical port; every serial device (:class:`SerialDevice`)
names its bus. The device models (``driver:`` ``modbus_rtu``, ``modbus_ascii``,
``mtsics``, ``toledo_continuous``, ``ascii``, ``dlt645``) are registered as driver
kinds in :mod:`gateway.config.models.registry`, which puts them into the ``devices:``
union, builds their drivers and declares their checks; checks that span several
objects (unknown bus, two claims on one port, a poll the line cannot carry) are in
:mod:`gateway.config.checks`. See docs/serial.md.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from drivers.ascii_generic import AsciiSpec
from drivers.base import Quality, Reason
from drivers.dlt645 import DATA_ITEMS, DataItem, Dlt645Point, encode_address
from drivers.modbus_codec import Order, PointSpec
from drivers.serial_line import LineSettings, Rs485
from gateway.common.types import Duration, Ident, Strict, finite
from gateway.config.models.device import DeviceFields
from gateway.config.models.metrology import PointMetrologyFields
from gateway.config.models.modbus import HoleConfig, ModbusPoint

__all__ = [
    "AsciiDevice",
    "BusConfig",
    "Dlt645Device",
    "ModbusAsciiDevice",
    "ModbusRtuDevice",
    "ModbusSerialDevice",
    "MtSicsDevice",
    "SerialDevice",
    "ToledoDevice",
]


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


class SerialDevice(DeviceFields):
    """What every device on a serial line has: its bus, and a reply timeout defaulting to
    the bus's."""

    id: Ident
    enabled: bool = True
    description: str | None = None
    bus: Ident = Field(description="Id of the bus (serial line) the device is wired to.")
    poll: Duration = Field(1.0, description="Poll period.")
    timeout: Duration | None = Field(None, description="Reply timeout; default: the bus's.")
    profile: str | None = Field(None, description="Device profile in config/profiles/ (by name).")


class ModbusSerialDevice(SerialDevice):
    """A Modbus slave on a serial line (RTU or ASCII framing): the Modbus TCP device's
    points and planner settings, reached through a bus."""

    unit: int = Field(1, ge=1, le=247, description="Modbus slave address.")
    order: Order = Field(Order.ABCD, description="Default byte/word order of the device.")
    max_gap: int = Field(10, ge=0, le=124)
    max_registers: int = Field(125, ge=1, le=125)
    max_bits: int = Field(2000, ge=1, le=2000)
    holes: list[HoleConfig] = Field(default_factory=list)
    points: list[ModbusPoint] = Field(default_factory=list)

    def specs(self) -> list[PointSpec]:
        return [p.point_spec(self.order) for p in self.points]


class ModbusRtuDevice(ModbusSerialDevice):
    driver: Literal["modbus_rtu"]


class ModbusAsciiDevice(ModbusSerialDevice):
    driver: Literal["modbus_ascii"]


class ScalePoint(PointMetrologyFields):
    id: Ident
    field: Literal["weight", "tare"] = "weight"
    unit: str | None = Field(None, description="Expected unit; another unit reads as bad.")
    description: str | None = None
    sim: Any = Field(
        None, description="Simulator value for this point (metrogate sim): see docs/simulator.md."
    )


class MtSicsDevice(SerialDevice):
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


class ToledoDevice(SerialDevice):
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
    scale: Annotated[float, finite("scale")] = 1.0
    offset: Annotated[float, finite("offset")] = 0.0
    description: str | None = None
    sim: Any = Field(
        None, description="Simulator value for this point (metrogate sim): see docs/simulator.md."
    )


class AsciiDevice(SerialDevice):
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

    @field_validator("request", "terminator")
    @classmethod
    def _bytes_on_the_line(cls, v: str | None) -> str | None:
        # sent and matched as bytes, one per character (latin-1)
        if v is not None:
            try:
                v.encode("latin-1")
            except UnicodeEncodeError as exc:
                bad = v[exc.start]
                raise ValueError(
                    f"{bad!r} (U+{ord(bad):04X}) is not one byte: use characters up to "
                    "U+00FF, e.g. \\x02 for STX"
                ) from None
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
    scale: Annotated[float, finite("scale")] = 1.0
    offset: Annotated[float, finite("offset")] = 0.0
    unit: str | None = None
    description: str | None = None
    sim: Any = Field(
        None, description="Simulator value for this point (metrogate sim): see docs/simulator.md."
    )

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


class Dlt645Device(SerialDevice):
    driver: Literal["dlt645"]
    address: MeterAddress = Field(
        description="Meter address: 12 decimal digits as printed on the meter."
    )
    preamble: int = Field(4, ge=0, le=4, description="FE bytes sent before each request.")
    points: list[Dlt645PointConfig] = Field(default_factory=list)
