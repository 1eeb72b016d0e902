"""Read planner: fewest requests within the limits, gaps bridged, holes never crossed."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus_codec import DataType, PointSpec, Table
from drivers.modbus_plan import MAX_BITS, MAX_REGISTERS, Hole, PlanError, Request, plan


def reg(id: str, address: int, width: int = 1, table: Table = Table.HOLDING) -> PointSpec:
    """A register point ``width`` registers wide (strings have any width)."""
    if width == 1:
        return PointSpec(id, table, address, DataType.UINT16)
    if width == 2:
        return PointSpec(id, table, address, DataType.FLOAT32)
    return PointSpec(id, table, address, DataType.STRING, length=width)


def bit(id: str, address: int, table: Table = Table.COIL) -> PointSpec:
    return PointSpec(id, table, address, DataType.BOOL)


def spans(requests: Sequence[Request]) -> list[tuple[str, int, int, list[str]]]:
    return [(r.table.value, r.address, r.count, [p.id for p in r.points]) for r in requests]


def test_contiguous_points_make_one_request() -> None:
    points = [reg("a", 0), reg("b", 1, 2), reg("c", 3, 4), reg("d", 7)]
    assert spans(plan(points)) == [("holding", 0, 8, ["a", "b", "c", "d"])]


def test_order_of_the_config_does_not_matter() -> None:
    points = [reg("d", 7), reg("a", 0), reg("c", 3, 4), reg("b", 1, 2)]
    assert spans(plan(points)) == [("holding", 0, 8, ["a", "b", "c", "d"])]


def test_gap_up_to_max_gap_is_bridged() -> None:
    points = [reg("a", 0, 2), reg("b", 7)]  # registers 2..6 unused: a gap of 5
    assert spans(plan(points, max_gap=5)) == [("holding", 0, 8, ["a", "b"])]


def test_gap_over_max_gap_splits() -> None:
    points = [reg("a", 0, 2), reg("b", 8)]  # gap of 6
    assert spans(plan(points, max_gap=5)) == [
        ("holding", 0, 2, ["a"]),
        ("holding", 8, 1, ["b"]),
    ]


def test_max_gap_zero_only_merges_adjacent() -> None:
    points = [reg("a", 0), reg("b", 1), reg("c", 3)]
    assert spans(plan(points, max_gap=0)) == [
        ("holding", 0, 2, ["a", "b"]),
        ("holding", 3, 1, ["c"]),
    ]


def test_exactly_125_registers_is_one_request() -> None:
    points = [reg("a", 0, 2), reg("b", 123, 2)]  # span 0..124
    assert spans(plan(points, max_gap=125)) == [("holding", 0, 125, ["a", "b"])]


def test_126_registers_split() -> None:
    points = [reg("a", 0, 2), reg("b", 124, 2)]  # span 0..125
    assert spans(plan(points, max_gap=125)) == [
        ("holding", 0, 2, ["a"]),
        ("holding", 124, 2, ["b"]),
    ]


def test_a_point_of_exactly_the_limit_is_readable() -> None:
    assert spans(plan([reg("s", 10, 125)])) == [("holding", 10, 125, ["s"])]


def test_many_contiguous_registers_fill_requests_to_the_limit() -> None:
    points = [reg(f"r{i}", i) for i in range(300)]
    requests = plan(points)
    assert [(r.address, r.count) for r in requests] == [(0, 125), (125, 125), (250, 50)]
    assert MAX_REGISTERS == 125


def test_device_limit_below_125() -> None:
    points = [reg(f"r{i}", i) for i in range(10)]
    assert [(r.address, r.count) for r in plan(points, max_registers=4)] == [
        (0, 4),
        (4, 4),
        (8, 2),
    ]


def test_bit_tables_use_2000_bit_limit() -> None:
    points = [bit("first", 0), bit("last", 1999), bit("next", 2000)]
    # gaps of bit tables are counted in bits: max_gap registers × 16
    requests = plan(points, max_gap=125)
    assert spans(requests) == [
        ("coil", 0, 2000, ["first", "last"]),
        ("coil", 2000, 1, ["next"]),
    ]
    assert MAX_BITS == 2000


def test_bit_gap_is_max_gap_times_16() -> None:
    points = [bit("a", 0, Table.DISCRETE), bit("b", 161, Table.DISCRETE)]  # gap of 160 bits
    assert len(plan(points, max_gap=10)) == 1
    points = [bit("a", 0, Table.DISCRETE), bit("b", 162, Table.DISCRETE)]  # gap of 161
    assert len(plan(points, max_gap=10)) == 2


def test_holes_are_never_crossed() -> None:
    points = [reg("a", 0), reg("b", 4)]
    hole = Hole(Table.HOLDING, 2, 3)  # register 2 is rejected
    assert spans(plan(points, holes=[hole])) == [
        ("holding", 0, 1, ["a"]),
        ("holding", 4, 1, ["b"]),
    ]


def test_hole_right_next_to_points_does_not_split() -> None:
    points = [reg("a", 0), reg("b", 1)]
    assert len(plan(points, holes=[Hole(Table.HOLDING, 2, 10)])) == 1


def test_hole_of_another_table_does_not_matter() -> None:
    points = [reg("a", 0), reg("b", 4)]
    assert len(plan(points, holes=[Hole(Table.INPUT, 2, 3)])) == 1


def test_point_wider_than_a_request_is_an_error() -> None:
    with pytest.raises(PlanError, match="wide") as info:
        plan([reg("name", 0, 20)], max_registers=16)
    assert info.value.point == "name"


def test_point_in_a_hole_is_an_error() -> None:
    with pytest.raises(PlanError, match="hole") as info:
        plan([reg("a", 0), reg("inside", 4, 2)], holes=[Hole(Table.HOLDING, 5, 6)])
    assert info.value.point == "inside"


def test_mixed_tables_are_planned_separately_in_table_order() -> None:
    points = [
        reg("h", 0),
        reg("i", 0, table=Table.INPUT),
        bit("c", 0),
        bit("d", 0, Table.DISCRETE),
        reg("h2", 1),
        bit("c2", 5),
    ]
    assert spans(plan(points)) == [
        ("coil", 0, 6, ["c", "c2"]),
        ("discrete", 0, 1, ["d"]),
        ("input", 0, 1, ["i"]),
        ("holding", 0, 2, ["h", "h2"]),
    ]


def test_bits_of_one_register_share_a_request() -> None:
    points = [
        PointSpec("alarm", Table.INPUT, 4, DataType.BOOL, bit=0),
        PointSpec("ready", Table.INPUT, 4, DataType.BOOL, bit=7),
    ]
    assert spans(plan(points)) == [("input", 4, 1, ["alarm", "ready"])]


def test_no_points_no_requests() -> None:
    assert plan([]) == []


def test_describe() -> None:
    (req,) = plan([reg("v", 0, 2), reg("f", 4)])
    assert req.describe() == "holding 0..4 (5 registers): v, f"
    (req,) = plan([bit("on", 3)])
    assert req.describe() == "coil 3..3 (1 bits): on"


# -- property: valid and minimal ---------------------------------------------------------


def _group_ok(
    group: Sequence[tuple[int, int]], limit: int, gap: int, holes: Sequence[Hole]
) -> bool:
    members = sorted(group)
    start, end = members[0]
    for a, e in members[1:]:
        if a - end > gap:
            return False
        end = max(end, e)
    if end - start > limit:
        return False
    return not any(h.overlaps(Table.HOLDING, start, end) for h in holes)


def _partitions(items: list[int]) -> Iterator[list[list[int]]]:
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _partitions(rest):
        for i in range(len(part)):
            yield [*part[:i], [first, *part[i]], *part[i + 1 :]]
        yield [[first], *part]


def brute_force_minimum(
    intervals: Sequence[tuple[int, int]], limit: int, gap: int, holes: Sequence[Hole]
) -> int:
    """Fewest requests over every way of grouping the points (no greedy assumption)."""
    best = len(intervals)
    for part in _partitions(list(range(len(intervals)))):
        if len(part) < best and all(
            _group_ok([intervals[i] for i in g], limit, gap, holes) for g in part
        ):
            best = len(part)
    return best


@st.composite
def planning_case(draw: st.DrawFn) -> tuple[list[PointSpec], int, int, list[Hole]]:
    limit = draw(st.integers(2, 12))
    gap = draw(st.integers(0, 4))
    holes = [
        Hole(Table.HOLDING, s, s + n)
        for s, n in draw(st.lists(st.tuples(st.integers(0, 30), st.integers(1, 3)), max_size=2))
    ]
    points = []
    for i in range(draw(st.integers(1, 6))):
        address = draw(st.integers(0, 30))
        width = draw(st.integers(1, min(limit, 4)))
        if any(h.overlaps(Table.HOLDING, address, address + width) for h in holes):
            continue
        points.append(reg(f"p{i}", address, width))
    return points, limit, gap, holes


@settings(max_examples=300, deadline=None)
@given(case=planning_case())
def test_plan_is_valid_and_minimal(case: tuple[list[PointSpec], int, int, list[Hole]]) -> None:
    points, limit, gap, holes = case
    requests = plan(points, max_registers=limit, max_gap=gap, holes=holes)
    listed = [p.id for r in requests for p in r.points]
    assert sorted(listed) == sorted(p.id for p in points)  # each point in exactly one request
    for r in requests:
        assert 1 <= r.count <= limit
        assert not any(h.overlaps(r.table, r.address, r.address + r.count) for h in holes)
        for p in r.points:
            assert r.address <= p.address and p.end <= r.address + r.count
        # the request is no wider than its points need, and bridges only allowed gaps
        assert r.address == min(p.address for p in r.points)
        assert r.address + r.count == max(p.end for p in r.points)
        assert _group_ok([(p.address, p.end) for p in r.points], limit, gap, holes)
    intervals = [(p.address, p.end) for p in points]
    if intervals:
        assert len(requests) == brute_force_minimum(intervals, limit, gap, holes)
    else:
        assert requests == []


@settings(max_examples=100, deadline=None)
@given(
    addresses=st.lists(st.integers(0, 5000), min_size=1, max_size=40, unique=True),
    gap=st.integers(0, 20),
)
def test_bit_plan_respects_2000(addresses: list[int], gap: int) -> None:
    points = [bit(f"b{a}", a) for a in addresses]
    requests = plan(points, max_gap=gap)
    assert sorted(p.id for r in requests for p in r.points) == sorted(p.id for p in points)
    for r in requests:
        assert r.count <= 2000
        ends = sorted(p.address for p in r.points)
        assert all(b - a - 1 <= gap * 16 for a, b in itertools.pairwise(ends))
