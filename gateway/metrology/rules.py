"""Edge rules on one point's values: limits, rate of change, stuck, stale; and the
device-level expression language — pure, with small saveable state.

Each point rule has a ``step(value, ts_us)`` returning ``(flag, condition)``:
``flag`` says whether this reading itself violates the rule (it puts the rule's
flag on the reading), ``condition`` is the hysteretic condition the rule's alarm
follows (for limits it stays true until the value is back past the limit by the
deadband). :class:`StaleCheck` works on time instead of values.

Expressions are parsed with :mod:`ast`, checked against a whitelist
(:func:`gateway.config.models.metrology.parse_expression`) and compiled to closures; no
``eval``/``exec`` is ever used.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from typing import Any

from gateway.config.models.metrology import (
    HighLimitRule,
    LowLimitRule,
    RateRule,
    StaleRule,
    StuckRule,
    expression_names,
    parse_expression,
)

__all__ = [
    "CompiledExpression",
    "ExpressionError",
    "HighLimit",
    "LowLimit",
    "PointRule",
    "RateOfChange",
    "StaleCheck",
    "Stuck",
    "compile_rule",
]


class PointRule:
    """Common shape of the value rules."""

    flag: str = ""
    limit: float | None = None

    def step(self, value: float, ts_us: int) -> tuple[bool, bool]:
        raise NotImplementedError

    def to_state(self) -> dict[str, Any]:
        return {}

    def load_state(self, st: dict[str, Any]) -> None:
        return None


class HighLimit(PointRule):
    """Raised when ``value > limit``; cleared when ``value ≤ limit − deadband``."""

    flag = "limit_high"

    def __init__(self, cfg: HighLimitRule) -> None:
        self.limit = cfg.limit
        self.threshold = cfg.limit
        self.clear_at = cfg.limit - cfg.deadband
        self.condition = False

    def step(self, value: float, ts_us: int) -> tuple[bool, bool]:
        over = value > self.clear_at if self.condition else value > self.threshold
        self.condition = over
        return value > self.threshold, over

    def to_state(self) -> dict[str, Any]:
        return {"condition": self.condition}

    def load_state(self, st: dict[str, Any]) -> None:
        self.condition = bool(st.get("condition", False))


class LowLimit(PointRule):
    """Raised when ``value < limit``; cleared when ``value ≥ limit + deadband``."""

    flag = "limit_low"

    def __init__(self, cfg: LowLimitRule) -> None:
        self.limit = cfg.limit
        self.threshold = cfg.limit
        self.clear_at = cfg.limit + cfg.deadband
        self.condition = False

    def step(self, value: float, ts_us: int) -> tuple[bool, bool]:
        under = value < self.clear_at if self.condition else value < self.threshold
        self.condition = under
        return value < self.threshold, under

    def to_state(self) -> dict[str, Any]:
        return {"condition": self.condition}

    def load_state(self, st: dict[str, Any]) -> None:
        self.condition = bool(st.get("condition", False))


class RateOfChange(PointRule):
    """``|Δvalue| / Δt`` against ``max / per`` (units per second), reading to reading."""

    flag = "rate_of_change"

    def __init__(self, cfg: RateRule) -> None:
        self.max_per_s = cfg.max / cfg.per
        self.limit = cfg.max
        self.last: tuple[float, int] | None = None

    def step(self, value: float, ts_us: int) -> tuple[bool, bool]:
        last = self.last
        self.last = (value, ts_us)
        if last is None or ts_us <= last[1]:
            return False, False
        rate = abs(value - last[0]) * 1e6 / (ts_us - last[1])
        hit = rate > self.max_per_s
        return hit, hit

    def to_state(self) -> dict[str, Any]:
        return {"last": None if self.last is None else list(self.last)}

    def load_state(self, st: dict[str, Any]) -> None:
        last = st.get("last")
        self.last = None if last is None else (float(last[0]), int(last[1]))


class Stuck(PointRule):
    """No change beyond ``tolerance`` from the start of the run for N readings or T seconds."""

    flag = "stuck"

    def __init__(self, cfg: StuckRule) -> None:
        self.count = cfg.count
        self.duration_us = None if cfg.duration is None else round(cfg.duration * 1e6)
        self.tolerance = cfg.tolerance
        self.run_value: float | None = None
        self.run_start_us = 0
        self.run_count = 0

    def step(self, value: float, ts_us: int) -> tuple[bool, bool]:
        if self.run_value is None or abs(value - self.run_value) > self.tolerance:
            self.run_value, self.run_start_us, self.run_count = value, ts_us, 1
            return False, False
        self.run_count += 1
        hit = (self.count is not None and self.run_count >= self.count) or (
            self.duration_us is not None and ts_us - self.run_start_us >= self.duration_us
        )
        return hit, hit

    def to_state(self) -> dict[str, Any]:
        return {"value": self.run_value, "start": self.run_start_us, "count": self.run_count}

    def load_state(self, st: dict[str, Any]) -> None:
        v = st.get("value")
        self.run_value = None if v is None else float(v)
        self.run_start_us = int(st.get("start", 0))
        self.run_count = int(st.get("count", 0))


class StaleCheck:
    """No good reading for ``timeout``; measured from the last good one (or from start)."""

    flag = "stale"

    def __init__(self, cfg: StaleRule, start_us: int) -> None:
        self.timeout_us = round(cfg.timeout * 1e6)
        self.limit = cfg.timeout
        self.last_good_us = start_us

    def good(self, ts_us: int) -> None:
        self.last_good_us = max(self.last_good_us, ts_us)

    def check(self, now_us: int) -> bool:
        return now_us - self.last_good_us >= self.timeout_us

    def to_state(self) -> dict[str, Any]:
        return {"last_good": self.last_good_us}

    def load_state(self, st: dict[str, Any]) -> None:
        self.last_good_us = int(st.get("last_good", self.last_good_us))


def compile_rule(cfg: HighLimitRule | LowLimitRule | RateRule | StuckRule) -> PointRule:
    """The runtime form of a value rule config."""
    if isinstance(cfg, HighLimitRule):
        return HighLimit(cfg)
    if isinstance(cfg, LowLimitRule):
        return LowLimit(cfg)
    if isinstance(cfg, RateRule):
        return RateOfChange(cfg)
    return Stuck(cfg)


# --------------------------------------------------------------------------- expressions


class ExpressionError(Exception):
    """An expression could not be evaluated this time (missing point, division by zero)."""


Values = Mapping[str, float]
_Fn = Callable[[Values], float]

_BINOPS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
}
_CMPOPS: dict[type[ast.cmpop], Callable[[float, float], bool]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}


def _div(a: float, b: float) -> float:
    if b == 0:
        raise ExpressionError("division by zero")
    return a / b


def _compile(node: ast.AST) -> _Fn:
    if isinstance(node, ast.Expression):
        return _compile(node.body)
    if isinstance(node, ast.Constant):
        assert isinstance(node.value, int | float)  # parse_expression admits numbers only
        const = float(node.value)
        return lambda v: const
    if isinstance(node, ast.Name):
        name = node.id

        def load(v: Values) -> float:
            try:
                return v[name]
            except KeyError:
                raise ExpressionError(f"no usable value for {name}") from None

        return load
    if isinstance(node, ast.UnaryOp):
        inner = _compile(node.operand)
        if isinstance(node.op, ast.Not):
            return lambda v: float(not inner(v))
        if isinstance(node.op, ast.USub):
            return lambda v: -inner(v)
        return inner
    if isinstance(node, ast.BinOp):
        left, right = _compile(node.left), _compile(node.right)
        fn = _div if isinstance(node.op, ast.Div) else _BINOPS[type(node.op)]
        return lambda v: fn(left(v), right(v))
    if isinstance(node, ast.BoolOp):
        parts = [_compile(p) for p in node.values]
        if isinstance(node.op, ast.And):
            return lambda v: float(all(p(v) for p in parts))
        return lambda v: float(any(p(v) for p in parts))
    if isinstance(node, ast.Compare):
        first = _compile(node.left)
        chain = [
            (_CMPOPS[type(op)], _compile(rhs))
            for op, rhs in zip(node.ops, node.comparators, strict=True)
        ]

        def compare(v: Values) -> float:
            a = first(v)
            for cmp, rhs in chain:
                b = rhs(v)
                if not cmp(a, b):
                    return 0.0
                a = b
            return 1.0

        return compare
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        args = [_compile(a) for a in node.args]
        if node.func.id == "abs":
            only = args[0]
            return lambda v: abs(only(v))
        pick: Callable[[list[float]], float] = min if node.func.id == "min" else max
        return lambda v: pick([a(v) for a in args])
    raise ExpressionError(f"unsupported node {type(node).__name__}")  # pragma: no cover


class CompiledExpression:
    """A checked expression, callable on a mapping of point name → value."""

    def __init__(self, text: str) -> None:
        tree = parse_expression(text)
        self.text = text
        self.names = expression_names(tree)
        self._fn = _compile(tree)

    def __call__(self, values: Values) -> bool:
        """True when the condition holds; raises :class:`ExpressionError` if not evaluable."""
        try:
            return bool(self._fn(values))
        except (OverflowError, ArithmeticError) as e:
            raise ExpressionError(str(e)) from None
