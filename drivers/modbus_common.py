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


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A request's points with their decoders, byte offsets and scaling."""

    ids: tuple[str, ...]
    offsets: tuple[int, ...]
    ends: tuple[int, ...]
    decoders: tuple[BlockDecoder, ...]
    specs: tuple[PointSpec, ...]
    plain: tuple[bool, ...]


_compiled: dict[int, tuple[Request, _Compiled]] = {}
_numeric_decoders: dict[tuple[DataType, Order], BlockDecoder] = {}


def _decoder(spec: PointSpec) -> BlockDecoder:
    """``block_decoder(spec)``, one per numeric type and byte order for the whole process.

    A numeric point's decoder depends on nothing else (where it reads is the offset
    passed in), so a site's thousands of float32 points share one function.
    """
    if spec.type is DataType.BOOL or spec.type is DataType.STRING or spec.table.is_bit:
        return block_decoder(spec)  # these decode with the spec itself (or not from a block)
    key = (spec.type, spec.order)
    shared = _numeric_decoders.get(key)
    if shared is None:
        shared = _numeric_decoders[key] = block_decoder(spec)
    return shared


def _compile(req: Request) -> _Compiled:
    hit = _compiled.get(id(req))
    if hit is not None and hit[0] is req:
        return hit[1]
    points = req.points
    comp = _Compiled(
        ids=tuple(p.id for p in points),
        offsets=tuple(p.address - req.address for p in points),
        ends=tuple(p.end - req.address for p in points),
        decoders=tuple(_decoder(p) for p in points),
        specs=points,
        plain=tuple(p.scale == 1.0 and p.offset == 0.0 for p in points),
    )
    _compiled[id(req)] = (req, comp)  # keeps req alive, so its id is never reused
    return comp


def decode_request(req: Request, data: Sequence[int] | Sequence[bool], ts_us: int) -> list[Sample]:
    """Samples for every point of ``req`` from the reply's registers or bits."""
    comp = _compile(req)
    out: list[Sample] = []
    n = len(data)
    good = Quality.GOOD
    if req.table.is_bit:
        for pid, lo, end in zip(comp.ids, comp.offsets, comp.ends, strict=True):
            if end > n:
                out.append(Sample(pid, None, None, Quality.BAD, Reason.DEVICE_FAILURE, ts_us))
            else:
                bit = bool(data[lo])
                out.append(Sample(pid, bit, bit, good, None, ts_us))
        return out
    block = struct.pack(f">{n}H", *data)
    for pid, lo, end, dec, spec, plain in zip(
        comp.ids, comp.offsets, comp.ends, comp.decoders, comp.specs, comp.plain, strict=True
    ):
        if end > n:
            out.append(Sample(pid, None, None, Quality.BAD, Reason.DEVICE_FAILURE, ts_us))
            continue
        raw = dec(block, 2 * lo)
        if isinstance(raw, float) and not math.isfinite(raw):
            out.append(Sample(pid, None, None, Quality.BAD, Reason.INVALID_VALUE, ts_us))
            continue
        out.append(Sample(pid, raw if plain else engineering(spec, raw), raw, good, None, ts_us))
    return out


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
        self.timeout = timeout
        self.clock = clock

    async def run(self, client: Any) -> list[Sample]:
        """One poll. Raises DeviceUnreachable on a lost connection, DeviceTimeout when
        every request timed out; otherwise failed requests yield bad samples."""
        samples: list[Sample] = []
        timeouts = 0
        for req in self.requests:
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
            samples += decode_request(req, data, ts)
        if self.requests and timeouts == len(self.requests):
            raise DeviceTimeout(self.device_id, self.endpoint, f"no reply within {self.timeout}s")
        return samples

    def describe(self) -> list[str]:
        return [f"unit {self.unit}: {r.describe()}" for r in self.requests]


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
