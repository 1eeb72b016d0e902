"""Executing a compiled read plan on a pymodbus client and decoding the replies.

Shared by every Modbus transport (TCP, RTU, ASCII, RTU over TCP): the transport
only supplies a connected pymodbus client; request execution, error mapping and
decoding live here once.
"""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymodbus.exceptions import ConnectionException, ModbusException

from drivers.base import (
    Clock,
    DeviceTimeout,
    DeviceUnreachable,
    Quality,
    Reason,
    Sample,
    utc_now_us,
)
from drivers.cancel import reraise_pending_cancel
from drivers.modbus_codec import (
    BlockDecoder,
    DataType,
    Order,
    PointSpec,
    Table,
    block_decoder,
    engineering,
    numeric_code,
)
from drivers.modbus_plan import Request

# Modbus exception code → reading reason (METROLOGY.md, "Reading quality").
EXCEPTION_REASONS: dict[int, Reason] = {
    0x01: Reason.CONFIG_ERROR,
    0x02: Reason.CONFIG_ERROR,
    0x03: Reason.CONFIG_ERROR,
    0x04: Reason.DEVICE_FAILURE,
    0x05: Reason.DEVICE_FAILURE,
    0x06: Reason.DEVICE_FAILURE,
    0x0A: Reason.NO_COMMUNICATION,
    0x0B: Reason.NO_COMMUNICATION,
}

EXCEPTION_NAMES: dict[int, str] = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "server device failure",
    0x05: "acknowledge",
    0x06: "server device busy",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target failed to respond",
}


def _call(client: Any, req: Request, unit: int) -> Any:
    kwargs = {"count": req.count, "device_id": unit}
    match req.table:
        case Table.HOLDING:
            return client.read_holding_registers(req.address, **kwargs)
        case Table.INPUT:
            return client.read_input_registers(req.address, **kwargs)
        case Table.COIL:
            return client.read_coils(req.address, **kwargs)
        case Table.DISCRETE:
            return client.read_discrete_inputs(req.address, **kwargs)


def _failed(req: Request, reason: Reason, ts_us: int) -> list[Sample]:
    return [Sample(p.id, None, None, Quality.BAD, reason, ts_us) for p in req.points]


_numeric_decoders: dict[tuple[DataType, Order], BlockDecoder] = {}


def _decoder(spec: PointSpec) -> BlockDecoder:
    """``block_decoder(spec)``, one per numeric type and byte order for the whole process.

    A numeric point's decoder depends on nothing else (where it reads is the offset
    passed in), so a site's thousands of float32 points share one function. The
    table is bounded by the number of types × byte orders, whatever is configured.
    """
    if spec.type is DataType.BOOL or spec.type is DataType.STRING or spec.table.is_bit:
        return block_decoder(spec)  # these decode with the spec itself (or not from a block)
    key = (spec.type, spec.order)
    shared = _numeric_decoders.get(key)
    if shared is None:
        shared = _numeric_decoders[key] = block_decoder(spec)
    return shared


@dataclass(frozen=True, slots=True)
class CompiledRequest:
    """A request with its points' decoders, byte offsets and scaling, ready for replies.

    Built once per request by the driver that sends it (:func:`compile_request`) and
    held by that driver, so it lives and dies with the driver.
    """

    request: Request
    ids: tuple[str, ...]
    offsets: tuple[int, ...]
    ends: tuple[int, ...]
    decoders: tuple[BlockDecoder, ...]
    plain: tuple[bool, ...]
    run: struct.Struct | None = None
    """Set when the points tile the request with one numeric type in ABCD order and no
    scaling (the common case): a full reply is then unpacked in one call."""

    def decode(self, data: Sequence[int] | Sequence[bool], ts_us: int) -> list[Sample]:
        """Samples for every point of the request from the reply's registers or bits."""
        out: list[Sample] = []
        n = len(data)
        good = Quality.GOOD
        run = self.run
        if run is not None and 2 * n == run.size:
            isfinite = math.isfinite
            bad, invalid = Quality.BAD, Reason.INVALID_VALUE
            return [
                Sample(pid, v, v, good, None, ts_us)
                if type(v) is int or isfinite(v)
                else Sample(pid, None, None, bad, invalid, ts_us)
                for pid, v in zip(self.ids, run.unpack(struct.pack(f">{n}H", *data)), strict=True)
            ]
        if self.request.table.is_bit:
            for pid, lo, end in zip(self.ids, self.offsets, self.ends, strict=True):
                if end > n:
                    out.append(Sample(pid, None, None, Quality.BAD, Reason.DEVICE_FAILURE, ts_us))
                else:
                    bit = bool(data[lo])
                    out.append(Sample(pid, bit, bit, good, None, ts_us))
            return out
        block = struct.pack(f">{n}H", *data)
        specs = self.request.points
        for pid, lo, end, dec, spec, plain in zip(
            self.ids, self.offsets, self.ends, self.decoders, specs, self.plain, strict=True
        ):
            if end > n:
                out.append(Sample(pid, None, None, Quality.BAD, Reason.DEVICE_FAILURE, ts_us))
                continue
            raw = dec(block, 2 * lo)
            if isinstance(raw, float) and not math.isfinite(raw):
                out.append(Sample(pid, None, None, Quality.BAD, Reason.INVALID_VALUE, ts_us))
                continue
            if plain:
                out.append(Sample(pid, raw, raw, good, None, ts_us))
                continue
            value = engineering(spec, raw)
            if value is None:  # scaled past the float range
                out.append(Sample(pid, None, None, Quality.BAD, Reason.INVALID_VALUE, ts_us))
                continue
            out.append(Sample(pid, value, raw, good, None, ts_us))
        return out


def compile_request(req: Request) -> CompiledRequest:
    """What decoding the replies to ``req`` needs, worked out once."""
    points = req.points
    plain = tuple(p.scale == 1.0 and p.offset == 0.0 for p in points)
    return CompiledRequest(
        request=req,
        ids=tuple(p.id for p in points),
        offsets=tuple(p.address - req.address for p in points),
        ends=tuple(p.end - req.address for p in points),
        decoders=tuple(_decoder(p) for p in points),
        plain=plain,
        run=_run(req, all(plain)),
    )


def _run(req: Request, plain: bool) -> struct.Struct | None:
    """One ``Struct`` for the whole reply when every point is the next of one type."""
    points = req.points
    if not plain or not points or req.table.is_bit:
        return None
    first = points[0]
    numeric = numeric_code(first.type)
    if numeric is None or any(
        p.type is not first.type or p.order is not Order.ABCD for p in points
    ):
        return None
    code, width = numeric
    if any(p.address != req.address + i * width for i, p in enumerate(points)):
        return None
    if req.count != len(points) * width:
        return None
    return struct.Struct(f">{len(points)}{code}")


def decode_request(req: Request, data: Sequence[int] | Sequence[bool], ts_us: int) -> list[Sample]:
    """Samples for every point of ``req`` from the reply's registers or bits.

    Compiles ``req`` on every call; a driver compiles its requests once
    (:func:`compile_request`) and decodes with :meth:`CompiledRequest.decode`.
    """
    return compile_request(req).decode(data, ts_us)


def plan_lines(requests: Sequence[Request], unit: int, framing: str | None = None) -> list[str]:
    """One line per request of a poll (``metrogate plan``), prefixed by the unit it goes to."""
    prefix = f"unit {unit}" if framing is None else f"{framing} unit {unit}"
    return [f"{prefix}: {r.describe()}" for r in requests]


class PlanExecutor:
    """Runs one device's requests, one at a time, on a pymodbus async client."""

    def __init__(
        self,
        device_id: str,
        endpoint: str,
        unit: int,
        requests: Sequence[Request],
        *,
        timeout: float,
        clock: Clock = utc_now_us,
    ) -> None:
        self.device_id = device_id
        self.endpoint = endpoint
        self.unit = unit
        self.requests = tuple(requests)
        self.compiled = tuple(compile_request(r) for r in self.requests)
        self.timeout = timeout
        self.clock = clock

    async def run(self, client: Any) -> list[Sample]:
        """One poll. Raises DeviceUnreachable on a lost connection, DeviceTimeout when
        every request timed out; otherwise failed requests yield bad samples."""
        samples: list[Sample] = []
        timeouts = 0
        for compiled in self.compiled:
            req = compiled.request
            reraise_pending_cancel()
            try:
                async with asyncio.timeout(self.timeout):
                    reply = await _call(client, req, self.unit)
            except TimeoutError:
                timeouts += 1
                samples += _failed(req, Reason.NO_COMMUNICATION, self.clock())
                continue
            except ConnectionException as exc:
                raise DeviceUnreachable(self.device_id, self.endpoint, str(exc)) from exc
            except ModbusException as exc:
                # pymodbus reports its own timeouts and garbled replies this way
                if not client.connected:
                    raise DeviceUnreachable(self.device_id, self.endpoint, str(exc)) from exc
                timeouts += 1
                samples += _failed(req, Reason.NO_COMMUNICATION, self.clock())
                continue
            ts = self.clock()
            if reply.isError():
                code = int(getattr(reply, "exception_code", 0))
                samples += _failed(req, EXCEPTION_REASONS.get(code, Reason.DEVICE_FAILURE), ts)
                continue
            data = reply.bits if req.table.is_bit else reply.registers
            samples += compiled.decode(data, ts)
        if self.requests and timeouts == len(self.requests):
            raise DeviceTimeout(self.device_id, self.endpoint, f"no reply within {self.timeout}s")
        return samples

    def describe(self) -> list[str]:
        return plan_lines(self.requests, self.unit)


def point_types_ok(spec: PointSpec) -> str | None:
    """Why a point's type cannot live in its table, or None when it can."""
    if spec.table.is_bit and spec.type is not DataType.BOOL:
        return f"{spec.table.value} points hold single bits: type must be bool"
    if spec.type is DataType.STRING and spec.length < 1:
        return "string points need length (registers) ≥ 1"
    if spec.bit is not None and (spec.type is not DataType.BOOL or spec.table.is_bit):
        return "bit selects one bit of a register: only for bool points on holding/input"
    if spec.bit is not None and not 0 <= spec.bit <= 15:
        return "bit must be 0..15"
    return None
