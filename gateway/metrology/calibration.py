"""Calibration correction, GUM uncertainty propagation and calibration validity (pure).

A :class:`Calibrator` is compiled once from an :class:`InstrumentConfig` and turns an
indication ``r`` into a corrected value ``y`` with its expanded uncertainty:

``u²(y) = gᵀ·Σ·g + (∂y/∂r)²·u²(r)``

where ``g`` is the vector of sensitivities to the correction's coefficients and ``Σ``
their covariance (from the correction's own ``u_*``/``covariance`` keys; when the
correction does not give them, the certificate's ``U/k`` is used as one additive
term; a table uses the larger ``U`` of the two bracketing points), and
``u²(r) = u_reading² + (d/(2√3))²`` with ``d`` the instrument's resolution. The
reported expanded uncertainty is ``U = k·u(y)`` with ``k`` the instrument's
``coverage`` (default 2). When no component is known, ``U`` is ``None``.

A table is never extrapolated: outside its first/last point the indication is
passed through uncorrected, without ``U``, flagged ``out_of_calibrated_range`` and
marked uncertain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

from gateway.config.models.metrology import (
    CalibrationRecord,
    CorrectionConfig,
    ExpiredPolicy,
    InstrumentConfig,
    LinearCorrection,
    OffsetCorrection,
    PolynomialCorrection,
    TableCorrection,
    active_record,
)
from gateway.wire.reading import Quality, Reason

__all__ = [
    "CalibrationResult",
    "Calibrator",
    "Correction",
    "Validity",
    "compile_correction",
    "validity",
]

_US_PER_DAY = 86_400_000_000
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_SQRT12 = math.sqrt(12.0)

Evaluation = tuple[float, float, float | None]
"""(corrected value, ∂y/∂r, variance from the coefficients or None when not given)."""


class Correction:
    """A compiled correction model; :meth:`evaluate` is the hot path."""

    def evaluate(self, r: float) -> Evaluation | None:
        """``(y, ∂y/∂r, u²_coefficients | None)``, or ``None`` outside the calibrated range."""
        raise NotImplementedError


class _Identity(Correction):
    def evaluate(self, r: float) -> Evaluation | None:
        return (r, 1.0, None)


class _Offset(Correction):
    def __init__(self, cfg: OffsetCorrection) -> None:
        self.b = cfg.b
        self.var = None if cfg.u_b is None else cfg.u_b * cfg.u_b

    def evaluate(self, r: float) -> Evaluation | None:
        return (r + self.b, 1.0, self.var)


class _Linear(Correction):
    def __init__(self, cfg: LinearCorrection) -> None:
        self.c0 = cfg.c0
        self.c1 = cfg.c1
        self.v0: float | None = None
        if cfg.u_c0 is not None and cfg.u_c1 is not None:
            self.v0 = cfg.u_c0 * cfg.u_c0
            self.v1 = cfg.u_c1 * cfg.u_c1
            self.cov = cfg.correlation * cfg.u_c0 * cfg.u_c1

    def evaluate(self, r: float) -> Evaluation | None:
        y = self.c0 + self.c1 * r
        if self.v0 is None:
            return (y, self.c1, None)
        # GUM: u²(c0) + r²·u²(c1) + 2·r·u(c0,c1)
        return (y, self.c1, self.v0 + r * r * self.v1 + 2.0 * r * self.cov)


class _Polynomial(Correction):
    def __init__(self, cfg: PolynomialCorrection) -> None:
        self.c = list(cfg.coefficients)
        self.cov = None if cfg.covariance is None else [list(row) for row in cfg.covariance]

    def evaluate(self, r: float) -> Evaluation | None:
        c = self.c
        powers = [1.0]
        for _ in range(1, len(c)):
            powers.append(powers[-1] * r)
        y = math.fsum(ci * p for ci, p in zip(c, powers, strict=True))
        slope = math.fsum(i * c[i] * powers[i - 1] for i in range(1, len(c)))
        if self.cov is None:
            return (y, slope, None)
        n = len(c)
        var = math.fsum(powers[i] * self.cov[i][j] * powers[j] for i in range(n) for j in range(n))
        return (y, slope, max(var, 0.0))


class _Table(Correction):
    def __init__(self, cfg: TableCorrection, k: float) -> None:
        self.x = [p.reading for p in cfg.points]
        self.y = [p.value for p in cfg.points]
        # per-point standard uncertainty; None where the point gives no U
        self.u = [None if p.U is None else p.U / k for p in cfg.points]

    def evaluate(self, r: float) -> Evaluation | None:
        x = self.x
        if r < x[0] or r > x[-1]:
            return None
        lo, hi = 0, len(x) - 1
        while hi - lo > 1:  # bisect for the bracketing segment
            mid = (lo + hi) // 2
            if x[mid] <= r:
                lo = mid
            else:
                hi = mid
        slope = (self.y[hi] - self.y[lo]) / (x[hi] - x[lo])
        y = self.y[lo] + slope * (r - x[lo])
        ua, ub = self.u[lo], self.u[hi]
        var = None if ua is None or ub is None else max(ua, ub) ** 2
        return (y, slope, var)


def compile_correction(cfg: CorrectionConfig | None, k: float = 2.0) -> Correction:
    """The runtime form of a correction config (identity when ``cfg`` is None)."""
    if cfg is None:
        return _Identity()
    if isinstance(cfg, OffsetCorrection):
        return _Offset(cfg)
    if isinstance(cfg, LinearCorrection):
        return _Linear(cfg)
    if isinstance(cfg, PolynomialCorrection):
        return _Polynomial(cfg)
    return _Table(cfg, k)


@dataclass(frozen=True, slots=True)
class CalibrationResult:
    """What calibration says about one indication."""

    value: float
    U: float | None
    k: float | None
    certificate: str | None
    flags: tuple[str, ...] = ()
    quality: Quality | None = None
    """Quality to degrade to (never raises quality), with :attr:`reason`."""
    reason: Reason | None = None


@dataclass(frozen=True, slots=True)
class Validity:
    """Calibration status of an instrument on one day."""

    status: Literal["valid", "due_soon", "expired", "missing"]
    record: CalibrationRecord | None
    days_left: int | None


def validity(inst: InstrumentConfig, day: date) -> Validity:
    """Status on ``day``: a certificate is valid through its ``valid_until`` day (UTC)."""
    rec = active_record(inst, day)
    if rec is None:
        return Validity("missing", None, None)
    days_left = (rec.valid_until - day).days
    if days_left < 0:
        return Validity("expired", rec, days_left)
    if rec.valid_until - day <= timedelta(seconds=inst.warn_before):
        return Validity("due_soon", rec, days_left)
    return Validity("valid", rec, days_left)


class _Day:
    """Everything about an instrument that only changes at midnight UTC."""

    __slots__ = ("certificate", "correction", "expired", "u_cert_var")

    def __init__(self, inst: InstrumentConfig, day: date) -> None:
        rec = active_record(inst, day)
        self.certificate = None if rec is None else rec.certificate
        self.expired = rec is not None and rec.valid_until < day
        if rec is None:
            self.correction: Correction = _Identity()
            self.u_cert_var: float | None = None
        else:
            self.correction = compile_correction(rec.correction, rec.k)
            self.u_cert_var = None if rec.U is None else (rec.U / rec.k) ** 2


class Calibrator:
    """Corrects indications of one instrument; built once, called per reading."""

    def __init__(self, inst: InstrumentConfig) -> None:
        self.instrument = inst
        self.coverage = inst.coverage
        var_r = 0.0
        known_r = False
        if inst.u_reading is not None:
            var_r += inst.u_reading**2
            known_r = True
        if inst.resolution is not None:
            var_r += (inst.resolution / _SQRT12) ** 2  # rectangular over ±d/2
            known_r = True
        self.var_r: float | None = var_r if known_r else None
        self.range = None if inst.range is None else (inst.range.min, inst.range.max)
        self.expired_quality = (
            Quality.BAD if inst.expired_policy is ExpiredPolicy.BAD else Quality.UNCERTAIN
        )
        self._day_number = -1
        self._day: _Day | None = None

    def _for(self, ts_us: int) -> _Day:
        n = ts_us // _US_PER_DAY
        if n != self._day_number or self._day is None:
            self._day = _Day(self.instrument, date.fromordinal(_EPOCH_ORDINAL + n))
            self._day_number = n
        return self._day

    def calibrate(self, r: float, ts_us: int) -> CalibrationResult:
        """Correct indication ``r`` taken at ``ts_us`` (UTC µs); see the module docstring."""
        day = self._for(ts_us)
        flags: list[str] = []
        quality: Quality | None = None
        reason: Reason | None = None
        if self.range is not None and not self.range[0] <= r <= self.range[1]:
            flags.append("out_of_measuring_range")
            quality, reason = Quality.UNCERTAIN, Reason.UNITS_EXCEEDED
        if day.certificate is None:
            flags.append("not_calibrated")
        elif day.expired:
            flags.append("calibration_expired")
            if quality is None or self.expired_quality is Quality.BAD:
                quality, reason = self.expired_quality, Reason.CALIBRATION_EXPIRED
        ev = day.correction.evaluate(r)
        if ev is None:
            flags.append("out_of_calibrated_range")
            if quality is None:
                quality, reason = Quality.UNCERTAIN, Reason.OUT_OF_CALIBRATED_RANGE
            return CalibrationResult(r, None, None, day.certificate, tuple(flags), quality, reason)
        y, slope, var_coef = ev
        if var_coef is None:
            var_coef = day.u_cert_var
        var: float | None = None
        if var_coef is not None:
            var = var_coef
        if self.var_r is not None:
            var = (var or 0.0) + slope * slope * self.var_r
        if var is None:
            return CalibrationResult(y, None, None, day.certificate, tuple(flags), quality, reason)
        u_c = math.sqrt(max(var, 0.0))
        return CalibrationResult(
            y, self.coverage * u_c, self.coverage, day.certificate, tuple(flags), quality, reason
        )
