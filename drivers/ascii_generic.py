"""Generic line-oriented ASCII instruments, described entirely in configuration.

An :class:`AsciiSpec` says what to send (``request``; ``None`` for instruments that
stream unasked), how a reply line ends (``terminator``) and how to read it: a
regular expression with the named groups ``value`` (required), ``unit`` and
``status`` (optional), and a table from status text to quality and reason.

:func:`parse_line` is pure and total: any line gives a sample, never an exception.
A line that does not match, a value that is not a number, a status missing from the
table (``unknown_status`` applies) or a unit other than the configured one never
yields a good value. A pattern may make ``value`` optional, for instruments that
send a status alone (``OL`` for an overload): such a line takes its status's
quality and reason, with no value — bad / device_failure when the status would
call it good, or when the pattern has no ``status`` group.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from drivers.base import (
    Clock,
    DeviceTimeout,
    Quality,
    Reason,
    Sample,
    scaled,
    utc_now_us,
)
from drivers.serial_line import SerialBus, StreamListener, line_finder

__all__ = ["AsciiDriver", "AsciiSpec", "parse_line", "plan_line"]

Verdict = tuple[Quality, Reason | None]


@dataclass(frozen=True, slots=True)
class AsciiSpec:
    pattern: re.Pattern[str]
    request: bytes | None = None
    terminator: bytes = b"\r\n"
    status_map: dict[str, Verdict] = field(default_factory=dict)
    unknown_status: Verdict = (Quality.BAD, Reason.DEVICE_FAILURE)
    point: str = "value"
    unit: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    max_line: int = 256

    def __post_init__(self) -> None:
        if "value" not in self.pattern.groupindex:
            raise ValueError("the response pattern needs a named group 'value'")


def parse_line(spec: AsciiSpec, line: str, ts: int) -> Sample:
    """The sample one reply line (terminator removed) stands for."""
    m = spec.pattern.search(line)
    if m is None:
        return Sample(spec.point, None, None, Quality.BAD, Reason.DEVICE_FAILURE, ts)
    quality: Quality = Quality.GOOD
    reason: Reason | None = None
    if "status" in spec.pattern.groupindex:
        status = (m.group("status") or "").strip()
        quality, reason = spec.status_map.get(status, spec.unknown_status)
    text = m.group("value")
    if text is None:  # the pattern let the value out: a status-only line (``OL``)
        if quality is Quality.GOOD or reason is None:
            quality, reason = Quality.BAD, Reason.DEVICE_FAILURE
        return Sample(spec.point, None, None, quality, reason, ts)
    try:
        raw = float(text.replace(" ", ""))
    except ValueError:
        return Sample(spec.point, None, None, Quality.BAD, Reason.INVALID_VALUE, ts)
    if not math.isfinite(raw):
        return Sample(spec.point, None, None, Quality.BAD, Reason.INVALID_VALUE, ts)
    has_unit = spec.unit is not None and "unit" in spec.pattern.groupindex
    if has_unit and (m.group("unit") or "").strip() != spec.unit:
        return Sample(spec.point, None, None, Quality.BAD, Reason.CONFIG_ERROR, ts)
    if quality is Quality.BAD:
        return Sample(spec.point, None, None, quality, reason, ts)
    value = scaled(raw, spec.scale, spec.offset)
    if value is None:
        return Sample(spec.point, None, None, Quality.BAD, Reason.INVALID_VALUE, ts)
    return Sample(spec.point, value, raw, quality, reason, ts)


def plan_line(spec: AsciiSpec) -> str:
    """What one poll sends (or that it listens) and how the reply is read (``metrogate plan``)."""
    what = repr(spec.request) if spec.request is not None else "(streaming)"
    return f"{what} → /{spec.pattern.pattern}/ → {spec.point}"


class AsciiDriver(StreamListener):
    """A request/response or streaming ASCII instrument with one point."""

    def __init__(
        self,
        device_id: str,
        bus: SerialBus,
        spec: AsciiSpec,
        *,
        timeout: float,
        clock: Clock = utc_now_us,
    ) -> None:
        self.device_id = device_id
        self.endpoint = f"ascii:{bus.endpoint}"
        self.spec = spec
        self._bus = bus
        self._timeout = timeout
        self._clock = clock
        self._find = line_finder(spec.terminator, spec.max_line)
        self._buf = b""
        self._latest: Sample | None = None

    def _streams(self) -> bool:
        return self.spec.request is None

    def _feed(self, data: bytes, _when: float) -> None:
        self._buf += data
        term = self.spec.terminator
        for _ in range(len(self._buf)):
            end = self._buf.find(term)
            if end < 0:
                break
            line, self._buf = self._buf[:end], self._buf[end + len(term) :]
            sample = parse_line(self.spec, line.decode("latin-1").strip(), self._clock())
            if sample.value is not None or self._latest is None:
                self._latest = sample
        if len(self._buf) > self.spec.max_line:
            self._buf = b""  # garbage without a terminator: resynchronise on the next one

    async def read(self) -> list[Sample]:
        if self.spec.request is None:
            sample, self._latest = self._latest, None
            if sample is None:
                if self._error is not None:
                    raise self._error
                raise DeviceTimeout(self.device_id, self.endpoint, "no line since the last poll")
            return [sample]
        reply = await self._bus.transact(
            self.device_id, self.spec.request, self._find, timeout=self._timeout
        )
        line = reply[: -len(self.spec.terminator)].decode("latin-1").strip()
        return [parse_line(self.spec, line, self._clock())]

    def describe_plan(self) -> list[str]:
        return [plan_line(self.spec)]

    def identity(self) -> dict[str, str]:
        return {}
