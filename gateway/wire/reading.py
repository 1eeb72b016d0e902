"""The reading: one point's value at one instant, with everything that makes it evidence.

Plain data. A :class:`Reading` is built from a driver :class:`~drivers.base.Sample`
in the device task, refined by calibration and rules, and turned into its wire form
by :func:`to_wire` when it enters the outbox.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from drivers.base import Quality, Reason, Sample, Value

__all__ = ["Quality", "Reading", "Reason", "to_wire"]


@dataclass(slots=True)
class Reading:
    """A reading on its way from the driver to the outbox (mutable while rules run)."""

    ts_us: int
    device: str
    point: str
    value: Value | None
    raw: Value | None
    unit: str | None
    quality: Quality
    reason: Reason | None = None
    flags: list[str] = field(default_factory=list)
    uncertainty: float | None = None
    coverage: float | None = None
    instrument: str | None = None
    certificate: str | None = None
    verdict: str | None = None
    server_ts_us: int | None = None
    """When a server in between (OPC UA) last handled the value; ``ts_us`` is the source's."""

    @classmethod
    def from_sample(cls, device: str, sample: Sample, unit: str | None) -> Reading:
        """The reading of one sample: its value, quality, the flags the instrument
        reported with it (a meter's status bits) and the server timestamp, if any."""
        return cls(
            ts_us=sample.ts_us,
            device=device,
            point=sample.point,
            value=sample.value,
            raw=sample.raw,
            unit=unit,
            quality=sample.quality,
            reason=sample.reason,
            flags=list(sample.flags),
            server_ts_us=sample.server_ts_us,
        )

    def degrade(self, quality: Quality, reason: Reason, flag: str | None = None) -> None:
        """Lower the quality to ``quality`` (never raise it) and record why."""
        current = self.quality  # worse means: GOOD < UNCERTAIN < BAD (identity: no hashing)
        if quality is not current and (current is Quality.GOOD or quality is Quality.BAD):
            self.quality = quality
            self.reason = reason
        if flag is not None and flag not in self.flags:
            self.flags.append(flag)


def to_wire(r: Reading) -> dict[str, Any]:
    """The reading as it appears in a data batch (keys documented in docs/wire.md).

    Keys whose value is unknown are left out rather than sent as null. (Enum values
    are read as ``_value_``: the ``value`` property costs a Python call per reading.)
    """
    d: dict[str, Any] = {
        "ts": r.ts_us,
        "device": r.device,
        "point": r.point,
        "value": r.value,
        "quality": r.quality._value_,
    }
    if r.raw is not None:
        d["raw"] = r.raw
    if r.unit is not None:
        d["unit"] = r.unit
    if r.reason is not None:
        d["reason"] = r.reason._value_
    if r.flags:
        d["flags"] = r.flags
    if r.uncertainty is not None:
        d["U"] = r.uncertainty
        d["k"] = r.coverage
    if r.instrument is not None:
        d["instrument"] = r.instrument
    if r.certificate is not None:
        d["certificate"] = r.certificate
    if r.verdict is not None:
        d["verdict"] = r.verdict
    if r.server_ts_us is not None:
        d["server_ts"] = r.server_ts_us
    return d
