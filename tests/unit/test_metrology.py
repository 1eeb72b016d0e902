"""The per-device pipeline: readings refined in place, alarm records, persistence."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.config.models.metrology import (
    DeviceMetrologyFields,
    InstrumentConfig,
    PointMetrologyFields,
    cross_check,
)
from gateway.metrology.alarms import ShelveTooLong, UnknownAlarm
from gateway.metrology.pipeline import DeviceMetrology, MetrologyConfigError
from gateway.wire.reading import Quality, Reading, Reason

S = 1_000_000
T0 = int(datetime(2026, 6, 1, tzinfo=UTC).timestamp()) * S

INSTRUMENT = InstrumentConfig.model_validate(
    {
        "id": "pg1",
        "code": "MFR-PG-000123",
        "model": "PG-100",
        "serial": "000123",
        "range": {"min": 0, "max": 100},
        "u_reading": 0.005,
        "warn_before": "30d",
        "calibrations": [
            {
                "certificate": "C-2026-001",
                "lab": "NIM",
                "date": "2026-01-10",
                "valid_until": "2026-06-20",
                "correction": {
                    "kind": "linear",
                    "c0": -0.12,
                    "c1": 1.0008,
                    "u_c0": 0.02,
                    "u_c1": 2e-4,
                    "correlation": -0.5,
                },
            }
        ],
    }
)


def make(
    points: dict[str, dict[str, Any]], device: dict[str, Any] | None = None
) -> DeviceMetrology:
    specs = [(pid, PointMetrologyFields.model_validate(cfg), "kPa") for pid, cfg in points.items()]
    fields = None if device is None else DeviceMetrologyFields.model_validate(device)
    return DeviceMetrology("d1", specs, fields, {"pg1": INSTRUMENT}, lambda: T0)


def reading(point: str, value: Any, ts: int = T0, quality: Quality = Quality.GOOD) -> Reading:
    return Reading(ts, "d1", point, value, value, "kPa", quality)


def test_calibrated_reading_carries_everything() -> None:
    dm = make(
        {
            "p": {
                "instrument": "pg1",
                "spec": {"lower": 49.8, "upper": 49.95, "rule": "non_binary"},
            }
        }
    )
    r = reading("p", 50.0)
    r.raw = 20000  # the register word
    assert dm.process([r], T0) == []
    assert r.value == pytest.approx(49.92)
    assert r.raw == 20000
    assert r.uncertainty == pytest.approx(0.036, abs=5e-4) and r.coverage == 2.0
    assert (r.instrument, r.certificate) == ("pg1", "C-2026-001")
    assert r.verdict == "conditional_pass"  # 0.03 inside the upper limit, less than U
    assert r.quality is Quality.GOOD


def test_verdict_pass_and_fail_with_spec_alarm() -> None:
    dm = make({"p": {"instrument": "pg1", "spec": {"upper": 50.0, "severity": "high"}}})
    ok = reading("p", 50.0)
    assert dm.process([ok], T0) == [] and ok.verdict == "pass"
    bad = reading("p", 50.3, T0 + S)
    (rec,) = dm.process([bad], T0 + S)
    assert bad.verdict == "fail" and "out_of_tolerance" in bad.flags
    assert (rec["alarm"], rec["state"], rec["severity"], rec["limit"]) == (
        "d1/p/spec",
        "active_unacknowledged",
        "high",
        50.0,
    )
    assert rec["value"] == pytest.approx(50.3 * 1.0008 - 0.12)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_become_bad(bad: float) -> None:
    dm = make({"p": {"instrument": "pg1", "rules": [{"kind": "high", "limit": 1}]}})
    r = reading("p", bad)
    assert dm.process([r], T0) == []
    assert r.value is None and r.raw is None
    assert (r.quality, r.reason) == (Quality.BAD, Reason.INVALID_VALUE)
    assert r.flags == ["invalid_value"] and r.verdict is None and r.uncertainty is None
    json.dumps([r.value, r.raw])


def test_out_of_measuring_range_and_expired_calibration() -> None:
    dm = make({"p": {"instrument": "pg1"}})
    r = reading("p", 120.0)
    dm.process([r], T0)
    assert "out_of_measuring_range" in r.flags
    assert (r.quality, r.reason) == (Quality.UNCERTAIN, Reason.UNITS_EXCEEDED)
    later = T0 + 25 * 86400 * S
    r2 = reading("p", 10.0, later)
    dm.process([r2], later)
    assert r2.flags == ["calibration_expired"]
    assert (r2.quality, r2.reason) == (Quality.UNCERTAIN, Reason.CALIBRATION_EXPIRED)


def test_bad_and_non_numeric_readings_are_left_alone() -> None:
    dm = make({"p": {"instrument": "pg1"}, "q": {"rules": [{"kind": "high", "limit": 0}]}})
    r = reading("p", None, quality=Quality.BAD)
    r.reason = Reason.NO_COMMUNICATION
    b = reading("q", True)
    dm.process([r, b], T0)
    assert r.value is None and r.flags == [] and r.instrument is None
    assert b.value is True and b.flags == []


def test_limit_alarm_through_the_pipeline_with_deadband() -> None:
    dm = make({"p": {"rules": [{"kind": "high", "limit": 80, "deadband": 2}]}})
    values = [79, 81, 79.5, 81, 79, 77.9, 78]
    events = []
    for i, v in enumerate(values):
        r = reading("p", float(v), T0 + i * S)
        events += [(i, rec["event"]) for rec in dm.process([r], T0 + i * S)]
        assert ("limit_high" in r.flags) == (v > 80)
    assert events == [(1, "raised"), (5, "returned")]


def test_stuck_degrades_quality() -> None:
    dm = make({"p": {"rules": [{"kind": "stuck", "count": 3, "alarm": False}]}})
    rs = [reading("p", 5.0, T0 + i * S) for i in range(3)]
    for i, r in enumerate(rs):
        assert dm.process([r], T0 + i * S) == []
    assert rs[2].flags == ["stuck"]
    assert (rs[2].quality, rs[2].reason) == (Quality.UNCERTAIN, Reason.SENSOR_FAILURE)
    assert rs[1].quality is Quality.GOOD


def test_stale() -> None:
    dm = make({"p": {"rules": [{"kind": "stale", "timeout": "10s"}]}})
    assert dm.process([reading("p", 1.0, T0 + S)], T0 + S) == []
    missed = reading("p", None, T0 + 11 * S, Quality.BAD)
    (rec,) = dm.process([missed], T0 + 11 * S)
    assert rec["alarm"] == "d1/p/stale" and rec["state"] == "active_unacknowledged"
    assert "stale" in missed.flags
    (back,) = dm.process([reading("p", 2.0, T0 + 12 * S)], T0 + 12 * S)
    assert back["event"] == "returned"


def test_expression_rule() -> None:
    dm = make(
        {"a": {}, "b": {}},
        {"expressions": [{"name": "dp", "expr": "a - b > 5", "severity": "critical"}]},
    )
    ra, rb = reading("a", 10.0), reading("b", 4.0)
    (rec,) = dm.process([ra, rb], T0)
    assert rec["alarm"] == "d1/dp" and rec["severity"] == "critical"
    assert "expression:dp" in ra.flags and "expression:dp" in rb.flags
    # a missing operand leaves the alarm as it is
    assert dm.process([reading("a", 0.0, T0 + S)], T0 + S) == []
    (ret,) = dm.process([reading("a", 0.0, T0 + 2 * S), reading("b", 0.0)], T0 + 2 * S)
    assert ret["event"] == "returned"


def test_unknown_expression_point_is_refused() -> None:
    with pytest.raises(MetrologyConfigError, match="names unknown point"):
        make({"a": {}}, {"expressions": [{"name": "x", "expr": "a > zz"}]})


def test_spc_flags_and_alarm() -> None:
    dm = make({"p": {"spc": {"center": 10, "sigma": 1, "nelson": [1, 2]}}})
    records: list[dict[str, Any]] = []
    flags: list[list[str]] = []
    for i, v in enumerate([10.5] * 9 + [14.0, 10.0]):
        r = reading("p", v, T0 + i * S)
        records += dm.process([r], T0 + i * S)
        flags.append(r.flags)
    assert flags[8] == ["spc_nelson_2"]
    assert flags[9] == ["spc_nelson_1", "spc_nelson_2"]  # the run on one side continues
    assert flags[10] == []
    assert [rec["event"] for rec in records] == ["raised", "returned"]


def test_acknowledge_and_shelve_via_device() -> None:
    dm = make({"p": {"rules": [{"kind": "high", "limit": 1}]}}, {"max_shelve": "1h"})
    dm.process([reading("p", 2.0)], T0)
    assert [a["alarm"] for a in dm.active_alarms()] == ["d1/p/high"]
    (ack,) = dm.acknowledge("d1/p/high", "alice", T0 + S)
    assert ack["state"] == "active_acknowledged"
    with pytest.raises(UnknownAlarm):
        dm.acknowledge("d1/p/nope", "alice", T0)
    with pytest.raises(ShelveTooLong, match="exceeds the maximum 3600 s"):
        dm.shelve("d1/p/high", 3601, "alice", T0)
    (sh,) = dm.shelve("d1/p/high", 60, "alice", T0 + 2 * S)
    assert sh["shelved_until"] == T0 + 62 * S
    assert dm.process([], T0 + 61 * S) == []
    (un,) = dm.process([], T0 + 62 * S)
    assert un["event"] == "unshelved"


def test_restore_keeps_active_alarm_active() -> None:
    cfg = {
        "p": {
            "rules": [
                {"kind": "high", "limit": 80, "deadband": 5},
                {"kind": "stuck", "count": 3, "alarm": False},
            ],
            "spc": {"learn": 5},
        }
    }
    dm = make(cfg)
    for i, v in enumerate([90.0, 90.0]):
        dm.process([reading("p", v, T0 + i * S)], T0 + i * S)
    saved = json.loads(json.dumps(dm.to_state()))
    restarted = make(cfg)
    restarted.load_state(saved)
    assert [a["state"] for a in restarted.active_alarms()] == ["active_unacknowledged"]
    r = reading("p", 77.0, T0 + 2 * S)  # inside the deadband: still active, no new record
    assert restarted.process([r], T0 + 2 * S) == []
    assert r.flags == []
    r2 = reading("p", 77.0, T0 + 3 * S)
    restarted.process([r2], T0 + 3 * S)
    assert r2.flags == []  # stuck run restarted at 77 (count 2 < 3)
    (ret,) = restarted.process([reading("p", 74.0, T0 + 4 * S)], T0 + 4 * S)
    assert ret["event"] == "returned"
    with pytest.raises(ValueError, match="unsupported metrology state version"):
        restarted.load_state({"version": 99})


def test_calibration_events() -> None:
    dm = make({"p": {"instrument": "pg1"}})
    (soon,) = dm.events(T0)
    assert soon == {
        "ts": T0,
        "event": "calibration_due_soon",
        "device": "d1",
        "instrument": "pg1",
        "certificate": "C-2026-001",
        "lab": "NIM",
        "valid_until": "2026-06-20",
        "days_left": 19,
        "message": "calibration of pg1 is due in 19 day(s)",
    }
    assert dm.events(T0 + S) == []  # once per change
    (expired,) = dm.events(T0 + 20 * 86400 * S)
    assert expired["event"] == "calibration_expired" and expired["days_left"] == -1


def test_unknown_instrument() -> None:
    with pytest.raises(MetrologyConfigError, match="unknown instrument 'nope'"):
        make({"p": {"instrument": "nope"}})
    point = PointMetrologyFields(instrument="nope")
    assert cross_check([INSTRUMENT, INSTRUMENT], [("d1", [point])]) == [
        (("instruments", 1, "id"), "instrument id 'pg1' is used twice"),
        (("devices", 0, "points", 0, "instrument"), "unknown instrument 'nope' (known: pg1)"),
    ]


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from gateway.wire.reading import to_wire  # noqa: E402

VALUES = st.one_of(
    st.none(), st.booleans(), st.text(max_size=5), st.integers(), st.floats(allow_nan=True)
)


@settings(max_examples=200, deadline=None)
@given(st.lists(VALUES, min_size=1, max_size=30))
def test_any_value_sequence_is_handled_and_stays_json(values: list[Any]) -> None:
    dm = make(
        {
            "p": {
                "instrument": "pg1",
                "spec": {"lower": 0, "upper": 1, "rule": "non_binary"},
                "rules": [
                    {"kind": "high", "limit": 1},
                    {"kind": "rate", "max": 1},
                    {"kind": "stuck", "count": 3},
                    {"kind": "stale", "timeout": 5},
                ],
                "spc": {"learn": 5, "ewma": {}, "cusum": {}},
            }
        },
        {"expressions": [{"name": "e", "expr": "p / 2 > 1"}]},
    )
    for i, v in enumerate(values):
        r = reading("p", v, T0 + i * S)
        records = dm.process([r], T0 + i * S)
        json.dumps(to_wire(r), allow_nan=False)
        json.dumps(records, allow_nan=False)
        if isinstance(v, float) and not math.isfinite(v):
            assert r.quality is Quality.BAD and r.reason is Reason.INVALID_VALUE
    json.dumps(dm.to_state(), allow_nan=False)
