"""Any value a driver can hand over goes through the whole metrology — calibration,
uncertainty, conformity, limits, rate, stuck, SPC — and comes out as a reading the wire
can carry: a finite value or a bad one, never ±inf or NaN, and never an exception."""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.wire.reading import Quality, to_wire
from tests.unit.test_metrology import T0, S, make, reading

POINT: dict[str, Any] = {
    "instrument": "pg1",
    "spec": {"lower": 49.8, "upper": 49.95, "rule": "guarded"},
    "rules": [
        {"kind": "high", "limit": 80, "deadband": 5},
        {"kind": "low", "limit": -80},
        {"kind": "rate", "max": 10, "per": 1},
        {"kind": "stuck", "count": 3},
    ],
    "spc": {"learn": 5, "nelson": [1, 2, 3, 4, 5, 6, 7, 8]},
}
EXTREMES = [1.7e308, -1.7e308, 1e200, -1e200, 5e-324, 0.0, -0.0, 2**63 - 1, -(2**63), 2**64 - 1]


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(
        st.one_of(
            st.sampled_from(EXTREMES),
            st.floats(allow_nan=False, allow_infinity=False),
            st.integers(-(2**63), 2**64 - 1),  # what a driver can decode
            st.booleans(),
        ),
        min_size=1,
        max_size=14,
    ),
    quality=st.sampled_from([Quality.GOOD, Quality.UNCERTAIN]),
)
def test_any_value_comes_out_finite_or_bad_and_carried_by_the_wire(
    values: list[Any], quality: Quality
) -> None:
    dm = make({"p": POINT})
    for i, v in enumerate(values):
        r = reading("p", v, T0 + i * S, quality)
        records = dm.process([r], T0 + i * S)
        if r.quality is not Quality.BAD and isinstance(r.value, float):
            assert math.isfinite(r.value), r
        wire = to_wire(r)
        text = orjson.dumps(wire)  # raises on what JSON cannot carry
        assert b"NaN" not in text and b"Infinity" not in text
        for rec in records:
            orjson.dumps(rec)
        for key in ("U", "u", "value"):
            x = wire.get(key)
            if isinstance(x, float):
                assert math.isfinite(x), (key, wire)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.sampled_from(EXTREMES), st.floats(49.0, 51.0)), min_size=100, max_size=130
    )
)
def test_capability_over_a_window_of_extreme_values_never_raises(values: list[Any]) -> None:
    """The rolling Cpk's running sum is re-summed exactly every 10 windows: values near
    the float limit must not make that (or the learning phase) raise or warn."""
    cfg = POINT | {
        "spc": {"learn": 5, "capability_window": 10, "min_cpk": 1.33, "nelson": [1, 2]},
    }
    dm = make({"p": cfg})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's overflow warnings included
        for i, v in enumerate(values):
            r = reading("p", v, T0 + i * S)
            dm.process([r], T0 + i * S)
            orjson.dumps(to_wire(r))
        json.dumps(dm.to_state())
