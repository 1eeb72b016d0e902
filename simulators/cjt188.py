"""Simulated CJ/T 188 water, heat and gas meters sharing one serial line.

:class:`Cjt188Sim` is a :class:`simulators.pty.Responder`: serve it with
:class:`simulators.pty.SimLine` (a real pseudo-terminal) or
:class:`simulators.pty.SimTcp`. Each :class:`SimMeter` answers read requests for the
current data (901FH) addressed to it (or to the wildcard when it is alone on the
line) with the frames of :mod:`drivers.cjt188`, so the simulator and the driver
share one codec and the tests check both against the standard's layouts.

Values are engineering values in the units the meter reports (``units``, default
m³, kWh, kW, m³/h) and may be changed at any time with :meth:`SimMeter.set`; value
faults (:mod:`simulators.faults`: stuck, drift, step) are set per field with
:meth:`SimMeter.set_fault`. Transport faults are a set per meter,
``meter.faults = {Fault.SILENT}``:

* ``SILENT`` — no answer; ``LATE`` — the answer comes ``late_by`` seconds late;
* ``GARBAGE`` — line noise instead of the answer; ``NOISE`` — noise before it;
* ``BAD_CRC`` — checksum wrong; ``TRUNCATED`` — only the first half is sent;
* ``WRONG_SLAVE`` — the answer carries another address;
* ``NO_DATA`` — an abnormal reply (C1H) instead of the data.

A request whose DI is in the other byte order than the meter's (``di_order``) gets
an abnormal reply, as a meter that does not understand the identifier gives.

:func:`cjt188_line` is the simulator factory of the ``cjt188`` driver kind
(:mod:`simulators.factory`): one meter per device of a bus, showing plausible values
(a slowly growing volume and heat, temperatures, a flow) or the points' ``sim:``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Protocol

from drivers import cjt188
from drivers.base import Value
from simulators.factory import (
    LineSim,
    SimulatedDevice,
    SimulatedPoint,
    device_sim,
    point_generator,
    point_sim,
)
from simulators.faults import SimValue, ValueFault
from simulators.pty import Emit
from simulators.serial_instruments import NOISE, Fault, damage, line_faults
from simulators.values import Generator, Ramp, Sine

__all__ = ["Cjt188Sim", "SimMeter", "cjt188_line"]


class SimMeter:
    """One simulated meter: type, values by field, status word, faults.

    ``values`` holds the quantities and numbers of the family's layout by field name
    (missing ones read 0); ``status`` is the ST word (D0–D1 valve, D2 battery, the
    rest manufacturer bits). ``clock_offset`` shifts the meter's clock from local
    time, in seconds, as a meter whose clock runs off would.
    """

    def __init__(
        self,
        meter_type: int,
        values: Mapping[str, Generator | Value] | None = None,
        *,
        units: Mapping[str, int] | None = None,
        status: int = 0,
        di_order: cjt188.DiOrder = "low_first",
        clock_offset: float = 0.0,
    ) -> None:
        self.meter_type = meter_type
        self.family = cjt188.family_of(meter_type)
        layout = cjt188.layout_of(self.family)
        self.fields = [n for n, f in layout.items() if f.kind in ("quantity", "number")]
        unknown = set(values or {}) - set(self.fields)
        if unknown:
            raise ValueError(f"not a field of a {self.family} meter: {', '.join(sorted(unknown))}")
        self.values = {n: SimValue((values or {}).get(n, 0.0)) for n in self.fields}
        self.units = dict(units or {})
        self.status = status
        self.di_order: cjt188.DiOrder = di_order
        self.clock_offset = clock_offset
        self.faults: set[Fault] = set()
        self.late_by: float | None = None
        """How late this meter's ``LATE`` answers come (default: the line's)."""
        self.requests = 0

    def set(self, field: str, value: Generator | Value, t: float) -> None:
        """A new value (or generator) for ``field`` from ``t`` on."""
        self.values[field].set(value, t)

    def set_fault(self, field: str, fault: ValueFault | None, t: float) -> None:
        """Start (or with ``None`` clear) a value fault on ``field`` at ``t``."""
        self.values[field].set_fault(fault, t)

    def body(self, t: float) -> bytes:
        """The 901FH reply body at ``t`` seconds after the simulator started."""
        numbers: dict[str, Decimal] = {}
        for name, v in self.values.items():
            value = v.value(t)
            numbers[name] = Decimal(str(float(value))) if not isinstance(value, str) else Decimal(0)
        when = dt.datetime.now().replace(microsecond=0) + dt.timedelta(seconds=self.clock_offset)
        return cjt188.encode_current_data(
            self.family, numbers, units=self.units, meter_time=when, status=self.status
        )


class Cjt188Sim:
    """Several CJ/T 188 meters on one line, by address (14 digits)."""

    stream_period: float | None = None

    def __init__(
        self,
        meters: Mapping[str, SimMeter],
        *,
        late_by: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.meters = {a.upper(): m for a, m in meters.items()}
        for address in self.meters:
            cjt188.encode_address(address)
        self.late_by = late_by
        self._clock = clock
        self._start = clock()
        self._buf = b""

    def now(self) -> float:
        """Seconds since the simulator started: the ``t`` of value changes and faults."""
        return self._clock() - self._start

    def feed(self, data: bytes) -> list[Emit]:
        self._buf += data
        out: list[Emit] = []
        for _ in range(64):
            found = cjt188.find_frame(self._buf)
            if found is None:
                break
            start, end = found
            raw, self._buf = self._buf[start:end], self._buf[end:]
            request = cjt188.parse_frame(raw)
            if request.control == cjt188.READ and len(request.data) == 3:
                out += self._answer(request, end)
        if len(self._buf) > 512:
            self._buf = b""
        return out

    def _answer(self, request: cjt188.Frame, size: int) -> list[Emit]:
        if request.address == cjt188.WILDCARD:
            kind = request.meter_type
            matching = [(a, m) for a, m in self.meters.items() if m.meter_type == kind]
            if len(matching) > 1:  # every meter answers at once: the line carries a collision
                return [Emit(NOISE * 4, size)]
        else:
            meter = self.meters.get(request.address)
            matching = [] if meter is None else [(request.address, meter)]
        if not matching or matching[0][1].meter_type != request.meter_type:
            return []
        address, meter = matching[0]
        meter.requests += 1
        faults = meter.faults
        ser = request.data[2]
        reply_address = address
        if Fault.WRONG_SLAVE in faults:
            reply_address = f"{(int(address, 16) + 1) % 16**14:014X}"
        understood = request.data[:2] == cjt188.di_bytes(cjt188.CURRENT_DATA, meter.di_order)
        if Fault.NO_DATA in faults or not understood:
            frame = cjt188.error_frame(meter.meter_type, reply_address, ser, meter.status)
        else:
            body = meter.body(self.now())
            frame = cjt188.reply_frame(
                meter.meter_type, reply_address, ser, body, di_order=meter.di_order
            )
        frame = b"\xfe\xfe" + frame
        if Fault.BAD_CRC in faults:
            frame = frame[:-2] + bytes(((frame[-2] + 1) & 0xFF,)) + frame[-1:]
        late = meter.late_by if meter.late_by is not None else self.late_by
        return damage(frame, faults - {Fault.BAD_CRC}, size, late)

    def stream(self) -> bytes:
        return b""


# -- the line factory: the devices of one bus → its meters -----------------------------------


def _plausible(field: str) -> Generator:
    """What a meter shows for ``field`` when its point has no ``sim:`` (default units)."""
    match field:
        case "cumulative_flow":
            return Ramp(start=1234.56, rate=0.001)
        case "settlement_flow":
            return Ramp(start=1200.0, rate=0.0)
        case "current_heat":
            return Ramp(start=45678.9, rate=0.01)
        case "settlement_heat":
            return Ramp(start=45000.0, rate=0.0)
        case "heat_power":
            return Sine(amplitude=1.5, period=120.0, mean=12.5)
        case "flow_rate":
            return Sine(amplitude=0.1, period=90.0, mean=0.85)
        case "supply_temperature":
            return Sine(amplitude=0.5, period=300.0, mean=65.0)
        case "return_temperature":
            return Sine(amplitude=0.5, period=300.0, mean=45.0)
        case "working_hours":
            return Ramp(start=8760.0, rate=1 / 3600)
    return Ramp(start=0.0, rate=0.0)


class MeterPointLike(SimulatedPoint, Protocol):
    @property
    def field(self) -> str: ...

    @property
    def unit(self) -> str | None: ...


class StatusBitLike(Protocol):
    @property
    def bit(self) -> int: ...

    @property
    def name(self) -> str: ...


class Cjt188MeterLike(SimulatedDevice, Protocol):
    """A ``cjt188`` device config as :func:`cjt188_line` reads it."""

    @property
    def address(self) -> str: ...

    @property
    def meter_type(self) -> int: ...

    @property
    def di_order(self) -> cjt188.DiOrder: ...

    @property
    def status_bits(self) -> Sequence[StatusBitLike]: ...

    @property
    def points(self) -> Sequence[MeterPointLike]: ...


METER_FAULTS = ("silent", "slow", "garbage", "noise", "bad_checksum", "truncated",
                "wrong_address", "exception")  # fmt: skip
"""What :func:`cjt188_line` does for a meter (``exception``: abnormal replies C1H)."""
_VALVE = {"valve_open": 0, "valve_closed": 1, "valve_abnormal": 3}
"""Bits D0–D1 of the status word while a valve point's ``sim:`` is true."""
SIMULATED_ADDRESS = "00000000000001"
"""The address a meter configured with the wildcard answers with."""


def meter_of(device: Cjt188MeterLike) -> SimMeter:
    """The simulated meter of one device: each field in the unit of the first point that
    reads it (its ``sim:`` is in that unit), status bits from the status points' ``sim:``,
    the device's faults (``exception``: abnormal replies)."""
    dev = device_sim(device, METER_FAULTS)
    family = cjt188.family_of(device.meter_type)
    layout = cjt188.layout_of(family)
    bits = {b.name: 1 << b.bit for b in device.status_bits}
    values: dict[str, Generator | Value] = {}
    units: dict[str, int] = {}
    status = 0
    for p in device.points:
        f = layout.get(p.field)
        if f is None or f.kind == "status":  # its sim: sets the bit (or the whole word)
            on = point_generator(device.id, p, False).value(0.0)
            if f is not None:
                status = int(on) & 0xFFFF
            elif on and p.field == "battery_low":
                status |= 0x04
            elif on and p.field in _VALVE:
                status = (status & ~0x03) | _VALVE[p.field]
            elif on and p.field in bits:
                status |= bits[p.field]
            continue
        if f.kind not in ("quantity", "number") or p.field in values:
            continue
        if f.kind == "quantity" and p.unit is not None:
            units[p.field] = cjt188.unit_code(p.unit)
        if p.sim is None and dev.value_fault is None:
            values[p.field] = _plausible(p.field)
        else:
            values[p.field] = point_sim(device, p, 0.0, with_device=dev).value
    for name, f in layout.items():
        if f.kind in ("quantity", "number") and name not in values:
            values[name] = _plausible(name)
    meter = SimMeter(
        device.meter_type, values, units=units, status=status, di_order=device.di_order
    )
    meter.faults, meter.late_by = line_faults(dev)
    return meter


def cjt188_line(devices: Sequence[Cjt188MeterLike]) -> LineSim:
    """One meter per device (by ``address``; a wildcard meter answers as
    :data:`SIMULATED_ADDRESS`), values as :func:`meter_of` makes them."""
    meters = {
        (SIMULATED_ADDRESS if d.address.upper() == cjt188.WILDCARD else d.address): meter_of(d)
        for d in devices
    }
    return Cjt188Sim(meters), lambda t: None
