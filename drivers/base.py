"""The contract every driver keeps, and the errors drivers raise.

A driver is an async context manager bound to one device. ``read()`` performs one
poll of every configured point and returns one :class:`Sample` per point, stamped
with the UTC time at which the reply arrived. When nothing at all could be read
(connection refused or lost, every request timed out) it raises a
:class:`DriverError` subclass instead, so the caller can back off; when only part
of a poll failed (an exception reply to one request), the affected samples come
back with ``Quality.BAD`` and a reason.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from enum import StrEnum
from types import TracebackType
from typing import NamedTuple, Protocol, Self

Value = float | int | bool | str
"""A decoded point value."""

Clock = Callable[[], int]
"""Returns the current UTC time as integer microseconds since the Unix epoch."""


def scaled(raw: float, scale: float, offset: float) -> float | None:
    """``raw × scale + offset``, or None when that leaves the float range.

    Every driver that applies a point's scale and offset does it here, so none hands
    on ±inf or NaN as a reading: None becomes a bad ``invalid_value`` sample.
    """
    value = raw * scale + offset
    return value if math.isfinite(value) else None


def utc_now_us() -> int:
    """Wall-clock UTC time in microseconds since the epoch (the default :data:`Clock`)."""
    return time.time_ns() // 1000


class Quality(StrEnum):
    """Severity of a reading, as OPC UA status codes have it."""

    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


class Reason(StrEnum):
    """Why a reading is not ``good`` (OPC UA sub-status names, snake_case)."""

    NO_COMMUNICATION = "no_communication"
    DEVICE_FAILURE = "device_failure"
    SENSOR_FAILURE = "sensor_failure"
    OUT_OF_SERVICE = "out_of_service"
    CONFIG_ERROR = "config_error"
    LAST_USABLE_VALUE = "last_usable_value"
    UNITS_EXCEEDED = "units_exceeded"
    CALIBRATION_EXPIRED = "calibration_expired"
    NOT_STABLE = "not_stable"
    INVALID_VALUE = "invalid_value"
    OUT_OF_CALIBRATED_RANGE = "out_of_calibrated_range"
    CLOCK_NOT_SYNCHRONISED = "clock_not_synchronised"


class Sample(NamedTuple):
    """One point's value from one poll, as the driver saw it (immutable).

    A named tuple rather than a frozen dataclass: a driver makes one per point and
    poll, and a frozen dataclass's ``__init__`` costs about 3 × as much
    (``bench/bench_hotpath.py``), some 5 % of what a reading costs the gateway at
    60,000 readings/s.

    ``raw`` is the value decoded from the wire before scale and offset; ``value`` is
    the engineering value after them (both ``None`` when the read failed).

    ``flags`` name conditions the instrument itself reported with the value (a meter's
    status bits such as ``battery_low``); ``server_ts_us`` is when a server in between
    (OPC UA) last handled the value, kept beside ``ts_us`` (the source's own time).
    """

    point: str
    value: Value | None
    raw: Value | None
    quality: Quality
    reason: Reason | None
    ts_us: int
    flags: tuple[str, ...] = ()
    server_ts_us: int | None = None


class DriverError(Exception):
    """A failure talking to one device; carries the device id and its endpoint."""

    reason: Reason = Reason.NO_COMMUNICATION

    def __init__(self, device: str, endpoint: str, message: str) -> None:
        super().__init__(f"{device} at {endpoint}: {message}")
        self.device = device
        self.endpoint = endpoint
        self.message = message


class DeviceUnreachable(DriverError):
    """The connection could not be opened or was lost."""


class DeviceTimeout(DriverError):
    """The device did not answer within the request timeout."""


class ProtocolError(DriverError):
    """The device answered with bytes that do not form a valid reply."""

    reason = Reason.DEVICE_FAILURE


class DeviceRejected(DriverError):
    """The device answered with a protocol-level error (e.g. a Modbus exception)."""

    def __init__(self, device: str, endpoint: str, message: str, code: int, reason: Reason) -> None:
        super().__init__(device, endpoint, message)
        self.code = code
        self.reason = reason


class Driver(Protocol):
    """What the runtime needs from every driver."""

    device_id: str
    endpoint: str

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def read(self) -> list[Sample]:
        """Poll every point once (see the module docstring for the failure contract)."""
        ...

    def describe_plan(self) -> list[str]:
        """Human-readable lines, one per request a poll sends (``metrogate plan``)."""
        ...

    def identity(self) -> dict[str, str]:
        """The instrument's own identity as read at connect (serial number, ...)."""
        ...


class Unconnected:
    """Context-manager half of :class:`Driver` for drivers with nothing to open.

    Drivers on a shared serial bus send through the bus owner, which opens the port;
    entering and leaving such a driver does nothing.
    """

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None
