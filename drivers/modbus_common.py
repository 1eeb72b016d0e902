"""Executing a compiled read plan on a pymodbus client and decoding the replies.

Shared by every Modbus transport (TCP, RTU, ASCII, RTU over TCP): the transport
only supplies a connected pymodbus client; request execution, error mapping and
decoding live here once.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

from pymodbus.exceptions import ConnectionException, ModbusException

from drivers.base import (
    Clock,
    DeviceTimeout,
    DeviceUnreachable,
    Quality,
    Reason,
    Sample,
    Value,
    reraise_pending_cancel,
    utc_now_us,
)
from drivers.modbus_codec import DataType, PointSpec, Table, decode, engineering
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


def decode_request(req: Request, data: Sequence[int] | Sequence[bool], ts_us: int) -> list[Sample]:
    """Samples for every point of ``req`` from the reply's registers or bits."""
    out: list[Sample] = []
    for p in req.points:
        lo = p.address - req.address
        if p.end - req.address > len(data):
            out.append(Sample(p.id, None, None, Quality.BAD, Reason.DEVICE_FAILURE, ts_us))
            continue
        raw: Value
        if req.table.is_bit:
            raw = bool(data[lo])
        else:
            raw = decode(p, [int(w) for w in data[lo : lo + p.width]])
        if isinstance(raw, float) and not math.isfinite(raw):
            out.append(Sample(p.id, None, None, Quality.BAD, Reason.INVALID_VALUE, ts_us))
            continue
        out.append(Sample(p.id, engineering(p, raw), raw, Quality.GOOD, None, ts_us))
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
