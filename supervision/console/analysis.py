"""Control charts, Nelson rules and capability over what the console shows (pure).

The console charts the window it was asked for: individuals (each reading) or
X̄–R (subgroups of consecutive readings, as configured for the point in
``console.points``); on a downsampled range each bucket's mean is a subgroup mean
and its σ is σ̂/√n. Limits are estimated from the window itself (phase I):

* individuals: centre X̄, σ̂ = MR̄/1.128, limits X̄ ± 3σ̂;
* X̄–R: centre X̿, limits X̿ ± A2·R̄; range chart centre R̄, UCL D4·R̄, LCL D3·R̄.

The eight Nelson rules (numbered as in gateway/metrology/spc.py and docs/metrology.md)
are evaluated on the charted statistic; :func:`nelson` returns the rules each point
violates. Cpk = min(USL − μ, μ − LSL) / 3σ̂ with σ̂ = MR̄/1.128 (one-sided with one limit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import pairwise

__all__ = ["A2", "D2", "D3", "D4", "Chart", "control_chart", "cpk", "nelson"]

D2 = {2: 1.128, 3: 1.693, 4: 2.059, 5: 2.326}
A2 = {2: 1.880, 3: 1.023, 4: 0.729, 5: 0.577}
D3 = {2: 0.0, 3: 0.0, 4: 0.0, 5: 0.0}
D4 = {2: 3.267, 3: 2.574, 4: 2.282, 5: 2.114}


@dataclass(slots=True)
class Chart:
    """A control chart ready to draw: points ``(ts_ns, statistic)`` and what they violate."""

    kind: str  # individuals | xbar_r | xbar (downsampled)
    centre: float | None = None
    ucl: float | None = None
    lcl: float | None = None
    sigma: float | None = None
    points: list[tuple[int, float]] = field(default_factory=list)
    violations: list[tuple[int, float, list[int]]] = field(default_factory=list)
    ranges: list[tuple[int, float]] = field(default_factory=list)  # X̄–R: the R chart
    r_centre: float | None = None
    r_ucl: float | None = None
    r_lcl: float | None = None

    def rule_counts(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for _, _, rules in self.violations:
            for r in rules:
                out[r] = out.get(r, 0) + 1
        return dict(sorted(out.items()))


def nelson(xs: list[float], centre: float, sigma: float) -> list[list[int]]:
    """For each point, the Nelson rules (1–8) it completes or continues."""
    n = len(xs)
    out: list[set[int]] = [set() for _ in range(n)]
    if sigma <= 0 or not math.isfinite(sigma):
        return [[] for _ in range(n)]
    z = [(x - centre) / sigma for x in xs]

    def mark(i: int, length: int, rule: int) -> None:
        for j in range(max(0, i - length + 1), i + 1):
            out[j].add(rule)

    for i in range(n):
        if abs(z[i]) > 3:
            out[i].add(1)
        if i >= 8:
            w = z[i - 8 : i + 1]
            if all(v > 0 for v in w) or all(v < 0 for v in w):
                mark(i, 9, 2)
        if i >= 5:
            w = xs[i - 5 : i + 1]
            d = [b - a for a, b in pairwise(w)]
            if all(v > 0 for v in d) or all(v < 0 for v in d):
                mark(i, 6, 3)
        if i >= 13:
            d = [b - a for a, b in pairwise(xs[i - 13 : i + 1])]
            if all(a * b < 0 for a, b in pairwise(d)):
                mark(i, 14, 4)
        if i >= 2:
            w = z[i - 2 : i + 1]
            for sign in (1, -1):
                if sign * z[i] > 2 and sum(1 for v in w if sign * v > 2) >= 2:
                    mark(i, 3, 5)
        if i >= 4:
            w = z[i - 4 : i + 1]
            for sign in (1, -1):
                if sign * z[i] > 1 and sum(1 for v in w if sign * v > 1) >= 4:
                    mark(i, 5, 6)
        if i >= 14 and all(abs(v) < 1 for v in z[i - 14 : i + 1]):
            mark(i, 15, 7)
        if i >= 7:
            w = z[i - 7 : i + 1]
            if all(abs(v) > 1 for v in w) and any(v > 0 for v in w) and any(v < 0 for v in w):
                mark(i, 8, 8)
    return [sorted(s) for s in out]


def _finish(chart: Chart, rules: list[int] | None) -> Chart:
    if chart.centre is None or chart.sigma is None or not chart.points:
        return chart
    xs = [p[1] for p in chart.points]
    for (ts, x), found in zip(chart.points, nelson(xs, chart.centre, chart.sigma), strict=True):
        keep = [r for r in found if rules is None or r in rules]
        if keep:
            chart.violations.append((ts, x, keep))
    return chart


def control_chart(
    samples: list[tuple[int, float, int]],
    *,
    kind: str = "individuals",
    subgroup: int = 1,
    sigma_within: float | None = None,
    rules: list[int] | None = None,
) -> Chart:
    """The chart of ``samples`` ``(ts_ns, value, n)``; ``n > 1`` marks a downsampled bucket.

    ``sigma_within`` (σ̂ of individual readings, from the window's moving range) sets
    the limits of a downsampled chart, whose buckets hold different numbers of readings.
    """
    if not samples:
        return Chart(kind)
    if any(n > 1 for _, _, n in samples):
        chart = Chart("xbar")
        means = [v for _, v, _ in samples]
        weights = [n for _, _, n in samples]
        chart.centre = math.fsum(v * w for v, w in zip(means, weights, strict=True)) / sum(weights)
        if sigma_within:
            nbar = sum(weights) / len(weights)
            chart.sigma = sigma_within / math.sqrt(nbar)
            chart.ucl = chart.centre + 3 * chart.sigma
            chart.lcl = chart.centre - 3 * chart.sigma
        chart.points = [(ts, v) for ts, v, _ in samples]
        return _finish(chart, rules)
    if kind == "xbar_r" and 2 <= subgroup <= 5:
        chart = Chart("xbar_r")
        groups = [samples[i : i + subgroup] for i in range(0, len(samples), subgroup)]
        groups = [g for g in groups if len(g) == subgroup]
        if not groups:
            return chart
        chart.points = [(g[-1][0], math.fsum(v for _, v, _ in g) / subgroup) for g in groups]
        chart.ranges = [
            (g[-1][0], max(v for _, v, _ in g) - min(v for _, v, _ in g)) for g in groups
        ]
        rbar = math.fsum(r for _, r in chart.ranges) / len(chart.ranges)
        chart.centre = math.fsum(x for _, x in chart.points) / len(chart.points)
        chart.ucl = chart.centre + A2[subgroup] * rbar
        chart.lcl = chart.centre - A2[subgroup] * rbar
        chart.sigma = rbar / D2[subgroup] / math.sqrt(subgroup)
        chart.r_centre, chart.r_ucl, chart.r_lcl = rbar, D4[subgroup] * rbar, D3[subgroup] * rbar
        return _finish(chart, rules)
    chart = Chart("individuals")
    xs = [v for _, v, _ in samples]
    chart.points = [(ts, v) for ts, v, _ in samples]
    chart.centre = math.fsum(xs) / len(xs)
    if len(xs) > 1:
        mr = math.fsum(abs(b - a) for a, b in pairwise(xs)) / (len(xs) - 1)
        chart.sigma = mr / D2[2]
        chart.ucl = chart.centre + 3 * chart.sigma
        chart.lcl = chart.centre - 3 * chart.sigma
    return _finish(chart, rules)


def cpk(
    mean: float | None, sigma: float | None, lower: float | None, upper: float | None
) -> float | None:
    """Process capability; None without a limit, a mean or a positive σ."""
    if mean is None or sigma is None or sigma <= 0 or (lower is None and upper is None):
        return None
    sides = []
    if upper is not None:
        sides.append(upper - mean)
    if lower is not None:
        sides.append(mean - lower)
    return min(sides) / (3 * sigma)
