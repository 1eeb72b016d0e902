"""Decision rules at and around the limits."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from gateway.config.models.metrology import PointMetrologyFields, SpecLimits, cross_check
from gateway.metrology.conformity import Decider, Verdict, decide

P, CP, CF, F = Verdict.PASS, Verdict.CONDITIONAL_PASS, Verdict.CONDITIONAL_FAIL, Verdict.FAIL


def spec(**kw: Any) -> SpecLimits:
    return SpecLimits.model_validate({"lower": 9.0, "upper": 10.0, **kw})


@pytest.mark.parametrize(
    ("y", "verdict"),
    [(9.0, P), (10.0, P), (9.5, P), (10.0000001, F), (8.9999999, F), (11, F), (8, F)],
)
def test_simple_acceptance(y: float, verdict: Verdict) -> None:
    assert decide(spec(), y, 0.5) is verdict


@pytest.mark.parametrize(
    ("y", "U", "verdict"),
    [
        (9.9, 0.1, P),  # exactly at the acceptance limit (upper − U), float noise tolerated
        (9.91, 0.1, F),
        (9.1, 0.1, P),
        (9.09, 0.1, F),
        (9.5, 0.1, P),
        (10.0, 0.1, F),  # within tolerance, but not within the acceptance limit
        (9.99, 0.0, P),
    ],
)
def test_guarded_acceptance_with_U(y: float, U: float, verdict: Verdict) -> None:
    assert decide(spec(rule="guarded"), y, U) is verdict


def test_guarded_acceptance_with_fixed_guard() -> None:
    s = spec(rule="guarded", guard=0.2)
    assert decide(s, 9.8, 5.0) is P  # U ignored when the guard is fixed
    assert decide(s, 9.81, 0.0) is F


@pytest.mark.parametrize(
    ("y", "verdict"),
    [
        (9.5, P),
        (9.9, P),  # upper − U
        (9.95, CP),
        (10.0, CP),  # on the limit
        (10.05, CF),
        (10.1, CF),  # upper + U
        (10.1001, F),
        (9.1, P),
        (9.05, CP),
        (8.95, CF),
        (8.8, F),
    ],
)
def test_non_binary_jjf_1094(y: float, verdict: Verdict) -> None:
    assert decide(spec(rule="non_binary"), y, 0.1) is verdict


def test_one_sided_limits() -> None:
    upper_only = SpecLimits.model_validate({"upper": 5.0, "rule": "non_binary"})
    assert decide(upper_only, -1e9, 0.1) is P
    assert decide(upper_only, 5.05, 0.1) is CF
    lower_only = SpecLimits.model_validate({"lower": 5.0})
    assert decide(lower_only, 1e9, None) is P
    assert decide(lower_only, 4.9, None) is F


def test_unknown_uncertainty_uses_zero_guard_and_says_so() -> None:
    d = Decider(spec(rule="guarded")).decide(9.99, None)
    assert d.verdict is P and d.uncertainty_unknown and d.guard == 0.0
    assert not Decider(spec()).decide(9.99, None).uncertainty_unknown


def test_decision_reports_the_nearest_limit() -> None:
    assert Decider(spec()).decide(9.2, None).limit == 9.0
    assert Decider(spec()).decide(9.8, None).limit == 10.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"lower": 10, "upper": 9}, "impossible limits: lower (10.0) must be below upper (9.0)"),
        ({"lower": 1, "upper": 1}, "impossible limits"),
        ({}, "spec needs a lower limit, an upper limit, or both"),
        ({"upper": 1, "guard": -0.1}, "guard must be ≥ 0"),
        ({"upper": 1, "rule": "strict"}, "Input should be 'simple', 'guarded' or 'non_binary'"),
        ({"upper": float("inf")}, "spec.upper must be a finite number"),
    ],
)
def test_bad_spec_is_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as e:
        SpecLimits.model_validate(data)
    assert message in str(e.value)


def test_guard_u_without_instrument_is_a_cross_check_problem() -> None:
    point = PointMetrologyFields.model_validate({"spec": {"upper": 1, "rule": "guarded"}})
    problems = cross_check([], [("d1", [point])])
    assert problems == [
        (
            ("devices", 0, "points", 0, "spec", "guard"),
            "decision rule guarded with guard U needs an instrument on the point (its "
            "uncertainty); set instrument or a numeric guard",
        )
    ]
