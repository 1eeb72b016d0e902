"""Mettler Toledo MT-SICS balances (level 0 commands over a serial line).

At the first poll the balance's serial number (``I4``) and software identity
(``I5``) are read and kept as :meth:`MtSicsDriver.identity`; then each poll sends
``S`` (wait for a stable weight) or ``SI`` (weight now) and maps the status:

==========  ====================================================
reply       sample
==========  ====================================================
``S S w u`` good
``S D w u`` uncertain / not_stable (value kept)
``S +``     uncertain / units_exceeded (overload, no value)
``S -``     uncertain / units_exceeded (underload, no value)
``S I``     bad / not_stable (not executable: busy, no stability in time)
``ES``      bad / config_error (syntax: command unknown to this balance)
``ET``      bad / no_communication (transmission error)
``EL``      bad / device_failure (logical error)
==========  ====================================================

A weight in another unit than the configured one is bad / config_error: a value
in grams is never passed off as kilograms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from drivers.base import Clock, Quality, Reason, Sample, Unconnected, utc_now_us
from drivers.serial_line import FrameError, SerialBus, line_finder

__all__ = ["MtSicsDriver", "WeightReply", "parse_identity", "parse_weight", "plan_line"]

CRLF = b"\r\n"

_ERRORS: dict[str, tuple[Reason, str]] = {
    "ES": (Reason.CONFIG_ERROR, "syntax error (command not known)"),
    "ET": (Reason.NO_COMMUNICATION, "transmission error"),
    "EL": (Reason.DEVICE_FAILURE, "logical error"),
}


@dataclass(frozen=True, slots=True)
class WeightReply:
    """A parsed weight reply: the status letter, and value/unit when one was sent."""

    status: str
    value: float | None
    unit: str | None


def parse_weight(line: str) -> WeightReply:
    """Parse the reply to ``S``/``SI`` (without CR LF). Raises ValueError if malformed."""
    fields = line.split()
    if len(fields) == 1 and fields[0] in _ERRORS:
        return WeightReply(fields[0], None, None)
    if len(fields) < 2 or fields[0] != "S":
        raise ValueError(f"not a weight reply: {line!r}")
    status = fields[1]
    if status in ("I", "+", "-"):
        return WeightReply(status, None, None)
    if status not in ("S", "D") or len(fields) != 4:
        raise ValueError(f"not a weight reply: {line!r}")
    value = float(fields[2])
    if not math.isfinite(value):  # float() takes "nan" and "inf": no balance sends them
        raise ValueError(f"not a weight: {line!r}")
    return WeightReply(status, value, fields[3])


def parse_identity(line: str, command: str) -> str | None:
    """The quoted text of an ``I4 A "..."`` style reply, or None if the balance refused."""
    fields = line.split(None, 2)
    if len(fields) < 3 or fields[0] != command or fields[1] != "A":
        return None
    return fields[2].strip().strip('"')


def plan_line(command: str, point: str, unit: str | None) -> str:
    """What one poll sends and reads (``metrogate plan``)."""
    return f"{command} → {point} ({unit or 'unit as reported'})"


class MtSicsDriver(Unconnected):
    """One MT-SICS balance, alone or sharing a line with others (one point: the weight)."""

    def __init__(
        self,
        device_id: str,
        bus: SerialBus,
        *,
        command: Literal["S", "SI"] = "S",
        point: str = "weight",
        unit: str | None = None,
        timeout: float,
        clock: Clock = utc_now_us,
    ) -> None:
        self.device_id = device_id
        self.endpoint = f"mtsics:{bus.endpoint}"
        self.point = point
        self.unit = unit
        self.last_unit: str | None = None
        self._bus = bus
        self._command = command
        self._timeout = timeout
        self._clock = clock
        self._identity: dict[str, str] = {}
        self._identified = False
        self._find = line_finder(CRLF)

    async def _ask(self, command: str) -> str:
        reply = await self._bus.transact(
            self.device_id, command.encode() + CRLF, self._find, timeout=self._timeout
        )
        # line noise shows up as non-printable bytes before the reply: drop them
        return bytes(b for b in reply[:-2] if 0x20 <= b < 0x7F).decode("ascii").strip()

    async def _identify(self) -> None:
        for command, key in (("I4", "serial_number"), ("I5", "software")):
            text = parse_identity(await self._ask(command), command)
            if text is not None:
                self._identity[key] = text
        self._identified = True

    async def read(self) -> list[Sample]:
        if not self._identified:
            await self._identify()
        line = await self._ask(self._command)
        ts = self._clock()
        try:
            reply = parse_weight(line)
        except ValueError as exc:
            raise FrameError(self.device_id, self.endpoint, str(exc)) from exc
        return [self._sample(reply, ts)]

    def _sample(self, reply: WeightReply, ts: int) -> Sample:
        if reply.status in _ERRORS:
            return Sample(self.point, None, None, Quality.BAD, _ERRORS[reply.status][0], ts)
        if reply.status in ("+", "-"):
            return Sample(self.point, None, None, Quality.UNCERTAIN, Reason.UNITS_EXCEEDED, ts)
        if reply.status == "I" or reply.value is None:
            return Sample(self.point, None, None, Quality.BAD, Reason.NOT_STABLE, ts)
        self.last_unit = reply.unit
        if self.unit is not None and reply.unit != self.unit:
            return Sample(self.point, None, None, Quality.BAD, Reason.CONFIG_ERROR, ts)
        if reply.status == "D":
            return Sample(
                self.point, reply.value, reply.value, Quality.UNCERTAIN, Reason.NOT_STABLE, ts
            )
        return Sample(self.point, reply.value, reply.value, Quality.GOOD, None, ts)

    def describe_plan(self) -> list[str]:
        return [plan_line(self._command, self.point, self.unit)]

    def identity(self) -> dict[str, str]:
        return dict(self._identity)
