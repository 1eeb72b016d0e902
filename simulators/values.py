"""Value generators for simulated points: deterministic functions of elapsed time.

A generator answers ``value(t)`` where ``t`` is seconds since the simulator
started. The same ``t`` gives the same value (the random walk included, for a given
seed), so tests can predict what a device will say. Generators produce engineering
values; the simulator turns them into raw register contents with the point's scale
and offset.

In YAML a point's ``sim:`` is either a bare constant (``sim: 21.5``) or a mapping
with a ``kind``::

    sim: {kind: constant, value: 3}
    sim: {kind: sine, amplitude: 2, period: 60, mean: 20, phase: 90}   # phase in degrees
    sim: {kind: ramp, start: 0, rate: 0.5, min: 0, max: 100}          # wraps max → min
    sim: {kind: random_walk, start: 20, step: 0.1, min: 15, max: 25, seed: 7, interval: 1}
    sim: {kind: step, values: [1, 2, 3], period: 10}                   # cycles the list

:func:`build_generator` turns either form into a generator and raises
``ValueError`` naming the offending key on bad input.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from drivers.base import Value

__all__ = [
    "KINDS",
    "Constant",
    "Generator",
    "Ramp",
    "RandomWalk",
    "Sine",
    "Step",
    "build_generator",
]


class Generator(Protocol):
    """Anything that yields a point's engineering value at ``t`` seconds after start."""

    def value(self, t: float) -> Value:
        """The value at ``t`` (seconds since the simulator started, ``t ≥ 0``)."""
        ...


@dataclass(frozen=True, slots=True)
class Constant:
    """Always the same value; the simulator writes it once and never recomputes it."""

    constant: Value

    def value(self, t: float) -> Value:
        return self.constant


@dataclass(frozen=True, slots=True)
class Sine:
    """``mean + amplitude · sin(2π·t/period + phase)``, ``phase`` in degrees."""

    amplitude: float
    period: float
    mean: float = 0.0
    phase: float = 0.0

    def __post_init__(self) -> None:
        _require(self.period > 0, "sine: period must be > 0")

    def value(self, t: float) -> float:
        angle = 2.0 * math.pi * t / self.period + math.radians(self.phase)
        return self.mean + self.amplitude * math.sin(angle)


@dataclass(frozen=True, slots=True)
class Ramp:
    """``start + rate·t``; with ``min`` and ``max`` it wraps from ``max`` back to ``min``.

    ``rate`` is per second and may be negative (then it wraps from ``min`` to ``max``).
    """

    start: float
    rate: float
    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        _require(
            (self.min is None) == (self.max is None), "ramp: give both min and max, or neither"
        )
        if self.min is not None and self.max is not None:
            _require(self.min < self.max, "ramp: min must be < max")
            _require(self.min <= self.start <= self.max, "ramp: start must lie in [min, max]")

    def value(self, t: float) -> float:
        linear = self.start + self.rate * t
        if self.min is None or self.max is None:
            return linear
        return self.min + (linear - self.min) % (self.max - self.min)


@dataclass(slots=True)
class RandomWalk:
    """A bounded random walk: every ``interval`` seconds it moves by ``U(-step, step)``.

    Clamped to ``[min, max]``. Deterministic for a given ``seed``: the value at ``t`` is
    the walk after ``floor(t / interval)`` moves. Moving forward in time is
    incremental (cheap when called regularly); going back replays from the start.
    """

    start: float
    step: float
    min: float
    max: float
    seed: int = 0
    interval: float = 1.0
    _moves: int = field(default=0, init=False, repr=False)
    _current: float = field(default=0.0, init=False, repr=False)
    _rng: random.Random = field(default_factory=random.Random, init=False, repr=False)

    def __post_init__(self) -> None:
        _require(self.step >= 0, "random_walk: step must be ≥ 0")
        _require(self.min < self.max, "random_walk: min must be < max")
        _require(self.min <= self.start <= self.max, "random_walk: start must lie in [min, max]")
        _require(self.interval > 0, "random_walk: interval must be > 0")
        self._restart()

    def _restart(self) -> None:
        self._rng.seed(self.seed)
        self._moves = 0
        self._current = self.start

    def value(self, t: float) -> float:
        target = max(0, math.floor(t / self.interval))
        if target < self._moves:
            self._restart()
        uniform, lo, hi, step, x = self._rng.uniform, self.min, self.max, self.step, self._current
        for _ in range(target - self._moves):
            x = min(hi, max(lo, x + uniform(-step, step)))
        self._current, self._moves = x, target
        return x


@dataclass(frozen=True, slots=True)
class Step:
    """Cycles through ``values``, holding each for ``period`` seconds."""

    values: tuple[Value, ...]
    period: float

    def __post_init__(self) -> None:
        _require(len(self.values) > 0, "step: values must not be empty")
        _require(self.period > 0, "step: period must be > 0")

    def value(self, t: float) -> Value:
        return self.values[max(0, math.floor(t / self.period)) % len(self.values)]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _number(kind: str, key: str, raw: object) -> float:
    # bool is an int subclass, but `amplitude: true` is a mistake, not 1
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError(f"sim: {kind}: '{key}' must be a number, got {raw!r}")
    if not math.isfinite(raw):
        raise ValueError(f"sim: {kind}: '{key}' must be finite, got {raw!r}")
    return float(raw)


def _integer(kind: str, key: str, raw: object) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ValueError(f"sim: {kind}: '{key}' must be an integer, got {raw!r}")
    return raw


def _scalar(kind: str, key: str, raw: object) -> Value:
    if not isinstance(raw, bool | int | float | str):
        raise ValueError(f"sim: {kind}: '{key}' must be a number, boolean or string, got {raw!r}")
    return raw


def _values(kind: str, key: str, raw: object) -> tuple[Value, ...]:
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence):
        raise ValueError(f"sim: {kind}: '{key}' must be a list, got {raw!r}")
    return tuple(_scalar(kind, f"{key}[{i}]", item) for i, item in enumerate(raw))


_Parse = Callable[[str, str, object], Any]


@dataclass(frozen=True, slots=True)
class _Kind:
    build: Callable[..., Generator]
    required: Mapping[str, _Parse]
    optional: Mapping[str, _Parse]
    aliases: Mapping[str, str] = field(default_factory=dict)


# table-driven so a new kind is one line and every kind is validated the same way
KINDS: dict[str, _Kind] = {
    "constant": _Kind(lambda value: Constant(value), {"value": _scalar}, {}),
    "sine": _Kind(
        Sine,
        {"amplitude": _number, "period": _number},
        {"mean": _number, "phase": _number},
        {"offset": "mean"},
    ),
    "ramp": _Kind(Ramp, {"start": _number, "rate": _number}, {"min": _number, "max": _number}),
    "random_walk": _Kind(
        RandomWalk,
        {"start": _number, "step": _number, "min": _number, "max": _number},
        {"seed": _integer, "interval": _number},
    ),
    "step": _Kind(Step, {"values": _values, "period": _number}, {}),
}


def build_generator(
    spec: Mapping[str, Any] | float | int | bool | str | None, default: Value
) -> Generator:
    """Turn a point's ``sim:`` setting into a generator.

    ``None`` (no ``sim:`` given) means a constant ``default``; a bare scalar means
    that constant; a mapping needs ``kind`` (one of :data:`KINDS`) and that kind's
    keys (``sine`` accepts ``offset`` as another name for ``mean``). Raises
    ``ValueError`` naming the kind and key on a missing, unknown or ill-typed key or
    an impossible setting (``period ≤ 0``, ``min ≥ max`` …).
    """
    if spec is None:
        return Constant(default)
    if isinstance(spec, bool | int | float | str):
        return Constant(spec)
    if not isinstance(spec, Mapping):
        raise ValueError(f"sim: expected a constant or a mapping with 'kind', got {spec!r}")
    kind_name = spec.get("kind")
    if kind_name is None:
        raise ValueError("sim: missing 'kind' (one of " + ", ".join(KINDS) + ")")
    kind = KINDS.get(str(kind_name))
    if kind is None:
        raise ValueError(f"sim: unknown kind {kind_name!r} (one of " + ", ".join(KINDS) + ")")
    name = str(kind_name)
    args: dict[str, Any] = {}
    for key, raw in spec.items():
        if key == "kind":
            continue
        canonical = kind.aliases.get(key, key)
        parse = kind.required.get(canonical) or kind.optional.get(canonical)
        if parse is None:
            known = [*kind.required, *kind.optional, *kind.aliases]
            raise ValueError(f"sim: {name}: unknown key {key!r} (known: {', '.join(known)})")
        if canonical in args:
            raise ValueError(f"sim: {name}: {canonical!r} given twice (also as {key!r})")
        args[canonical] = parse(name, key, raw)
    for key in kind.required:
        if key not in args:
            raise ValueError(f"sim: {name}: missing {key!r}")
    return kind.build(**args)
