"""Value faults of a simulated sensor: stuck, drifting, stepped.

A :class:`SimValue` wraps a point's generator (:mod:`simulators.values`) and applies
at most one fault on top of it, from the moment the fault was set:

* :class:`Stuck` — the value freezes at what it was when the fault was set;
* :class:`Drift` — ``rate`` units per second are added from then on;
* :class:`Step` — ``offset`` is added at once.

Faults apply to numbers; a boolean or string value only sticks. In YAML (``sim:``
of a point, ``metrogate sim`` options) a fault reads ``{kind: stuck}``,
``{kind: drift, rate: 0.01}`` or ``{kind: step, offset: 2.5}``;
:func:`build_value_fault` turns that into a fault and raises ``ValueError`` naming
the offending key.

Transport faults (no answer, late, garbage, bad checksum, ...) belong to each
protocol's simulator, which knows its frames.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from drivers.base import Value
from simulators.values import Constant, Generator

__all__ = ["Drift", "SimValue", "Step", "Stuck", "ValueFault", "build_value_fault"]


@dataclass(frozen=True, slots=True)
class Stuck:
    """The value stays at what it was when the fault was set."""


@dataclass(frozen=True, slots=True)
class Drift:
    """``rate`` engineering units per second added since the fault was set."""

    rate: float


@dataclass(frozen=True, slots=True)
class Step:
    """``offset`` added from the moment the fault was set."""

    offset: float


ValueFault = Stuck | Drift | Step


class SimValue:
    """A point's value at ``t`` seconds: its generator, with the current fault applied.

    Set and read from different threads only through :meth:`set_fault` and
    :meth:`value` (attribute assignment is atomic; a reader sees the old or the new
    fault, never half of one).
    """

    def __init__(self, generator: Generator | Value) -> None:
        self.generator: Generator = (
            Constant(generator) if isinstance(generator, bool | int | float | str) else generator
        )
        self._fault: tuple[ValueFault, float, Value] | None = None

    @property
    def fault(self) -> ValueFault | None:
        return self._fault[0] if self._fault is not None else None

    def set(self, value: Generator | Value, t: float) -> None:
        """Replace the generator (a new value); a stuck fault keeps holding its value."""
        self.generator = Constant(value) if isinstance(value, bool | int | float | str) else value
        if self._fault is not None and not isinstance(self._fault[0], Stuck):
            self._fault = (self._fault[0], t, self.generator.value(t))

    def set_fault(self, fault: ValueFault | None, t: float) -> None:
        """Start ``fault`` at ``t`` (``None`` clears it)."""
        self._fault = None if fault is None else (fault, t, self.generator.value(t))

    def value(self, t: float) -> Value:
        now = self.generator.value(t)
        current = self._fault
        if current is None:
            return now
        fault, since, held = current
        if isinstance(fault, Stuck) or isinstance(now, bool | str):
            return held if isinstance(fault, Stuck) else now
        if isinstance(fault, Drift):
            return now + fault.rate * max(0.0, t - since)
        return now + fault.offset


def _number(kind: str, key: str, raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise ValueError(f"fault: {kind}: '{key}' must be a finite number, got {raw!r}")
    return float(raw)


def build_value_fault(spec: Mapping[str, Any] | None) -> ValueFault | None:
    """``{kind: stuck|drift|step, ...}`` → a fault; ``None`` → no fault."""
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise ValueError(f"fault: expected a mapping with 'kind', got {spec!r}")
    kind = spec.get("kind")
    keys = {"stuck": set(), "drift": {"rate"}, "step": {"offset"}}
    if kind not in keys:
        raise ValueError(f"fault: kind must be one of stuck, drift, step, got {kind!r}")
    given = set(spec) - {"kind"}
    for key in sorted(given - keys[kind]):
        raise ValueError(f"fault: {kind}: unknown key {key!r}")
    for key in sorted(keys[kind] - given):
        raise ValueError(f"fault: {kind}: missing {key!r}")
    if kind == "stuck":
        return Stuck()
    if kind == "drift":
        return Drift(_number(kind, "rate", spec["rate"]))
    return Step(_number(kind, "offset", spec["offset"]))
