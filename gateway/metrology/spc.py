"""Statistical process control for one point: control charts, the eight Nelson
rules, EWMA and CUSUM drift detectors, rolling capability — pure, saveable state.

A :class:`ControlChart` charts either individual values (``individuals``; σ̂ =
MR̄/1.128, limits X̄ ± 3σ̂ = X̄ ± 2.66·MR̄) or subgroup means (``xbar_r``; σ̂ = R̄/d2,
limits X̿ ± A2·R̄, range chart UCL = D4·R̄). Centre line and σ are taken from the
config or learned from the first ``learn`` points (subgroups) — phase I — and then
held fixed (phase II). Nothing is flagged while learning.

Nelson rules (z = distance from the centre line in σ of the charted statistic):

1. one point beyond 3σ;
2. nine in a row on one side of the centre line;
3. six in a row steadily rising or falling;
4. fourteen in a row alternating up and down;
5. two of three beyond 2σ on the same side (the current point among them);
6. four of five beyond 1σ on the same side (the current point among them);
7. fifteen in a row within 1σ;
8. eight in a row beyond 1σ, with points on both sides.

The rules are tracked with run counters, so each point costs O(1); a flag stays on
every point while its run continues.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from gateway.config.models.metrology import SpcConfig, SpecLimits

__all__ = ["A2", "D2", "D4", "Capability", "ControlChart", "Nelson"]

D2 = {2: 1.128, 3: 1.693, 4: 2.059, 5: 2.326}
A2 = {2: 1.880, 3: 1.023, 4: 0.729, 5: 0.577}
D4 = {2: 3.267, 3: 2.574, 4: 2.282, 5: 2.114}


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


class Nelson:
    """Incremental evaluation of the selected Nelson rules on a stream of z-scores."""

    def __init__(self, rules: list[int]) -> None:
        self.rules = frozenset(rules)
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.prev: float | None = None
        self.side = 0
        self.side_len = 0
        self.trend = 0
        self.trend_len = 0
        self.alt_sign = 0
        self.alt_len = 0
        self.in1 = 0
        self.out1 = 0
        self.last_pos = -100
        self.last_neg = -100
        self.window: deque[float] = deque(maxlen=5)

    def add(self, z: float) -> list[int]:
        """Feed one z-score; returns the numbers of the rules it violates."""
        i = self.n
        self.n += 1
        s = _sign(z)
        self.side_len = self.side_len + 1 if (s != 0 and s == self.side) else (1 if s else 0)
        self.side = s
        prev = self.prev
        self.prev = z
        if prev is None:
            self.trend, self.trend_len, self.alt_sign, self.alt_len = 0, 1, 0, 1
        else:
            d = _sign(z - prev)
            if d != 0 and d == self.trend:
                self.trend_len += 1
            else:
                self.trend, self.trend_len = d, (2 if d else 1)
            if d != 0 and d == -self.alt_sign:
                self.alt_len += 1
            else:
                self.alt_len = 2 if d else 1
            self.alt_sign = d
        az = abs(z)
        self.in1 = self.in1 + 1 if az < 1.0 else 0
        if az > 1.0:
            self.out1 += 1
            if z > 0:
                self.last_pos = i
            else:
                self.last_neg = i
        else:
            self.out1 = 0
        self.window.append(z)
        rules = self.rules
        hits: list[int] = []
        if 1 in rules and az > 3.0:
            hits.append(1)
        if 2 in rules and self.side_len >= 9:
            hits.append(2)
        if 3 in rules and self.trend_len >= 6:
            hits.append(3)
        if 4 in rules and self.alt_len >= 14:
            hits.append(4)
        if 5 in rules and az > 2.0:
            w = list(self.window)[-3:]
            if sum(1 for x in w if x * s > 2.0) >= 2:
                hits.append(5)
        if 6 in rules and az > 1.0 and sum(1 for x in self.window if x * s > 1.0) >= 4:
            hits.append(6)
        if 7 in rules and self.in1 >= 15:
            hits.append(7)
        if 8 in rules and self.out1 >= 8 and self.last_pos > i - 8 and self.last_neg > i - 8:
            hits.append(8)
        return hits

    def to_state(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "prev": self.prev,
            "side": self.side,
            "side_len": self.side_len,
            "trend": self.trend,
            "trend_len": self.trend_len,
            "alt_sign": self.alt_sign,
            "alt_len": self.alt_len,
            "in1": self.in1,
            "out1": self.out1,
            "last_pos": self.last_pos,
            "last_neg": self.last_neg,
            "window": list(self.window),
        }

    def load_state(self, st: dict[str, Any]) -> None:
        self.n = int(st["n"])
        self.prev = None if st["prev"] is None else float(st["prev"])
        for key in (
            "side",
            "side_len",
            "trend",
            "trend_len",
            "alt_sign",
            "alt_len",
            "in1",
            "out1",
            "last_pos",
            "last_neg",
        ):
            setattr(self, key, int(st[key]))
        self.window = deque((float(x) for x in st["window"]), maxlen=5)


@dataclass(frozen=True, slots=True)
class Capability:
    """Rolling process capability over the last ``n`` values (None where undefined)."""

    n: int
    mean: float
    cp: float | None
    cpk: float | None
    pp: float | None
    ppk: float | None


class ControlChart:
    """One point's control chart with the configured detectors; feed with :meth:`add`."""

    def __init__(self, cfg: SpcConfig, spec: SpecLimits | None = None) -> None:
        self.cfg = cfg
        self.n = cfg.subgroup if cfg.chart == "xbar_r" else 1
        self.lower = None if spec is None else spec.lower
        self.upper = None if spec is None else spec.upper
        self.nelson = Nelson(cfg.nelson)
        self.center: float | None = cfg.center
        self.sigma: float | None = cfg.sigma
        """σ of individual values (process σ, within subgroups for X̄-R)."""
        self.learning: list[float] = []
        self.learning_ranges: list[float] = []
        self.subgroup: list[float] = []
        self.ewma_z: float | None = None
        self.ewma_i = 0
        self.cusum_hi = 0.0
        self.cusum_lo = 0.0
        window = cfg.capability_window
        self.cap_values: deque[float] = deque(maxlen=window or 1)
        self.cap_sum = 0.0
        self.cap_since_resum = 0

    @property
    def learned(self) -> bool:
        return self.center is not None and self.sigma is not None

    @property
    def sigma_stat(self) -> float:
        """σ of the charted statistic (σ/√n for subgroup means)."""
        assert self.sigma is not None
        return self.sigma / math.sqrt(self.n)

    def limits(self) -> tuple[float, float, float] | None:
        """(LCL, CL, UCL) of the charted statistic, once known."""
        if self.center is None or self.sigma is None:
            return None
        w = 3.0 * self.sigma_stat
        return (self.center - w, self.center, self.center + w)

    def add(self, x: float) -> list[str]:
        """Feed one individual value; returns the SPC flags raised by it."""
        flags = self._capability(x)
        if self.n == 1:
            return self._chart(x, None) + flags
        self.subgroup.append(x)
        if len(self.subgroup) < self.n:
            return flags
        group, self.subgroup = self.subgroup, []
        return self._chart(math.fsum(group) / self.n, max(group) - min(group)) + flags

    # ------------------------------------------------------------------ internals

    def _learn(self, stat: float, rng: float | None) -> None:
        self.learning.append(stat)
        if rng is not None:
            self.learning_ranges.append(rng)
        if len(self.learning) < self.cfg.learn:
            return
        import numpy as np  # loaded on first use: a gateway without SPC saves ~16 MB RSS

        data = np.asarray(self.learning, dtype=float)
        # values near the float limit overflow to inf here: refused below, quietly
        with np.errstate(over="ignore", invalid="ignore"):
            center = float(data.mean()) if self.cfg.center is None else self.cfg.center
            if self.cfg.sigma is not None:
                sigma = self.cfg.sigma
            elif self.n == 1:
                sigma = float(np.abs(np.diff(data)).mean()) / D2[2]
            else:
                sigma = float(np.mean(self.learning_ranges)) / D2[self.n]
        self.learning, self.learning_ranges = [], []
        if not sigma > 0 or not math.isfinite(sigma) or not math.isfinite(center):
            return  # a flat (or overflowing) learning phase says nothing: learn again
        self.center, self.sigma = center, sigma

    def _chart(self, stat: float, rng: float | None) -> list[str]:
        if self.center is None or self.sigma is None:
            if math.isfinite(stat) and (rng is None or math.isfinite(rng)):
                self._learn(stat, rng)
            return []
        flags: list[str] = []
        s = self.sigma_stat
        z = (stat - self.center) / s
        if not math.isfinite(z):
            return []  # an absurd value (overflow) would poison every detector's state
        for rule in self.nelson.add(z):
            flags.append(f"spc_nelson_{rule}")
        if rng is not None and rng > D4[self.n] * D2[self.n] * self.sigma:
            flags.append("spc_range")
        ew = self.cfg.ewma
        if ew is not None:
            prev = self.center if self.ewma_z is None else self.ewma_z
            self.ewma_z = ew.lam * stat + (1.0 - ew.lam) * prev
            self.ewma_i += 1
            width = (
                ew.L
                * s
                * math.sqrt(ew.lam / (2.0 - ew.lam) * (1.0 - (1.0 - ew.lam) ** (2 * self.ewma_i)))
            )
            if abs(self.ewma_z - self.center) > width:
                flags.append("spc_ewma")
        cu = self.cfg.cusum
        if cu is not None:
            k, h = cu.k * s, cu.h * s
            # capped at 10·H so one wild value cannot keep the detector signalling for ever
            self.cusum_hi = min(10.0 * h, max(0.0, stat - self.center - k + self.cusum_hi))
            self.cusum_lo = min(10.0 * h, max(0.0, self.center - k - stat + self.cusum_lo))
            if self.cusum_hi > h or self.cusum_lo > h:
                flags.append("spc_cusum")
        return flags

    def _capability(self, x: float) -> list[str]:
        if self.cfg.capability_window is None:
            return []
        vals = self.cap_values
        if len(vals) == vals.maxlen:
            self.cap_sum -= vals[0]
        vals.append(x)
        self.cap_sum += x
        self.cap_since_resum += 1
        if self.cap_since_resum >= 10 * len(vals):  # bound float drift of the running sum
            try:
                self.cap_sum = math.fsum(vals)
            except OverflowError:  # values near the float limit: the plain sum is ±inf
                self.cap_sum = sum(vals)
            self.cap_since_resum = 0
        if self.cfg.min_cpk is None or len(vals) != vals.maxlen:
            return []
        cpk = self._cpk(self.cap_sum / len(vals))
        if cpk is not None and cpk < self.cfg.min_cpk:
            return ["spc_cpk_low"]
        return []

    def _cpk(self, mean: float) -> float | None:
        if self.sigma is None:
            return None
        sides = []
        if self.upper is not None:
            sides.append(self.upper - mean)
        if self.lower is not None:
            sides.append(mean - self.lower)
        return min(sides) / (3.0 * self.sigma) if sides else None

    def capability(self) -> Capability | None:
        """Cp/Cpk (within σ̂ of the chart) and Pp/Ppk (overall s) over the rolling window."""
        if self.cfg.capability_window is None or len(self.cap_values) < 2:
            return None
        import numpy as np  # loaded on first use (see _learn)

        data = np.asarray(self.cap_values, dtype=float)
        with np.errstate(over="ignore", invalid="ignore"):  # inf, NaN: no capability below
            mean = float(data.mean())
            s = float(data.std(ddof=1))
        if not (math.isfinite(mean) and math.isfinite(s)):
            return None
        lo, hi = self.lower, self.upper
        tol = hi - lo if hi is not None and lo is not None else None
        cp = None if tol is None or self.sigma is None else tol / (6.0 * self.sigma)
        pp = None if tol is None or s == 0 else tol / (6.0 * s)
        ppk: float | None = None
        if s > 0:
            sides = [
                v
                for v in (
                    None if self.upper is None else self.upper - mean,
                    None if self.lower is None else mean - self.lower,
                )
                if v is not None
            ]
            ppk = min(sides) / (3.0 * s) if sides else None
        return Capability(len(data), mean, cp, self._cpk(mean), pp, ppk)

    # ------------------------------------------------------------------ state

    def to_state(self) -> dict[str, Any]:
        return {
            "center": self.center,
            "sigma": self.sigma,
            "learning": list(self.learning),
            "learning_ranges": list(self.learning_ranges),
            "subgroup": list(self.subgroup),
            "nelson": self.nelson.to_state(),
            "ewma_z": self.ewma_z,
            "ewma_i": self.ewma_i,
            "cusum_hi": self.cusum_hi,
            "cusum_lo": self.cusum_lo,
            "cap_values": list(self.cap_values),
        }

    def load_state(self, st: dict[str, Any]) -> None:
        # configured centre/σ win over learned ones saved under an older config
        c, s = st.get("center"), st.get("sigma")
        self.center = (
            self.cfg.center if self.cfg.center is not None else (None if c is None else float(c))
        )
        self.sigma = (
            self.cfg.sigma if self.cfg.sigma is not None else (None if s is None else float(s))
        )
        self.learning = [float(x) for x in st.get("learning", [])]
        self.learning_ranges = [float(x) for x in st.get("learning_ranges", [])]
        self.subgroup = [float(x) for x in st.get("subgroup", [])][: self.n - 1]
        self.nelson.load_state(st["nelson"])
        z = st.get("ewma_z")
        self.ewma_z = None if z is None else float(z)
        self.ewma_i = int(st.get("ewma_i", 0))
        self.cusum_hi = float(st.get("cusum_hi", 0.0))
        self.cusum_lo = float(st.get("cusum_lo", 0.0))
        self.cap_values.clear()
        self.cap_values.extend(float(x) for x in st.get("cap_values", []))
        self.cap_sum = math.fsum(self.cap_values)
        self.cap_since_resum = 0
