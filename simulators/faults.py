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

Transport faults (no answer, late, garbage, bad checksum, ...) are applied by each
protocol's simulator, which knows its frames; this module only names them, so a
config (``sim: {fault: ...}`` of a device or point) and ``metrogate sim --fault``
speak one vocabulary for every kind (:data:`FAULT_KINDS`, :func:`parse_fault`). A
fault is written as a mapping (``{kind: slow, delay: 2}``) or as one string
``KIND[,PARAM]`` (``"slow,2"``, ``"exception,4"``, ``"drift,0.01"``); several as a
list.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from drivers.base import Value
from simulators.values import Constant, Generator

__all__ = [
    "FAULT_KINDS",
    "Drift",
    "Fault",
    "SimValue",
    "Step",
    "Stuck",
    "TransportFault",
    "ValueFault",
    "build_value_fault",
    "parse_fault",
    "parse_faults",
]


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


# -- the vocabulary of faults on request --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransportFault:
    """A fault of the answer itself (see :data:`FAULT_KINDS`); what it looks like on the
    wire is the protocol simulator's business. ``delay`` (s) for ``slow``, ``code`` for
    ``exception`` (None: the protocol's usual one), ``status`` for OPC UA ``status``,
    ``every`` (s) for ``drop``."""

    kind: str
    delay: float = 0.0
    code: int | None = None
    status: str | None = None
    every: float = 5.0


Fault = TransportFault | ValueFault

FAULT_KINDS: dict[str, str] = {
    "silent": "no answer at all",
    "slow": "the answer comes late: slow,SECONDS (default 2)",
    "garbage": "line noise (or a malformed reply) instead of the answer",
    "exception": "a protocol error reply: Modbus exception,CODE (default 4), the abnormal "
    "reply of a meter, an OPC UA Bad status (exception,BadStatusName)",
    "drop": "the connection is cut (network kinds): drop,EVERY_SECONDS (default 5)",
    "noise": "noise bytes before the answer (serial kinds)",
    "bad_checksum": "the answer's checksum is wrong (serial kinds)",
    "truncated": "only the first half of the answer (serial kinds)",
    "wrong_address": "the answer carries another device's address (serial kinds)",
    "status": "OPC UA: the value's StatusCode: status,NAME (BadSensorFailure, ...)",
    "stuck": "the value freezes",
    "drift": "the value drifts: drift,UNITS_PER_SECOND",
    "step": "the value jumps: step,OFFSET",
}
"""Every fault kind a simulator may be asked for, with what it does and its parameter."""

_PARAM = {"slow": "delay", "exception": "code", "drop": "every", "status": "status",
          "drift": "rate", "step": "offset"}  # fmt: skip


def _seconds(kind: str, key: str, raw: object) -> float:
    if isinstance(raw, str):
        text = raw.strip()
        factor = 0.001 if text.endswith("ms") else 1.0
        text = text.removesuffix("ms").removesuffix("s")
        try:
            raw = float(text) * factor
        except ValueError:
            raise ValueError(f"fault: {kind}: '{key}' must be seconds, got {raw!r}") from None
    value = _number(kind, key, raw)
    if value < 0:
        raise ValueError(f"fault: {kind}: '{key}' must be ≥ 0, got {raw!r}")
    return value


def _from_text(text: str) -> dict[str, Any]:
    kind, _, param = (part.strip() for part in text.partition(","))
    spec: dict[str, Any] = {"kind": kind}
    if param:
        key = _PARAM.get(kind)
        if key is None:
            raise ValueError(f"fault: {kind} takes no parameter, got {param!r}")
        spec[key] = param
    return spec


def parse_fault(spec: Mapping[str, Any] | str) -> Fault:
    """One fault: ``"KIND[,PARAM]"`` or ``{kind: KIND, ...}`` (keys by :data:`FAULT_KINDS`).

    Raises :class:`ValueError` naming the kind and the key at fault.
    """
    if isinstance(spec, str):
        spec = _from_text(spec)
    if not isinstance(spec, Mapping):
        raise ValueError(f"fault: expected KIND[,PARAM] or a mapping with 'kind', got {spec!r}")
    kind = spec.get("kind")
    if kind not in FAULT_KINDS:
        raise ValueError(f"fault: kind must be one of {', '.join(FAULT_KINDS)}, got {kind!r}")
    if kind in ("stuck", "drift", "step"):
        raw = dict(spec)
        for key in ("rate", "offset"):
            if isinstance(raw.get(key), str):
                try:
                    raw[key] = float(raw[key])
                except ValueError:
                    raise ValueError(f"fault: {kind}: '{key}' must be a number") from None
        fault = build_value_fault(raw)
        assert fault is not None
        return fault
    allowed = {"kind"} | ({_PARAM[kind]} if kind in _PARAM else set())
    for key in sorted(set(spec) - allowed):
        raise ValueError(f"fault: {kind}: unknown key {key!r}")
    match kind:
        case "slow":
            return TransportFault(kind, delay=_seconds(kind, "delay", spec.get("delay", 2.0)))
        case "drop":
            every = _seconds(kind, "every", spec.get("every", 5.0))
            if every <= 0:
                raise ValueError("fault: drop: 'every' must be > 0")
            return TransportFault(kind, every=every)
        case "exception":
            code = spec.get("code")
            if code is None:
                return TransportFault(kind)
            if isinstance(code, str) and code.strip().lstrip("-").isdigit():
                code = int(code)
            if isinstance(code, str) and code.startswith("Bad"):
                return TransportFault(kind, status=code)
            if isinstance(code, bool) or not isinstance(code, int) or not 1 <= code <= 255:
                raise ValueError(
                    f"fault: exception: 'code' must be 1–255 (or BadName), got {code!r}"
                )
            return TransportFault(kind, code=code)
        case "status":
            status = spec.get("status")
            if not isinstance(status, str) or not status:
                raise ValueError(
                    "fault: status: give the StatusCode name, e.g. status,BadSensorFailure"
                )
            return TransportFault(kind, status=status)
    return TransportFault(str(kind))


def parse_faults(spec: object) -> list[Fault]:
    """None, one fault or a list of them (as :func:`parse_fault` reads each)."""
    if spec is None:
        return []
    if isinstance(spec, str | Mapping):
        return [parse_fault(spec)]
    if isinstance(spec, Sequence):
        return [parse_fault(item) for item in spec]
    raise ValueError(f"fault: expected a fault or a list of faults, got {spec!r}")
