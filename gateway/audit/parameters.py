"""The legally relevant parameter set of a configuration, as the audit trail compares it.

Start-up and every reload reconcile this set with the event log, which records each
change with its old and new value (:meth:`gateway.audit.eventlog.EventLog.reconcile_parameters`).
"""

from __future__ import annotations

from typing import Any

from gateway.audit.eventlog import canonical_parameters
from gateway.config.schema import Config

_NOT_LEGAL = {"description", "enabled", "poll", "timeout", "sim", "profile"}
"""Keys that do not change a measurement result (how often, not what or how)."""


def _pruned(value: Any) -> Any:
    """Drop unset (None) and empty values, so the audit trail holds what is configured."""
    if isinstance(value, dict):
        out = {k: _pruned(v) for k, v in value.items() if k not in _NOT_LEGAL}
        return {k: v for k, v in out.items() if v is not None and v != [] and v != {}}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


ALWAYS_LOGGED = ("table", "address", "type", "order", "scale", "offset", "unit", "di")
"""Point settings the audit trail always states, default or not: how a number on the
wire becomes a measured value. Other settings appear only when not at their default."""


def legal_parameters(config: Config) -> dict[str, Any]:
    """The legally relevant parameters: instruments, and per point where and how it is read.

    Addresses, data types, byte order, scale, offset, units, calibration, limits and
    rules are in; poll periods, timeouts, descriptions and simulator settings are not.
    Apart from :data:`ALWAYS_LOGGED`, settings left at their documented default are
    not listed (a big site's baseline stays small): a parameter that appears in (or
    disappears from) the audit trail changed from (or back to) its default.
    """
    params: dict[str, Any] = {
        "instruments": {
            i.id: _pruned(i.model_dump(mode="json", exclude_defaults=True))
            for i in config.instruments
        }
    }
    for dev in config.devices:
        d = _pruned(dev.model_dump(mode="json", exclude_defaults=True, exclude={"points"}))
        d["driver"] = dev.driver
        points: dict[str, Any] = {}
        for point in getattr(dev, "points", []):
            p = _pruned(point.model_dump(mode="json", exclude_defaults=True))
            for key in ALWAYS_LOGGED:
                value = getattr(point, key, None)
                if value is not None:
                    p[key] = value.value if hasattr(value, "value") else value
            points[str(p.pop("id", point.id))] = p
        d["points"] = points
        params[f"device:{dev.id}"] = d
    return params


def parameters_json(config: Config) -> bytes:
    """:func:`legal_parameters` as the audit trail compares them (canonical flat JSON).

    ``metrogate run`` has the config loader compute this in its loading child.
    """
    return canonical_parameters(legal_parameters(config))
