"""Configuration models for instruments, calibration, conformity, edge rules and SPC.

Pydantic v2 models, every one with ``extra="forbid"``. Validators raise
:class:`ValueError` with a message that names the offending value, so the config
loader can report it at ``file:line:col``. Checks that need more than one part of
the config (an instrument referenced from a point, point names in an expression)
live in :func:`cross_check`, which returns located problems instead of raising.

The lead models build on three entry points:

* :class:`InstrumentConfig` — one entry of the top-level ``instruments:`` list;
* :class:`PointMetrologyFields` — base class for point models (``instrument``,
  ``spec``, ``rules``, ``spc``);
* :class:`DeviceMetrologyFields` — base class for device models (``expressions``,
  ``max_shelve``).

See docs/metrology.md for every key with examples.
"""

from __future__ import annotations

import ast
import datetime as dt
import math
from collections.abc import Sequence
from datetime import date, timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from gateway.common.types import (
    Duration,
    Name,
    Strict,
    finite,
    non_negative,
    positive,
    require_finite,
    require_non_negative,
    require_positive,
)

__all__ = [
    "AlarmSeverity",
    "CalibrationRecord",
    "CorrectionConfig",
    "CusumConfig",
    "DecisionRule",
    "DeviceMetrologyFields",
    "EwmaConfig",
    "ExpiredPolicy",
    "ExpressionRule",
    "HighLimitRule",
    "InstrumentConfig",
    "LinearCorrection",
    "LowLimitRule",
    "MeasuringRange",
    "OffsetCorrection",
    "PointMetrologyFields",
    "PolynomialCorrection",
    "RateRule",
    "RuleConfig",
    "SpcConfig",
    "SpecLimits",
    "StaleRule",
    "StuckRule",
    "TableCorrection",
    "TablePoint",
    "calibration_warnings",
    "cross_check",
    "expression_names",
    "parse_expression",
]

Problem = tuple[tuple[str | int, ...], str]
"""A located config problem: dotted path as a tuple, and a message."""

_ID_PATTERN = r"^[A-Za-z0-9_.:-]+$"


# --------------------------------------------------------------------------- corrections


class OffsetCorrection(Strict):
    """``y = r + b``; ``u_b`` is the standard uncertainty of ``b`` (else certificate U/k)."""

    kind: Literal["offset"]
    b: Annotated[float, finite("b")]
    u_b: Annotated[float | None, non_negative("u_b (standard uncertainty)")] = None


class LinearCorrection(Strict):
    """``y = c0 + c1·r`` with optional standard uncertainties and their correlation."""

    kind: Literal["linear"]
    c0: Annotated[float, finite("a coefficient")] = 0.0
    c1: Annotated[float, finite("a coefficient")] = 1.0
    u_c0: Annotated[float | None, non_negative("a standard uncertainty")] = None
    u_c1: Annotated[float | None, non_negative("a standard uncertainty")] = None
    correlation: float = 0.0

    @field_validator("correlation")
    @classmethod
    def _correlation(cls, v: float) -> float:
        if not -1.0 <= v <= 1.0:
            raise ValueError(f"correlation must lie in [-1, 1], got {v}")
        return v

    @model_validator(mode="after")
    def _both_or_neither(self) -> LinearCorrection:
        if (self.u_c0 is None) != (self.u_c1 is None):
            raise ValueError("give both u_c0 and u_c1, or neither (then certificate U/k is used)")
        return self


class PolynomialCorrection(Strict):
    """``y = Σ cᵢ·rⁱ`` (``coefficients[i]`` = cᵢ) with an optional covariance matrix."""

    kind: Literal["polynomial"]
    coefficients: list[Annotated[float, finite("a coefficient")]] = Field(
        min_length=1, max_length=8
    )
    covariance: list[list[float]] | None = None

    @model_validator(mode="after")
    def _covariance_shape(self) -> PolynomialCorrection:
        cov = self.covariance
        if cov is None:
            return self
        n = len(self.coefficients)
        if len(cov) != n or any(len(row) != n for row in cov):
            raise ValueError(f"covariance must be a {n}×{n} matrix (one row per coefficient)")
        for i in range(n):
            if not math.isfinite(cov[i][i]) or cov[i][i] < 0:
                raise ValueError(f"covariance[{i}][{i}] is a variance and must be ≥ 0")
            for j in range(n):
                if not math.isclose(cov[i][j], cov[j][i], rel_tol=1e-9, abs_tol=1e-300):
                    raise ValueError(f"covariance must be symmetric: [{i}][{j}] ≠ [{j}][{i}]")
                if cov[i][j] ** 2 > cov[i][i] * cov[j][j] * (1 + 1e-9):
                    raise ValueError(
                        f"covariance[{i}][{j}] implies a correlation beyond ±1 "
                        "(not a valid covariance matrix)"
                    )
        return self


class TablePoint(Strict):
    """One calibration point: indication ``reading``, true ``value``, optional expanded ``U``."""

    reading: Annotated[float, finite("a table entry")]
    value: Annotated[float, finite("a table entry")]
    U: Annotated[float | None, non_negative("U (expanded uncertainty)")] = None


class TableCorrection(Strict):
    """Piecewise linear between calibration points; never extrapolated."""

    kind: Literal["table"]
    points: list[TablePoint] = Field(min_length=2)

    @model_validator(mode="after")
    def _monotonic(self) -> TableCorrection:
        pts = self.points
        for i in range(1, len(pts)):
            if pts[i].reading <= pts[i - 1].reading:
                raise ValueError(
                    f"table readings must be strictly increasing: point {i} "
                    f"({pts[i].reading}) does not exceed point {i - 1} ({pts[i - 1].reading})"
                )
        rising = pts[1].value > pts[0].value
        for i in range(1, len(pts)):
            step = pts[i].value - pts[i - 1].value
            if step == 0 or (step > 0) != rising:
                raise ValueError(
                    f"table values must be strictly monotonic: point {i} ({pts[i].value}) "
                    f"breaks the trend set by points 0–1"
                )
        return self


CorrectionConfig = Annotated[
    OffsetCorrection | LinearCorrection | PolynomialCorrection | TableCorrection,
    Field(discriminator="kind"),
]


class CalibrationRecord(Strict):
    """One calibration or verification certificate of an instrument."""

    kind: Literal["calibration", "verification"] = "calibration"
    certificate: str = Field(min_length=1)
    lab: str | None = None
    date: dt.date
    valid_until: dt.date
    result: str | None = None
    correction: CorrectionConfig | None = None
    U: Annotated[float | None, non_negative("U (expanded uncertainty)")] = None
    """Expanded uncertainty of the calibration result, in the instrument's unit."""
    k: Annotated[float, positive("coverage factor k")] = 2.0

    @model_validator(mode="after")
    def _dates(self) -> CalibrationRecord:
        if self.valid_until < self.date:
            raise ValueError(
                f"valid_until ({self.valid_until.isoformat()}) is before the calibration "
                f"date ({self.date.isoformat()})"
            )
        return self


class MeasuringRange(Strict):
    min: float
    max: float

    @model_validator(mode="after")
    def _order(self) -> MeasuringRange:
        require_finite(self.min, "range.min")
        require_finite(self.max, "range.max")
        if self.min >= self.max:
            raise ValueError(f"range.min ({self.min}) must be below range.max ({self.max})")
        return self


class ExpiredPolicy(StrEnum):
    """Quality given to readings from an instrument whose calibration has expired."""

    UNCERTAIN = "uncertain"
    BAD = "bad"


class InstrumentConfig(Strict):
    """A measuring instrument, as its certificates and the supervision platform know it."""

    id: str = Field(pattern=_ID_PATTERN)
    code: str | None = Field(default=None, pattern=r"^[A-Za-z0-9-]{4,64}$")
    """Identification code (GB/T 36377: manufacturer + category + serial)."""
    manufacturer: str | None = None
    model: str | None = None
    serial: str | None = None
    type_approval: str | None = None
    owner: str | None = None
    location: str | None = None
    unit: str | None = None
    range: MeasuringRange | None = None
    resolution: Annotated[float | None, positive("resolution")] = None
    u_reading: Annotated[float | None, non_negative("u_reading (standard uncertainty)")] = None
    """Standard uncertainty of the indication itself (repeatability etc.), besides resolution."""
    mpe: Annotated[float | None, non_negative("mpe (maximum permissible error)")] = None
    coverage: Annotated[float, positive("coverage factor")] = 2.0
    """Coverage factor k of the expanded uncertainty carried on readings."""
    expired_policy: ExpiredPolicy = ExpiredPolicy.UNCERTAIN
    warn_before: Duration = 30 * 86400.0
    calibrations: list[CalibrationRecord] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_certificates(self) -> InstrumentConfig:
        seen: set[str] = set()
        for rec in self.calibrations:
            if rec.certificate in seen:
                raise ValueError(f"certificate {rec.certificate!r} is listed twice")
            seen.add(rec.certificate)
        return self


# --------------------------------------------------------------------------- conformity


class DecisionRule(StrEnum):
    SIMPLE = "simple"
    GUARDED = "guarded"
    NON_BINARY = "non_binary"


class AlarmSeverity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class SpecLimits(Strict):
    """Specification (tolerance) limits of a point and the decision rule judging them."""

    lower: float | None = None
    upper: float | None = None
    rule: DecisionRule = DecisionRule.SIMPLE
    guard: Literal["U"] | float = "U"
    """Guard band / undetermined-zone half width: the reading's U, or a fixed value."""
    alarm: bool = True
    severity: AlarmSeverity = AlarmSeverity.MEDIUM

    @model_validator(mode="after")
    def _limits(self) -> SpecLimits:
        if self.lower is None and self.upper is None:
            raise ValueError("spec needs a lower limit, an upper limit, or both")
        for name, v in (("lower", self.lower), ("upper", self.upper)):
            if v is not None:
                require_finite(v, f"spec.{name}")
        if self.lower is not None and self.upper is not None and self.lower >= self.upper:
            raise ValueError(
                f"impossible limits: lower ({self.lower}) must be below upper ({self.upper})"
            )
        if not isinstance(self.guard, str):
            require_non_negative(self.guard, "guard")
        return self


# --------------------------------------------------------------------------- rules


class _RuleBase(Strict):
    kind: str
    name: Name | None = None
    """Alarm name on the point (default: the rule's kind)."""
    severity: AlarmSeverity = AlarmSeverity.MEDIUM
    alarm: bool = True
    on_delay: Duration = 0.0
    off_delay: Duration = 0.0
    message: str | None = None

    @property
    def alarm_name(self) -> str:
        return self.name or self.kind


class _LimitRule(_RuleBase):
    limit: float
    deadband: Annotated[float, non_negative("deadband")] = 0.0


class HighLimitRule(_LimitRule):
    """Alarm when the value rises above ``limit``; clears below ``limit − deadband``."""

    kind: Literal["high"]


class LowLimitRule(_LimitRule):
    """Alarm when the value falls below ``limit``; clears above ``limit + deadband``."""

    kind: Literal["low"]


class RateRule(_RuleBase):
    """Alarm when the value changes by more than ``max`` per ``per`` (either direction)."""

    kind: Literal["rate"]
    max: float
    per: Duration = 1.0
    quality: Literal["uncertain", "bad"] | None = None

    @model_validator(mode="after")
    def _positive(self) -> RateRule:
        require_positive(self.max, "rate max")
        if self.per <= 0:
            raise ValueError("rate per must be > 0 seconds")
        return self


class StuckRule(_RuleBase):
    """The value has not changed (within ``tolerance``) for ``count`` readings or ``duration``."""

    kind: Literal["stuck"]
    count: int | None = Field(default=None, ge=2, le=100_000)
    duration: Duration | None = None
    tolerance: float = 0.0
    quality: Literal["uncertain", "bad"] | None = "uncertain"

    @model_validator(mode="after")
    def _one_of(self) -> StuckRule:
        if self.count is None and self.duration is None:
            raise ValueError("stuck needs count (readings) and/or duration")
        if self.duration is not None and self.duration <= 0:
            raise ValueError("stuck duration must be > 0")
        require_non_negative(self.tolerance, "tolerance")
        return self


class StaleRule(_RuleBase):
    """No good reading of the point for ``timeout``."""

    kind: Literal["stale"]
    timeout: Annotated[Duration, positive("stale timeout")]


RuleConfig = Annotated[
    HighLimitRule | LowLimitRule | RateRule | StuckRule | StaleRule,
    Field(discriminator="kind"),
]

# --------------------------------------------------------------------------- SPC


class EwmaConfig(Strict):
    model_config = ConfigDict(populate_by_name=True)  # `lambda` in YAML, `lam` in code
    lam: float = Field(default=0.2, gt=0, le=1, alias="lambda")
    L: float = Field(default=3.0, gt=0)


class CusumConfig(Strict):
    k: float = Field(default=0.5, ge=0)
    """Reference value K in units of σ."""
    h: float = Field(default=5.0, gt=0)
    """Decision interval H in units of σ."""


class SpcConfig(Strict):
    """Control chart of one point."""

    chart: Literal["individuals", "xbar_r"] = "individuals"
    subgroup: int = Field(default=1, ge=1, le=5)
    center: float | None = None
    sigma: float | None = None
    learn: int = Field(default=25, ge=5, le=10_000)
    """Points (or subgroups) used to learn centre line and σ when not configured."""
    nelson: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7, 8])
    ewma: EwmaConfig | None = None
    cusum: CusumConfig | None = None
    capability_window: int | None = Field(default=None, ge=10, le=100_000)
    min_cpk: float | None = None
    alarm: bool = True
    severity: AlarmSeverity = AlarmSeverity.LOW
    on_delay: Duration = 0.0
    off_delay: Duration = 0.0

    @field_validator("nelson")
    @classmethod
    def _nelson(cls, v: list[int]) -> list[int]:
        bad = [n for n in v if n not in range(1, 9)]
        if bad:
            raise ValueError(f"Nelson rules are numbered 1 to 8, got {bad}")
        return sorted(set(v))

    @model_validator(mode="after")
    def _chart(self) -> SpcConfig:
        if self.chart == "individuals" and self.subgroup != 1:
            raise ValueError("an individuals chart has subgroup 1; use chart: xbar_r")
        if self.chart == "xbar_r" and not 2 <= self.subgroup <= 5:
            raise ValueError("an X̄-R chart needs subgroup between 2 and 5")
        require_positive(self.sigma, "sigma")
        require_finite(self.center, "center")
        return self


# --------------------------------------------------------------------------- expressions

_ALLOWED_NODES: tuple[type[ast.AST], ...] = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.UAdd,
    ast.BinOp,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.Compare,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
    ast.Eq,
    ast.NotEq,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.Call,
)
_FUNCTIONS = {"abs": (1, 1), "min": (2, 16), "max": (2, 16)}
_MAX_EXPRESSION = 500
_MAX_DEPTH = 32


def parse_expression(text: str) -> ast.Expression:
    """Parse and check an expression rule; raise ValueError naming what is not allowed.

    The language: numbers, point names, ``+ - * /``, unary ``-``, comparisons
    (``< <= > >= == !=``, chainable), ``and``/``or``/``not``, and the functions
    ``abs(x)``, ``min(a, b, …)``, ``max(a, b, …)``. The whole expression must be a
    condition (a comparison, ``and``/``or``/``not``).
    """
    if len(text) > _MAX_EXPRESSION:
        raise ValueError(f"expression longer than {_MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"expression syntax error at column {e.offset}: {e.msg}") from None
    _check_node(tree, 0)
    body = tree.body
    is_condition = isinstance(body, ast.Compare | ast.BoolOp) or (
        isinstance(body, ast.UnaryOp) and isinstance(body.op, ast.Not)
    )
    if not is_condition:
        raise ValueError("an expression rule must be a condition (comparison, and/or/not)")
    return tree


def _check_node(node: ast.AST, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise ValueError(f"expression nested deeper than {_MAX_DEPTH} levels")
    if not isinstance(node, _ALLOWED_NODES):
        raise ValueError(
            f"{type(node).__name__} is not allowed in an expression (allowed: numbers, point "
            "names, + - * /, comparisons, and/or/not, abs/min/max)"
        )
    if isinstance(node, ast.Constant) and (
        isinstance(node.value, bool) or not isinstance(node.value, int | float)
    ):
        raise ValueError(f"only numbers are allowed as constants, not {node.value!r}")
    if isinstance(node, ast.Name) and node.id in _FUNCTIONS:
        raise ValueError(f"{node.id} is a function; call it as {node.id}(...)")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            raise ValueError("only abs(), min() and max() may be called in an expression")
        if node.keywords:
            raise ValueError(f"{node.func.id}() takes no keyword arguments")
        lo, hi = _FUNCTIONS[node.func.id]
        if not lo <= len(node.args) <= hi:
            raise ValueError(f"{node.func.id}() takes {lo}..{hi} arguments, got {len(node.args)}")
        for arg in node.args:
            _check_node(arg, depth + 1)
        return
    for child in ast.iter_child_nodes(node):
        _check_node(child, depth + 1)


def expression_names(tree: ast.Expression) -> list[str]:
    """Point names an expression refers to, in first-use order."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in names:
            names.append(node.id)
    return names


class ExpressionRule(Strict):
    """A device-level condition over the device's points, raising alarm ``device/name``."""

    name: Name
    expr: str
    severity: AlarmSeverity = AlarmSeverity.MEDIUM
    alarm: bool = True
    on_delay: Duration = 0.0
    off_delay: Duration = 0.0
    message: str | None = None

    @field_validator("expr")
    @classmethod
    def _parse(cls, v: str) -> str:
        parse_expression(v)
        return v


# --------------------------------------------------------------------------- bases


class PointMetrologyFields(Strict):
    """Metrology keys of a point; the driver point models inherit these."""

    instrument: str | None = None
    spec: SpecLimits | None = None
    rules: list[RuleConfig] = Field(default_factory=list)
    spc: SpcConfig | None = None

    @model_validator(mode="after")
    def _metrology_consistent(self) -> PointMetrologyFields:
        seen: set[str] = set()
        for rule in self.rules:
            name = rule.alarm_name
            if name in seen or name in ("spec", "spc"):
                raise ValueError(
                    f"two rules on this point are named {name!r} (or it clashes with "
                    "spec/spc); give one a distinct name"
                )
            seen.add(name)
        if self.spc is not None and self.spc.capability_window is not None and self.spec is None:
            raise ValueError("spc.capability_window needs spec limits on the point")
        return self


class DeviceMetrologyFields(Strict):
    """Metrology keys of a device; the driver device models inherit these."""

    expressions: list[ExpressionRule] = Field(default_factory=list)
    max_shelve: Duration = 8 * 3600.0
    """Longest time an operator may shelve one of this device's alarms."""

    @model_validator(mode="after")
    def _unique_expressions(self) -> DeviceMetrologyFields:
        seen: set[str] = set()
        for e in self.expressions:
            if e.name in seen:
                raise ValueError(f"two expressions are named {e.name!r}")
            seen.add(e.name)
        if self.max_shelve <= 0:
            raise ValueError("max_shelve must be > 0")
        return self


# --------------------------------------------------------------------------- cross checks


def cross_check(
    instruments: list[InstrumentConfig],
    devices: list[tuple[str, list[PointMetrologyFields]]],
    device_fields: Sequence[DeviceMetrologyFields | None] | None = None,
) -> list[Problem]:
    """Problems that span several parts of the config, each with its path.

    Checks: duplicate instrument ids, unknown ``instrument`` references, guarded or
    non-binary decisions with ``guard: U`` on a point without an instrument (no U),
    and — when ``device_fields`` is given (aligned with ``devices``) — expressions
    naming points the device does not have (point ids come from the points' ``id``
    attribute).
    """
    problems: list[Problem] = []
    ids: set[str] = set()
    for i, inst in enumerate(instruments):
        if inst.id in ids:
            problems.append((("instruments", i, "id"), f"instrument id {inst.id!r} is used twice"))
        ids.add(inst.id)
    for d, (_device_id, points) in enumerate(devices):
        for p, point in enumerate(points):
            where: tuple[str | int, ...] = ("devices", d, "points", p)
            if point.instrument is not None and point.instrument not in ids:
                known = ", ".join(sorted(ids)) or "none are configured"
                problems.append(
                    (
                        (*where, "instrument"),
                        f"unknown instrument {point.instrument!r} (known: {known})",
                    )
                )
            spec = point.spec
            if (
                spec is not None
                and spec.rule is not DecisionRule.SIMPLE
                and spec.guard == "U"
                and point.instrument is None
            ):
                problems.append(
                    (
                        (*where, "spec", "guard"),
                        f"decision rule {spec.rule.value} with guard U needs an instrument "
                        "on the point (its uncertainty); set instrument or a numeric guard",
                    )
                )
        if device_fields is None or d >= len(device_fields) or device_fields[d] is None:
            continue
        fields = device_fields[d]
        assert fields is not None
        point_ids = {str(getattr(pt, "id", "")) for pt in points}
        for e, expr in enumerate(fields.expressions):
            missing = [
                n for n in expression_names(parse_expression(expr.expr)) if n not in point_ids
            ]
            if missing:
                problems.append(
                    (
                        ("devices", d, "expressions", e, "expr"),
                        f"expression {expr.name!r} names unknown point(s): {', '.join(missing)}",
                    )
                )
    return problems


def active_record(inst: InstrumentConfig, day: date) -> CalibrationRecord | None:
    """The certificate in force on ``day``: the latest one whose date is not after ``day``."""
    best: CalibrationRecord | None = None
    for rec in inst.calibrations:
        if rec.date <= day and (best is None or rec.date >= best.date):
            best = rec
    return best


def calibration_warnings(instruments: list[InstrumentConfig], today: date) -> list[Problem]:
    """Warnings (not errors) for ``check``: expired, soon due, or missing calibrations."""
    out: list[Problem] = []
    for i, inst in enumerate(instruments):
        rec = active_record(inst, today)
        if rec is None:
            if inst.calibrations:
                out.append(
                    (("instruments", i, "calibrations"), "no certificate is in force yet today")
                )
            continue
        idx = inst.calibrations.index(rec)
        path: tuple[str | int, ...] = ("instruments", i, "calibrations", idx, "valid_until")
        if rec.valid_until < today:
            days = (today - rec.valid_until).days
            out.append(
                (
                    path,
                    f"calibration of {inst.id} (certificate {rec.certificate}) expired on "
                    f"{rec.valid_until.isoformat()}, {days} day(s) ago",
                )
            )
        elif rec.valid_until - today <= timedelta(seconds=inst.warn_before):
            days = (rec.valid_until - today).days
            out.append(
                (
                    path,
                    f"calibration of {inst.id} (certificate {rec.certificate}) is due on "
                    f"{rec.valid_until.isoformat()}, in {days} day(s)",
                )
            )
    return out
