"""Value generators of the simulators: exact values, determinism, validation."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulators.values import Constant, Ramp, RandomWalk, Sine, Step, build_generator


def test_none_means_the_default_constant() -> None:
    generator = build_generator(None, 7)
    assert isinstance(generator, Constant)
    assert generator.value(0.0) == 7
    assert generator.value(1e6) == 7


@pytest.mark.parametrize("bare", [21.5, 3, True, "SN-0042"])
def test_bare_scalar_is_a_constant(bare: float | int | bool | str) -> None:
    generator = build_generator(bare, 0)
    assert generator.value(0.0) == bare
    assert generator.value(123.4) == bare
    assert type(generator.value(5.0)) is type(bare)


def test_constant_kind() -> None:
    assert build_generator({"kind": "constant", "value": 4.5}, 0).value(10.0) == 4.5


def test_sine_values() -> None:
    generator = build_generator({"kind": "sine", "amplitude": 2, "period": 60, "mean": 20}, 0)
    assert generator.value(0.0) == pytest.approx(20.0)
    assert generator.value(15.0) == pytest.approx(22.0)
    assert generator.value(45.0) == pytest.approx(18.0)
    assert generator.value(60.0) == pytest.approx(20.0)


def test_sine_phase_in_degrees_and_offset_alias() -> None:
    generator = build_generator(
        {"kind": "sine", "amplitude": 1, "period": 4, "offset": 5, "phase": 90}, 0
    )
    assert generator == Sine(amplitude=1.0, period=4.0, mean=5.0, phase=90.0)
    assert generator.value(0.0) == pytest.approx(6.0)
    assert generator.value(2.0) == pytest.approx(4.0)


def test_ramp_wraps_between_min_and_max() -> None:
    generator = build_generator({"kind": "ramp", "start": 0, "rate": 10, "min": 0, "max": 100}, 0)
    assert generator.value(0.0) == pytest.approx(0.0)
    assert generator.value(5.0) == pytest.approx(50.0)
    assert generator.value(9.9) == pytest.approx(99.0)
    assert generator.value(10.0) == pytest.approx(0.0)
    assert generator.value(12.5) == pytest.approx(25.0)


def test_falling_ramp_wraps_to_max() -> None:
    generator = Ramp(start=10.0, rate=-2.0, min=0.0, max=10.0)
    assert generator.value(1.0) == pytest.approx(8.0)
    assert generator.value(6.0) == pytest.approx(8.0)


def test_ramp_without_bounds_is_linear() -> None:
    generator = build_generator({"kind": "ramp", "start": 1, "rate": 0.5}, 0)
    assert generator.value(1000.0) == pytest.approx(501.0)


def test_step_cycles_values() -> None:
    generator = build_generator({"kind": "step", "values": [1, 2, 3], "period": 10}, 0)
    assert [generator.value(t) for t in (0, 9.99, 10, 25, 30, 31)] == [1, 1, 2, 3, 1, 1]


def test_step_keeps_value_types() -> None:
    generator = build_generator({"kind": "step", "values": [True, False], "period": 1}, 0)
    assert generator.value(0.5) is True
    assert generator.value(1.5) is False


def _walk(seed: int) -> RandomWalk:
    spec = {"kind": "random_walk", "start": 20, "step": 0.5, "min": 15, "max": 25, "seed": seed}
    generator = build_generator(spec, 0)
    assert isinstance(generator, RandomWalk)
    return generator


def test_random_walk_is_deterministic_for_a_seed() -> None:
    a, b, c = _walk(7), _walk(7), _walk(8)
    times = [0.0, 0.5, 1.0, 2.0, 3.7, 10.0, 100.0]
    series_a = [a.value(t) for t in times]
    assert series_a == [b.value(t) for t in times]
    assert series_a != [c.value(t) for t in times]
    assert series_a[0] == 20.0
    assert series_a[1] == 20.0  # no move before the first interval has passed


def test_random_walk_same_value_whether_stepped_or_jumped_or_rewound() -> None:
    stepped, jumped = _walk(3), _walk(3)
    for t in range(0, 501):
        stepped.value(float(t))
    assert stepped.value(500.0) == jumped.value(500.0)
    # going back in time replays from the start
    assert stepped.value(10.0) == _walk(3).value(10.0)


def test_random_walk_moves_at_most_one_step_per_interval() -> None:
    walk = _walk(11)
    previous = walk.value(0.0)
    moved = 0
    for t in range(1, 200):
        current = walk.value(float(t))
        assert abs(current - previous) <= 0.5 + 1e-12
        moved += current != previous
        previous = current
    assert moved > 150


@given(seed=st.integers(0, 2**32), t=st.floats(0, 5000))
def test_random_walk_stays_within_bounds(seed: int, t: float) -> None:
    walk = RandomWalk(start=0.0, step=3.0, min=-1.0, max=1.0, seed=seed)
    assert -1.0 <= walk.value(t) <= 1.0


@given(t=st.floats(0, 1e6))
def test_wrapping_ramp_stays_within_bounds(t: float) -> None:
    value = Ramp(start=3.0, rate=7.3, min=-5.0, max=5.0).value(t)
    assert -5.0 <= value < 5.0 or math.isclose(value, 5.0)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([1, 2], "expected a constant or a mapping"),
        ({"amplitude": 1}, "missing 'kind'"),
        ({"kind": "sin", "amplitude": 1, "period": 2}, "unknown kind 'sin'"),
        ({"kind": "sine", "amplitude": 1}, "sine: missing 'period'"),
        ({"kind": "sine", "amplitude": 1, "period": 2, "ampl": 3}, "unknown key 'ampl'"),
        ({"kind": "sine", "amplitude": "2", "period": 2}, "'amplitude' must be a number"),
        ({"kind": "sine", "amplitude": True, "period": 2}, "'amplitude' must be a number"),
        ({"kind": "sine", "amplitude": 1, "period": math.nan}, "'period' must be finite"),
        ({"kind": "sine", "amplitude": 1, "period": 0}, "period must be > 0"),
        ({"kind": "sine", "amplitude": 1, "period": 2, "mean": 1, "offset": 2}, "given twice"),
        ({"kind": "ramp", "start": 0, "rate": 1, "min": 0}, "both min and max"),
        ({"kind": "ramp", "start": 0, "rate": 1, "min": 5, "max": 5}, "min must be < max"),
        ({"kind": "ramp", "start": 9, "rate": 1, "min": 0, "max": 5}, "start must lie in"),
        (
            {"kind": "random_walk", "start": 0, "step": 1, "min": 0, "max": 1, "seed": 1.5},
            "'seed' must be an integer",
        ),
        (
            {"kind": "random_walk", "start": 0, "step": -1, "min": 0, "max": 1},
            "step must be ≥ 0",
        ),
        ({"kind": "random_walk", "start": 0, "step": 1, "min": 0}, "missing 'max'"),
        ({"kind": "step", "values": [], "period": 1}, "values must not be empty"),
        ({"kind": "step", "values": "abc", "period": 1}, "'values' must be a list"),
        ({"kind": "step", "values": [1, [2]], "period": 1}, "'values[1]'"),
        ({"kind": "constant"}, "constant: missing 'value'"),
    ],
)
def test_bad_specs_are_rejected_with_a_clear_message(spec: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        build_generator(spec, 0)


def test_generators_validate_when_built_directly() -> None:
    with pytest.raises(ValueError, match="period must be > 0"):
        Step(values=(1,), period=-1.0)
    with pytest.raises(ValueError, match="interval must be > 0"):
        RandomWalk(start=0.0, step=1.0, min=0.0, max=1.0, interval=0.0)
