"""Read planner: points of a device compiled once into the fewest Modbus requests.

Pure. Points of one table are sorted by address and merged greedily: a request grows
to take the next point while the span stays within the per-request limit, the gap
it bridges is at most ``max_gap`` registers (bits, for bit tables: ``max_gap × 16``),
and the span does not touch a hole the device rejects. For sorted intervals, taking
each point into the current request whenever the constraints allow yields the
minimum number of requests, since every constraint only gets harder as a span grows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from drivers.modbus_codec import PointSpec, Table

MAX_REGISTERS = 125
MAX_BITS = 2000


@dataclass(frozen=True, slots=True)
class Hole:
    """Addresses ``start`` to ``end - 1`` of ``table`` that the device rejects."""

    table: Table
    start: int
    end: int

    def overlaps(self, table: Table, start: int, end: int) -> bool:
        return table is self.table and start < self.end and self.start < end


@dataclass(frozen=True, slots=True)
class Request:
    """One read request and the points decoded from its reply."""

    table: Table
    address: int
    count: int
    points: tuple[PointSpec, ...]

    def describe(self) -> str:
        last = self.address + self.count - 1
        ids = ", ".join(p.id for p in self.points)
        unit = "bits" if self.table.is_bit else "registers"
        return f"{self.table.value} {self.address}..{last} ({self.count} {unit}): {ids}"


class PlanError(ValueError):
    """A point cannot be read at all (wider than a request, or inside a hole).

    ``point`` is the id of the offending point, so a config check can locate it.
    """

    def __init__(self, message: str, point: str | None = None) -> None:
        super().__init__(message)
        self.point = point


def plan(
    points: Sequence[PointSpec],
    *,
    max_registers: int = MAX_REGISTERS,
    max_bits: int = MAX_BITS,
    max_gap: int = 10,
    holes: Iterable[Hole] = (),
) -> list[Request]:
    """Compile ``points`` into requests, ordered by table then address."""
    holes = tuple(holes)
    requests: list[Request] = []
    for table in Table:
        members = sorted((p for p in points if p.table is table), key=lambda p: (p.address, p.end))
        if not members:
            continue
        limit = max_bits if table.is_bit else max_registers
        gap = max_gap * 16 if table.is_bit else max_gap
        for p in members:
            if p.width > limit:
                raise PlanError(f"{p.id}: {p.width} wide, more than {limit} per request", p.id)
            if any(h.overlaps(table, p.address, p.end) for h in holes):
                raise PlanError(
                    f"{p.id}: address {p.address} lies in a hole the device rejects", p.id
                )
        start, end, group = members[0].address, members[0].end, [members[0]]
        for p in members[1:]:
            new_end = max(end, p.end)
            fits = (
                p.address - end <= gap
                and new_end - start <= limit
                and not any(h.overlaps(table, start, new_end) for h in holes)
            )
            if fits:
                end = new_end
                group.append(p)
            else:
                requests.append(Request(table, start, end - start, tuple(group)))
                start, end, group = p.address, p.end, [p]
        requests.append(Request(table, start, end - start, tuple(group)))
    return requests
