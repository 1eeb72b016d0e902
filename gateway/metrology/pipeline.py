"""The per-device metrology pipeline: calibration, conformity, rules, SPC and alarms.

:class:`DeviceMetrology` is built once per device from its config and runs inside
the device task, synchronously, on each poll's readings. For every reading of a
configured point, in this order:

1. a non-finite value (NaN, ±inf) becomes ``value: null``, quality ``bad``, reason
   ``invalid_value``, flag ``invalid_value``; nothing else runs on it;
2. bad or non-numeric readings skip the numeric stages (stale still sees them);
3. the instrument: ``instrument``/``certificate`` are set, the indication is checked
   against the measuring range, the calibration's validity is checked, the
   correction is applied and ``U``/``k`` set (``raw`` keeps the driver's raw value,
   or the indication when the driver gave none);
4. conformity: the ``verdict`` against the point's ``spec``;
5. value rules (high/low limits, rate, stuck) and SPC on readings that are not bad;
6. after all readings: stale checks and device expressions.

Every alarm state change comes back from :meth:`DeviceMetrology.process` as a
record (see :mod:`gateway.metrology.alarms` for the keys); alarm ids are
``device/point/rule`` for point alarms (``rule`` is the rule's name, ``spec`` or
``spc``) and ``device/expression_name`` for expressions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

from gateway.config.models.metrology import (
    DeviceMetrologyFields,
    InstrumentConfig,
    PointMetrologyFields,
    StaleRule,
)
from gateway.metrology.alarms import Alarm, ShelveTooLong, UnknownAlarm
from gateway.metrology.calibration import Calibrator, validity
from gateway.metrology.conformity import Decider, Verdict
from gateway.metrology.rules import (
    CompiledExpression,
    ExpressionError,
    PointRule,
    StaleCheck,
    compile_rule,
)
from gateway.metrology.spc import ControlChart
from gateway.wire.reading import Quality, Reading, Reason

__all__ = ["DeviceMetrology", "MetrologyConfigError", "PointSpec"]

PointSpec = tuple[str, PointMetrologyFields, str | None]
"""(point id, the point's metrology fields, its unit)."""

_STATE_VERSION = 1
_QUALITY = {"uncertain": Quality.UNCERTAIN, "bad": Quality.BAD}
_US_PER_DAY = 86_400_000_000
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def _is_bad(r: Reading) -> bool:
    # a function, so type narrowing from earlier checks does not survive degrade()
    return r.quality is Quality.BAD


def _flag(r: Reading, flag: str) -> None:
    if flag not in r.flags:
        r.flags.append(flag)


class MetrologyConfigError(ValueError):
    """The device's metrology config refers to something that does not exist."""


class _Point:
    """Everything compiled for one point."""

    __slots__ = (
        "calibrator",
        "chart",
        "decider",
        "instrument",
        "rules",
        "spc_alarm",
        "spec_alarm",
        "stale",
    )

    def __init__(self) -> None:
        self.instrument: str | None = None
        self.calibrator: Calibrator | None = None
        self.decider: Decider | None = None
        self.spec_alarm: Alarm | None = None
        self.rules: list[tuple[PointRule, Alarm | None, tuple[Quality, Reason] | None]] = []
        self.stale: list[tuple[StaleCheck, Alarm | None]] = []
        self.chart: ControlChart | None = None
        self.spc_alarm: Alarm | None = None

    def configured(self) -> bool:
        """Whether anything applies to the point (else it can share an empty record)."""
        return bool(self.rules or self.stale) or any(
            x is not None
            for x in (
                self.instrument,
                self.calibrator,
                self.decider,
                self.spec_alarm,
                self.chart,
                self.spc_alarm,
            )
        )


class DeviceMetrology:
    """Metrology of one device's points; see the module docstring for the order of stages."""

    def __init__(
        self,
        device_id: str,
        points: Sequence[PointSpec],
        device_fields: DeviceMetrologyFields | None,
        instruments: dict[str, InstrumentConfig],
        clock_us: Callable[[], int],
    ) -> None:
        self.device = device_id
        self.clock_us = clock_us
        fields = device_fields or DeviceMetrologyFields()
        self.max_shelve_us = round(fields.max_shelve * 1e6)
        self.alarms: dict[str, Alarm] = {}
        self.points: dict[str, _Point] = {}
        self.instruments: dict[str, InstrumentConfig] = {}
        start = clock_us()
        calibrators: dict[str, Calibrator] = {}
        plain = self._plain = _Point()  # points without metrology settings share it
        for point_id, cfg, _unit in points:
            pt = _Point()
            if cfg.instrument is not None:
                inst = instruments.get(cfg.instrument)
                if inst is None:
                    raise MetrologyConfigError(
                        f"{device_id}/{point_id}: unknown instrument {cfg.instrument!r}"
                    )
                self.instruments[inst.id] = inst
                if inst.id not in calibrators:
                    calibrators[inst.id] = Calibrator(inst)
                pt.instrument = inst.id
                pt.calibrator = calibrators[inst.id]
            if cfg.spec is not None:
                pt.decider = Decider(cfg.spec)
                if cfg.spec.alarm:
                    pt.spec_alarm = self._alarm(
                        point_id, "spec", cfg.spec.severity, 0.0, 0.0, "out of tolerance"
                    )
            for rule in cfg.rules:
                alarm = (
                    self._alarm(
                        point_id,
                        rule.alarm_name,
                        rule.severity,
                        rule.on_delay,
                        rule.off_delay,
                        rule.message,
                    )
                    if rule.alarm
                    else None
                )
                if isinstance(rule, StaleRule):
                    pt.stale.append((StaleCheck(rule, start), alarm))
                    continue
                degrade: tuple[Quality, Reason] | None = None
                quality = getattr(rule, "quality", None)
                if quality is not None:
                    degrade = (_QUALITY[quality], Reason.SENSOR_FAILURE)
                pt.rules.append((compile_rule(rule), alarm, degrade))
            if cfg.spc is not None:
                pt.chart = ControlChart(cfg.spc, cfg.spec)
                if cfg.spc.alarm:
                    pt.spc_alarm = self._alarm(
                        point_id,
                        "spc",
                        cfg.spc.severity,
                        cfg.spc.on_delay,
                        cfg.spc.off_delay,
                        "statistical process control",
                    )
            self.points[point_id] = pt if pt.configured() else plain
        self.expressions: list[tuple[str, CompiledExpression, Alarm | None]] = []
        for expr in fields.expressions:
            compiled = CompiledExpression(expr.expr)
            unknown = [n for n in compiled.names if n not in self.points]
            if unknown:
                raise MetrologyConfigError(
                    f"{device_id}: expression {expr.name!r} names unknown point(s): "
                    + ", ".join(unknown)
                )
            alarm = None
            if expr.alarm:
                alarm = Alarm(
                    f"{device_id}/{expr.name}",
                    device=device_id,
                    point=None,
                    rule=expr.name,
                    severity=expr.severity,
                    on_delay_s=expr.on_delay,
                    off_delay_s=expr.off_delay,
                    message=expr.message or expr.expr,
                )
                self.alarms[alarm.alarm_id] = alarm
            self.expressions.append((expr.name, compiled, alarm))
        self._shelved: set[str] = set()
        self._notified: dict[str, str] = {}
        # an expression may read a point that has nothing else configured
        self._reads_plain = any(
            self.points[n] is plain for _, expr, _ in self.expressions for n in expr.names
        )

    def _alarm(
        self,
        point: str,
        rule: str,
        severity: Any,
        on_delay: float,
        off_delay: float,
        message: str | None,
    ) -> Alarm:
        alarm_id = f"{self.device}/{point}/{rule}"
        alarm = Alarm(
            alarm_id,
            device=self.device,
            point=point,
            rule=rule,
            severity=severity,
            on_delay_s=on_delay,
            off_delay_s=off_delay,
            message=message or f"{point} {rule}",
        )
        self.alarms[alarm_id] = alarm
        return alarm

    # ------------------------------------------------------------------ the hot path

    def process(self, readings: list[Reading], now_us: int) -> list[dict[str, Any]]:
        """Refine ``readings`` in place; return the alarm records of this poll."""
        records: list[dict[str, Any]] = []
        if self._shelved:
            self._expire_shelves(now_us, records)
        points = self.points
        plain = self._plain
        usable: dict[str, float] = {}
        by_point: dict[str, Reading] = {}
        isfinite = math.isfinite
        for r in readings:
            pt = points.get(r.point)
            if pt is None:
                continue
            value = r.value
            if type(value) is float and not isfinite(value):
                r.value = None
                if type(r.raw) is float and not isfinite(r.raw):
                    r.raw = None
                r.degrade(Quality.BAD, Reason.INVALID_VALUE, "invalid_value")
                by_point[r.point] = r
                continue
            if pt is plain and not self._reads_plain:
                continue  # nothing applies to it and no expression reads it
            by_point[r.point] = r
            if value is None or r.quality is Quality.BAD or isinstance(value, bool | str):
                continue
            x = float(value)
            y = self._refine(pt, r, x, records)
            if not _is_bad(r):
                usable[r.point] = y
            if r.quality is Quality.GOOD:
                for check, _alarm in pt.stale:
                    check.good(r.ts_us)
        for point_id, pt in points.items():
            for check, alarm in pt.stale:
                hit = check.check(now_us)
                if hit and point_id in by_point:
                    _flag(by_point[point_id], check.flag)
                if alarm is not None:
                    records.extend(alarm.update(hit, now_us, None, check.limit))
        for name, expr, alarm in self.expressions:
            try:
                hit = expr(usable)
            except ExpressionError:
                continue  # not evaluable this poll: keep the alarm as it is
            if hit:
                flag = f"expression:{name}"
                for point_id in expr.names:
                    if point_id in by_point:
                        _flag(by_point[point_id], flag)
            if alarm is not None:
                records.extend(alarm.update(hit, now_us))
        return records

    def _refine(self, pt: _Point, r: Reading, x: float, records: list[dict[str, Any]]) -> float:
        ts = r.ts_us
        y = x
        cal = pt.calibrator
        if cal is not None:
            res = cal.calibrate(x, ts)
            y = res.value
            if r.raw is None:
                r.raw = r.value
            r.instrument = pt.instrument
            r.certificate = res.certificate
            if not math.isfinite(y):  # the correction overflowed on an absurd indication
                r.value = None
                r.degrade(Quality.BAD, Reason.INVALID_VALUE, "invalid_value")
                return y
            r.value = y
            finite_u = res.U is not None and math.isfinite(res.U)
            r.uncertainty = res.U if finite_u else None
            r.coverage = res.k if finite_u else None
            for flag in res.flags:
                if flag not in r.flags:
                    r.flags.append(flag)
            if res.quality is not None and res.reason is not None:
                r.degrade(res.quality, res.reason)
            if _is_bad(r):
                return y  # e.g. expired calibration under the "bad" policy: no verdict, no rules
        decider = pt.decider
        if decider is not None:
            d = decider.decide(y, r.uncertainty)
            r.verdict = d.verdict.value
            fail = d.verdict is Verdict.FAIL
            if fail:
                r.flags.append("out_of_tolerance")
            elif d.verdict is not Verdict.PASS:
                r.flags.append("conformity_undetermined")
            if d.uncertainty_unknown:
                r.flags.append("uncertainty_unknown")
            if pt.spec_alarm is not None:
                records.extend(pt.spec_alarm.update(fail, ts, y, d.limit))
        for rule, alarm, degrade in pt.rules:
            flagged, condition = rule.step(y, ts)
            if flagged:
                if degrade is not None:
                    r.degrade(degrade[0], degrade[1], rule.flag)
                elif rule.flag not in r.flags:
                    r.flags.append(rule.flag)
            if alarm is not None:
                records.extend(alarm.update(condition, ts, y, rule.limit))
        chart = pt.chart
        if chart is not None:
            spc_flags = chart.add(y)
            if spc_flags:
                r.flags.extend(spc_flags)
            if pt.spc_alarm is not None:
                limits = chart.limits()
                records.extend(
                    pt.spc_alarm.update(
                        bool(spc_flags), ts, y, None if limits is None else limits[2]
                    )
                )
        return y

    # ------------------------------------------------------------------ operator commands

    def _get(self, alarm_id: str) -> Alarm:
        alarm = self.alarms.get(alarm_id)
        if alarm is None:
            raise UnknownAlarm(alarm_id, f"no such alarm on device {self.device}")
        return alarm

    def acknowledge(self, alarm_id: str, user: str, now_us: int) -> list[dict[str, Any]]:
        """Acknowledge one alarm (raises :class:`UnknownAlarm`); [] if nothing to acknowledge."""
        return self._get(alarm_id).acknowledge(user, now_us)

    def shelve(
        self, alarm_id: str, duration_s: float, user: str, now_us: int
    ) -> list[dict[str, Any]]:
        """Shelve for ``duration_s`` (at most ``max_shelve``; raises :class:`ShelveTooLong`)."""
        alarm = self._get(alarm_id)
        if not math.isfinite(duration_s) or duration_s <= 0:
            raise ShelveTooLong(alarm_id, f"shelve time must be > 0 s, got {duration_s}")
        duration_us = round(duration_s * 1e6)
        if duration_us > self.max_shelve_us:
            raise ShelveTooLong(
                alarm_id,
                f"shelve time {duration_s:g} s exceeds the maximum {self.max_shelve_us / 1e6:g} s",
            )
        self._shelved.add(alarm_id)
        return alarm.shelve(now_us + duration_us, user, now_us)

    def unshelve(self, alarm_id: str, user: str, now_us: int) -> list[dict[str, Any]]:
        """End a shelve early."""
        self._shelved.discard(alarm_id)
        return self._get(alarm_id).unshelve(user, now_us)

    def _expire_shelves(self, now_us: int, records: list[dict[str, Any]]) -> None:
        for alarm_id in sorted(self._shelved):
            out = self.alarms[alarm_id].tick(now_us)
            if out:
                self._shelved.discard(alarm_id)
                records.extend(out)

    def tick(self, now_us: int) -> list[dict[str, Any]]:
        """Time-driven changes without readings (shelve expiry)."""
        records: list[dict[str, Any]] = []
        self._expire_shelves(now_us, records)
        return records

    def active_alarms(self) -> list[dict[str, Any]]:
        """Snapshots of alarms that are not normal, or are shelved."""
        now = self.clock_us()
        return [
            a.snapshot(now)
            for a in self.alarms.values()
            if a.state.value != "normal" or a.shelved_until_us is not None
        ]

    # ------------------------------------------------------------------ calibration events

    def events(self, now_us: int) -> list[dict[str, Any]]:
        """Calibration status changes of this device's instruments since the last call.

        Each event: ``ts``, ``event`` (``calibration_due_soon``, ``calibration_expired``,
        ``calibration_missing`` or ``calibration_valid``), ``device``, ``instrument``,
        ``certificate``, ``valid_until`` (ISO date), ``days_left``, ``message``. The
        first call reports every instrument that is not simply valid.
        """
        day = date.fromordinal(_EPOCH_ORDINAL + now_us // _US_PER_DAY)
        out: list[dict[str, Any]] = []
        for inst_id, inst in sorted(self.instruments.items()):
            v = validity(inst, day)
            if self._notified.get(inst_id, "valid") == v.status:
                continue
            self._notified[inst_id] = v.status
            rec = v.record
            if v.status == "expired":
                msg = f"calibration of {inst_id} expired {-(v.days_left or 0)} day(s) ago"
            elif v.status == "due_soon":
                msg = f"calibration of {inst_id} is due in {v.days_left} day(s)"
            elif v.status == "missing":
                msg = f"no calibration certificate of {inst_id} is in force"
            else:
                msg = f"calibration of {inst_id} is valid"
            out.append(
                {
                    "ts": now_us,
                    "event": f"calibration_{v.status}",
                    "device": self.device,
                    "instrument": inst_id,
                    "certificate": None if rec is None else rec.certificate,
                    "lab": None if rec is None else rec.lab,
                    "valid_until": None if rec is None else rec.valid_until.isoformat(),
                    "days_left": v.days_left,
                    "message": msg,
                }
            )
        return out

    # ------------------------------------------------------------------ persistence

    def to_state(self) -> dict[str, Any]:
        """Rule windows, SPC state, alarm states and notified calibration status (JSON-able)."""
        points: dict[str, Any] = {}
        for point_id, pt in self.points.items():
            st: dict[str, Any] = {}
            rules = {a.rule if a else str(i): r.to_state() for i, (r, a, _) in enumerate(pt.rules)}
            if rules:
                st["rules"] = rules
            stale = {a.rule if a else str(i): c.to_state() for i, (c, a) in enumerate(pt.stale)}
            if stale:
                st["stale"] = stale
            if pt.chart is not None:
                st["spc"] = pt.chart.to_state()
            if st:
                points[point_id] = st
        return {
            "version": _STATE_VERSION,
            "device": self.device,
            "points": points,
            "alarms": {k: a.to_state() for k, a in self.alarms.items()},
            "calibration": dict(self._notified),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`to_state` output; parts that no longer match the config are skipped.

        Raises ValueError when ``state`` is not a state of this format.
        """
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported metrology state version {state.get('version')!r}")
        try:
            for point_id, st in state.get("points", {}).items():
                pt = self.points.get(point_id)
                if pt is None:
                    continue
                saved_rules = st.get("rules", {})
                for i, (rule, alarm, _) in enumerate(pt.rules):
                    key = alarm.rule if alarm else str(i)
                    if key in saved_rules:
                        rule.load_state(saved_rules[key])
                saved_stale = st.get("stale", {})
                for i, (check, alarm) in enumerate(pt.stale):
                    key = alarm.rule if alarm else str(i)
                    if key in saved_stale:
                        check.load_state(saved_stale[key])
                if pt.chart is not None and "spc" in st:
                    pt.chart.load_state(st["spc"])
            for alarm_id, st in state.get("alarms", {}).items():
                alarm = self.alarms.get(alarm_id)
                if alarm is not None:
                    alarm.load_state(st)
                    if alarm.shelved_until_us is not None:
                        self._shelved.add(alarm_id)
                    else:
                        self._shelved.discard(alarm_id)
            self._notified = {str(k): str(v) for k, v in state.get("calibration", {}).items()}
        except (KeyError, TypeError, IndexError, AttributeError, OverflowError) as e:
            raise ValueError(f"malformed metrology state: {e!r}") from e
