"""Limits with deadband, rate, stuck, stale and the expression language."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from gateway.config.models.metrology import (
    DeviceMetrologyFields,
    ExpressionRule,
    PointMetrologyFields,
    RuleConfig,
    StaleRule,
    cross_check,
)
from gateway.metrology.rules import CompiledExpression, ExpressionError, StaleCheck, compile_rule

RULE: TypeAdapter[Any] = TypeAdapter(RuleConfig)
S = 1_000_000


def run(rule: dict[str, Any], values: list[float], dt_s: float = 1.0) -> list[tuple[bool, bool]]:
    compiled = compile_rule(RULE.validate_python(rule))
    return [compiled.step(v, round(i * dt_s * S)) for i, v in enumerate(values)]


def test_high_limit_with_deadband() -> None:
    out = run({"kind": "high", "limit": 10, "deadband": 1}, [9, 10, 10.1, 9.5, 9.0, 8.9, 10.01])
    assert [f for f, _ in out] == [False, False, True, False, False, False, True]
    # condition holds until the value is back past the limit by the deadband
    assert [c for _, c in out] == [False, False, True, True, False, False, True]


def test_low_limit_with_deadband() -> None:
    out = run({"kind": "low", "limit": 0, "deadband": 0.5}, [1, 0, -0.1, 0.4, 0.5, -1])
    assert [f for f, _ in out] == [False, False, True, False, False, True]
    assert [c for _, c in out] == [False, False, True, True, False, True]


def test_rate_of_change_per_second() -> None:
    # max 2 per 1 s; readings 0.5 s apart → max step 1.0
    out = run({"kind": "rate", "max": 2}, [0, 1, 2.01, 2.01, 1.01], dt_s=0.5)
    assert [f for f, _ in out] == [False, False, True, False, False]
    out = run({"kind": "rate", "max": 1, "per": "1m"}, [0, 0.5, 2.0], dt_s=30)
    assert [f for f, _ in out] == [False, False, True]


def test_stuck_by_count() -> None:
    out = run({"kind": "stuck", "count": 4}, [1, 2, 2, 2, 2, 2, 3])
    assert [f for f, _ in out] == [False, False, False, False, True, True, False]


def test_stuck_by_duration_and_tolerance() -> None:
    out = run({"kind": "stuck", "duration": "3s", "tolerance": 0.01}, [5, 5.005, 4.995, 5.0, 5.1])
    assert [f for f, _ in out] == [False, False, False, True, False]


def test_stale() -> None:
    check = StaleCheck(StaleRule(kind="stale", timeout=10), start_us=0)
    assert not check.check(9 * S)
    assert check.check(10 * S)
    check.good(8 * S)
    assert not check.check(17 * S) and check.check(18 * S)


def test_rule_state_round_trip() -> None:
    a = compile_rule(RULE.validate_python({"kind": "stuck", "count": 3}))
    a.step(1.0, 0)
    a.step(1.0, S)
    b = compile_rule(RULE.validate_python({"kind": "stuck", "count": 3}))
    b.load_state(a.to_state())
    assert b.step(1.0, 2 * S) == (True, True)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"kind": "high"}, "Field required"),
        ({"kind": "high", "limit": 1, "deadband": -1}, "deadband must be ≥ 0"),
        ({"kind": "rate", "max": 0}, "rate max must be > 0"),
        ({"kind": "stuck"}, "stuck needs count (readings) and/or duration"),
        ({"kind": "stale", "timeout": "0s"}, "stale timeout must be > 0"),
        ({"kind": "stale", "timeout": "soon"}, "invalid duration 'soon'"),
        ({"kind": "median", "limit": 1}, "does not match any of the expected tags"),
        ({"kind": "high", "limit": 1, "on_dleay": 1}, "Extra inputs are not permitted"),
    ],
)
def test_bad_rules_are_refused(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as e:
        RULE.validate_python(rule)
    assert message in str(e.value)


def test_duplicate_rule_names_refused() -> None:
    with pytest.raises(ValidationError, match="two rules on this point are named 'high'"):
        PointMetrologyFields.model_validate(
            {"rules": [{"kind": "high", "limit": 1}, {"kind": "high", "limit": 2}]}
        )
    ok = PointMetrologyFields.model_validate(
        {"rules": [{"kind": "high", "limit": 1}, {"kind": "high", "limit": 2, "name": "hh"}]}
    )
    assert [r.alarm_name for r in ok.rules] == ["high", "hh"]


# --------------------------------------------------------------------------- expressions


@pytest.mark.parametrize(
    ("text", "values", "result"),
    [
        ("a > 2 * b", {"a": 5, "b": 2}, True),
        ("a > 2 * b", {"a": 4, "b": 2}, False),
        ("a - b >= 1 and not c < 0", {"a": 3, "b": 2, "c": 0}, True),
        ("a < 0 or b < 0", {"a": 1, "b": -1}, True),
        ("abs(a - b) > 0.5", {"a": 1, "b": 1.6}, True),
        ("max(a, b, 3) == 3", {"a": 1, "b": 2}, True),
        ("min(a, b) != -a", {"a": 1, "b": -1}, False),
        ("0 < a < 10", {"a": 11}, False),
        ("0 < a <= 10", {"a": 10}, True),
        ("a / b > 1.5", {"a": 4, "b": 2}, True),
        ("-a + +b > 0", {"a": 1, "b": 2}, True),
    ],
)
def test_expression_language(text: str, values: dict[str, float], result: bool) -> None:
    assert CompiledExpression(text)(values) is result


def test_expression_errors_at_evaluation() -> None:
    with pytest.raises(ExpressionError, match="division by zero"):
        CompiledExpression("a / b > 1")({"a": 1, "b": 0})
    with pytest.raises(ExpressionError, match="no usable value for b"):
        CompiledExpression("a > b")({"a": 1})
    assert CompiledExpression("a > b and c < d").names == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("__import__('os').system('x') == 0", "only abs(), min() and max() may be called"),
        ("a.real > 1", "Attribute is not allowed in an expression"),
        ("a[0] > 1", "Subscript is not allowed"),
        ("a ** 2 > 1", "Pow is not allowed"),
        ("(lambda: 1)() > 0", "only abs(), min() and max() may be called"),
        ("'x' == a", "only numbers are allowed as constants"),
        ("True or a > 1", "only numbers are allowed as constants"),
        ("a + 1", "must be a condition"),
        ("a >", "expression syntax error"),
        ("abs(a, b) > 1", "abs() takes 1..1 arguments, got 2"),
        ("max(a, key=b) > 1", "max() takes no keyword arguments"),
        ("abs > 1", "abs is a function"),
        ("[a] == [1]", "List is not allowed"),
        ("a if b else c", "IfExp is not allowed"),
        ("x := 1", "expression syntax error"),
        ("a > " + "+" * 600 + "1", "expression longer than 500 characters"),
        ("a > " + "-" * 40 + "1", "nested deeper than 32 levels"),
    ],
)
def test_bad_expressions_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValidationError) as e:
        ExpressionRule(name="e1", expr=text)
    assert message in str(e.value)


def test_expression_names_are_cross_checked() -> None:
    class Point(PointMetrologyFields):
        id: str

    device = DeviceMetrologyFields.model_validate(
        {"expressions": [{"name": "ok", "expr": "a > b"}, {"name": "bad", "expr": "a > zz"}]}
    )
    problems = cross_check([], [("d1", [Point(id="a"), Point(id="b")])], [device])
    assert problems == [
        (("devices", 0, "expressions", 1, "expr"), "expression 'bad' names unknown point(s): zz")
    ]


def test_duplicate_expression_names_refused() -> None:
    with pytest.raises(ValidationError, match="two expressions are named 'x'"):
        DeviceMetrologyFields.model_validate(
            {"expressions": [{"name": "x", "expr": "a > 1"}, {"name": "x", "expr": "a > 2"}]}
        )
