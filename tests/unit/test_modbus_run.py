"""A request whose points tile it with one numeric type decodes in one unpack, and
gives exactly the samples the per-point path gives, for any registers."""

from __future__ import annotations

import dataclasses
import math
import struct

from hypothesis import given
from hypothesis import strategies as st

from drivers.base import Quality, Reason
from drivers.modbus_codec import DataType, Order, PointSpec, Table
from drivers.modbus_common import CompiledRequest, compile_request
from drivers.modbus_plan import plan

T0 = 1_767_225_600_000_000


def compiled(specs: list[PointSpec]) -> list[CompiledRequest]:
    return [compile_request(r) for r in plan(specs)]


def tiling(kind: DataType, n: int, width: int) -> list[PointSpec]:
    return [PointSpec(f"p{i}", Table.HOLDING, width * i, kind) for i in range(n)]


@given(
    kind=st.sampled_from(
        [(DataType.FLOAT32, 2), (DataType.FLOAT64, 4), (DataType.INT16, 1), (DataType.UINT32, 2)]
    ),
    n=st.integers(1, 30),
    data=st.data(),
)
def test_the_run_decodes_exactly_as_point_by_point(
    kind: tuple[DataType, int], n: int, data: st.DataObject
) -> None:
    specs = tiling(kind[0], n, kind[1])
    for req in compiled(specs):
        assert req.run is not None
        words = data.draw(
            st.lists(st.integers(0, 0xFFFF), min_size=req.request.count, max_size=req.request.count)
        )
        slow = dataclasses.replace(req, run=None)
        assert req.decode(words, T0) == slow.decode(words, T0)


def test_non_finite_floats_are_invalid_values_and_a_short_reply_marks_the_missing_bad() -> None:
    (req,) = compiled(tiling(DataType.FLOAT32, 3, 2))
    words = list(struct.unpack(">6H", struct.pack(">3f", 1.5, float("nan"), float("-inf"))))
    good, nan, inf = req.decode(words, T0)
    assert (good.value, good.raw, good.quality) == (1.5, 1.5, Quality.GOOD)
    assert nan.quality is Quality.BAD and nan.reason is Reason.INVALID_VALUE and nan.value is None
    assert inf.quality is Quality.BAD and inf.reason is Reason.INVALID_VALUE
    # a device that answers fewer registers than asked: the slow path, point by point
    first, *missing = req.decode(words[:2], T0)
    assert first.value == 1.5 and all(s.reason is Reason.DEVICE_FAILURE for s in missing)


def test_no_run_where_points_are_scaled_reordered_mixed_or_leave_holes() -> None:
    f32 = DataType.FLOAT32
    cases = [
        [PointSpec("a", Table.HOLDING, 0, f32), PointSpec("b", Table.HOLDING, 2, f32, scale=2.0)],
        [PointSpec("a", Table.HOLDING, 0, f32), PointSpec("b", Table.HOLDING, 2, f32, Order.CDAB)],
        [PointSpec("a", Table.HOLDING, 0, f32), PointSpec("b", Table.HOLDING, 2, DataType.INT32)],
        [PointSpec("a", Table.HOLDING, 0, f32), PointSpec("b", Table.HOLDING, 4, f32)],
        [
            PointSpec("a", Table.COIL, 0, DataType.BOOL),
            PointSpec("b", Table.COIL, 1, DataType.BOOL),
        ],
    ]
    for specs in cases:
        assert [r.run for r in compiled(specs)] == [None] * len(compiled(specs)), specs


@given(
    kind=st.sampled_from([DataType.FLOAT32, DataType.FLOAT64, DataType.INT64, DataType.UINT64]),
    scale=st.one_of(st.sampled_from([1e300, -1e300, 1e308]), st.floats(-1e308, 1e308)),
    offset=st.one_of(st.just(0.0), st.sampled_from([1.7e308, -1.7e308])),
    data=st.data(),
)
def test_a_scaled_value_past_the_floats_is_invalid_never_infinite(
    kind: DataType, scale: float, offset: float, data: st.DataObject
) -> None:
    """A value that scale and offset take past the float range is a BAD invalid value,
    as an infinite or NaN register is — never ±inf or NaN into the metrology."""
    width = 2 if kind is DataType.FLOAT32 else 4
    spec = PointSpec("p", Table.HOLDING, 0, kind, scale=scale, offset=offset)
    (req,) = compiled([spec])
    words = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=width, max_size=width))
    (s,) = req.decode(words, T0)
    if s.quality is Quality.GOOD:
        assert isinstance(s.value, int | float) and math.isfinite(s.value), s
    else:
        assert s.value is None and s.reason is Reason.INVALID_VALUE


def test_a_float32_scaled_past_the_floats_is_invalid() -> None:
    (req,) = compiled([PointSpec("p", Table.HOLDING, 0, DataType.FLOAT32, scale=1e300)])
    (s,) = req.decode(list(struct.unpack(">2H", struct.pack(">f", 3e38))), T0)
    assert (s.value, s.quality, s.reason) == (None, Quality.BAD, Reason.INVALID_VALUE)
