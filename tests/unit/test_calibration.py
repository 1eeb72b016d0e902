"""Corrections, GUM uncertainty and calibration validity against hand-worked values."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.common.types import parse_duration
from gateway.config.models.metrology import InstrumentConfig, calibration_warnings
from gateway.metrology.calibration import Calibrator, compile_correction, validity
from gateway.wire.reading import Quality, Reason


def ts(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, 12, tzinfo=UTC).timestamp() * 1_000_000)


def instrument(correction: dict[str, Any] | None = None, **extra: Any) -> InstrumentConfig:
    rec: dict[str, Any] = {
        "certificate": "C-2026-001",
        "lab": "NIM",
        "date": "2026-01-10",
        "valid_until": "2027-01-09",
    }
    if correction is not None:
        rec["correction"] = correction
    rec.update(extra.pop("record", {}))
    return InstrumentConfig.model_validate({"id": "pg1", "calibrations": [rec], **extra})


MID = ts(date(2026, 6, 1))

WORKED = {
    "kind": "linear",
    "c0": -0.12,
    "c1": 1.0008,
    "u_c0": 0.02,
    "u_c1": 2e-4,
    "correlation": -0.5,
}


def test_worked_case_of_the_reference_reproduces() -> None:
    # y = 49.920, u_c = 0.018, U(k=2) = 0.036
    cal = Calibrator(instrument(WORKED, u_reading=0.005))
    res = cal.calibrate(50.000, MID)
    assert round(res.value, 3) == 49.920
    assert res.U is not None and res.k == 2.0
    assert round(res.U / 2, 3) == 0.018
    assert round(res.U, 3) == 0.036
    # the exact sum: 4e-4 + 1e-4 + 1.0008²·2.5e-5 − 2e-4
    assert pytest.approx(2 * math.sqrt(0.0003 + 1.0008**2 * 2.5e-5), rel=1e-12) == res.U
    assert res.certificate == "C-2026-001"
    assert res.flags == () and res.quality is None


@pytest.mark.parametrize(
    ("correction", "r", "y", "slope"),
    [
        ({"kind": "offset", "b": 0.25}, 10.0, 10.25, 1.0),
        ({"kind": "offset", "b": -1.5}, 0.0, -1.5, 1.0),
        ({"kind": "linear", "c0": 1.0, "c1": 2.0}, 3.0, 7.0, 2.0),
        ({"kind": "linear", "c0": -0.12, "c1": 1.0008}, 50.0, 49.92, 1.0008),
        ({"kind": "polynomial", "coefficients": [1.0, 2.0, 0.5]}, 2.0, 7.0, 4.0),
        ({"kind": "polynomial", "coefficients": [0.0, 1.0, 0.0, 0.001]}, 10.0, 11.0, 1.3),
        (
            {
                "kind": "table",
                "points": [
                    {"reading": 0, "value": 0.1},
                    {"reading": 10, "value": 10.3},
                    {"reading": 20, "value": 20.1},
                ],
            },
            5.0,
            5.2,
            1.02,
        ),
        (
            {
                "kind": "table",
                "points": [
                    {"reading": 0, "value": 0.1},
                    {"reading": 10, "value": 10.3},
                    {"reading": 20, "value": 20.1},
                ],
            },
            15.0,
            15.2,
            0.98,
        ),
        (
            {"kind": "table", "points": [{"reading": 0, "value": 0}, {"reading": 4, "value": 2}]},
            4.0,
            2.0,
            0.5,
        ),
    ],
)
def test_corrections(correction: dict[str, Any], r: float, y: float, slope: float) -> None:
    inst = instrument(correction)
    assert inst.calibrations[0].correction is not None
    ev = compile_correction(inst.calibrations[0].correction).evaluate(r)
    assert ev is not None
    assert ev[0] == pytest.approx(y, abs=1e-12)
    assert ev[1] == pytest.approx(slope, abs=1e-12)


@pytest.mark.parametrize(
    ("correction", "extra", "r", "U"),
    [
        # certificate U/k only: u = 0.02/2 → U = 0.02
        ({"kind": "offset", "b": 0.1}, {"record": {"U": 0.02, "k": 2}}, 5.0, 0.02),
        # certificate U with k=3 plus resolution 0.01: u² = (0.03/3)² + (0.01/√12)²
        (
            {"kind": "offset", "b": 0.1},
            {"record": {"U": 0.03, "k": 3}, "resolution": 0.01},
            5.0,
            2 * math.sqrt(1e-4 + 1e-4 / 12),
        ),
        # u_b given wins over the certificate U
        ({"kind": "offset", "b": 0.1, "u_b": 0.004}, {"record": {"U": 1.0}}, 5.0, 0.008),
        # linear, uncorrelated, with u(r) = 0.01: u² = 1e-4 + 100·1e-6 + 4·1e-4
        (
            {"kind": "linear", "c0": 0, "c1": 2, "u_c0": 0.01, "u_c1": 0.001},
            {"u_reading": 0.01},
            10.0,
            2 * math.sqrt(1e-4 + 1e-4 + 4e-4),
        ),
        # polynomial with covariance: y = c0 + c1 r + c2 r², g = (1, r, r²), r = 2
        (
            {
                "kind": "polynomial",
                "coefficients": [0, 1, 0.1],
                "covariance": [[1e-4, 0, 0], [0, 1e-6, 0], [0, 0, 1e-8]],
            },
            {},
            2.0,
            2 * math.sqrt(1e-4 + 4e-6 + 16e-8),
        ),
        # table: larger U of the two bracketing points, divided by the certificate's k
        (
            {
                "kind": "table",
                "points": [
                    {"reading": 0, "value": 0, "U": 0.02},
                    {"reading": 10, "value": 10, "U": 0.06},
                    {"reading": 20, "value": 20, "U": 0.04},
                ],
            },
            {},
            12.0,
            0.06,
        ),
        # no certificate U, only resolution: U = 2·d/√12
        ({"kind": "offset", "b": 0}, {"resolution": 0.1}, 1.0, 2 * 0.1 / math.sqrt(12)),
    ],
)
def test_uncertainty(correction: dict[str, Any], extra: dict[str, Any], r: float, U: float) -> None:
    res = Calibrator(instrument(correction, **extra)).calibrate(r, MID)
    assert pytest.approx(U, rel=1e-9) == res.U
    assert res.k == 2.0


def test_no_uncertainty_component_means_no_U() -> None:
    res = Calibrator(instrument({"kind": "offset", "b": 1})).calibrate(1.0, MID)
    assert res.U is None and res.k is None and res.value == 2.0


def test_output_coverage_factor_is_configurable() -> None:
    res = Calibrator(instrument(WORKED, u_reading=0.005, coverage=3)).calibrate(50.0, MID)
    assert res.k == 3.0
    assert pytest.approx(3 * math.sqrt(0.0003 + 1.0008**2 * 2.5e-5)) == res.U


@pytest.mark.parametrize("r", [-0.001, 20.0001, 1e9])
def test_table_is_never_extrapolated(r: float) -> None:
    table = {
        "kind": "table",
        "points": [{"reading": 0, "value": 0.1}, {"reading": 20, "value": 20}],
    }
    res = Calibrator(instrument(table, record={"U": 0.1})).calibrate(r, MID)
    assert res.value == r  # passed through uncorrected
    assert res.U is None
    assert "out_of_calibrated_range" in res.flags
    assert (res.quality, res.reason) == (Quality.UNCERTAIN, Reason.OUT_OF_CALIBRATED_RANGE)


def test_measuring_range() -> None:
    cal = Calibrator(instrument(None, range={"min": 0, "max": 100}))
    assert cal.calibrate(100.0, MID).flags == ()
    res = cal.calibrate(100.5, MID)
    assert "out_of_measuring_range" in res.flags
    assert (res.quality, res.reason) == (Quality.UNCERTAIN, Reason.UNITS_EXCEEDED)


@pytest.mark.parametrize(
    ("policy", "quality"), [("uncertain", Quality.UNCERTAIN), ("bad", Quality.BAD)]
)
def test_expired_calibration_flagged_with_policy(policy: str, quality: Quality) -> None:
    cal = Calibrator(instrument({"kind": "offset", "b": 1}, expired_policy=policy))
    on_last_day = cal.calibrate(1.0, ts(date(2027, 1, 9)))
    assert on_last_day.flags == ()
    after = cal.calibrate(1.0, ts(date(2027, 1, 10)))
    assert after.flags == ("calibration_expired",)
    assert (after.quality, after.reason) == (quality, Reason.CALIBRATION_EXPIRED)
    assert after.value == 2.0  # the last correction still applies


def test_latest_certificate_in_force_is_used() -> None:
    inst = InstrumentConfig.model_validate(
        {
            "id": "t1",
            "calibrations": [
                {
                    "certificate": "old",
                    "date": "2025-01-01",
                    "valid_until": "2025-12-31",
                    "correction": {"kind": "offset", "b": 1},
                },
                {
                    "certificate": "new",
                    "date": "2026-01-01",
                    "valid_until": "2026-12-31",
                    "correction": {"kind": "offset", "b": 2},
                },
            ],
        }
    )
    cal = Calibrator(inst)
    assert cal.calibrate(0.0, ts(date(2025, 6, 1))).certificate == "old"
    res = cal.calibrate(0.0, ts(date(2026, 6, 1)))
    assert (res.certificate, res.value) == ("new", 2.0)
    before = cal.calibrate(0.0, ts(date(2024, 6, 1)))
    assert before.flags == ("not_calibrated",) and before.certificate is None


def test_validity_and_warnings() -> None:
    inst = instrument(None, warn_before="30d")
    assert validity(inst, date(2026, 6, 1)).status == "valid"
    soon = validity(inst, date(2026, 12, 20))
    assert (soon.status, soon.days_left) == ("due_soon", 20)
    assert validity(inst, date(2027, 1, 10)).status == "expired"
    warnings = calibration_warnings([inst], date(2027, 2, 1))
    assert warnings == [
        (
            ("instruments", 0, "calibrations", 0, "valid_until"),
            "calibration of pg1 (certificate C-2026-001) expired on 2027-01-09, 23 day(s) ago",
        )
    ]
    due = calibration_warnings([inst], date(2026, 12, 30))
    assert len(due) == 1 and "due on 2027-01-09, in 10 day(s)" in due[0][1]
    assert calibration_warnings([inst], date(2026, 6, 1)) == []


# --------------------------------------------------------------------------- bad input


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as e:
        InstrumentConfig.model_validate(data)
    return str(e.value)


BASE = {"certificate": "C1", "date": "2026-01-10", "valid_until": "2027-01-09"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {
                "calibrations": [
                    {
                        **BASE,
                        "correction": {
                            "kind": "table",
                            "points": [
                                {"reading": 0, "value": 0},
                                {"reading": 5, "value": 5},
                                {"reading": 4, "value": 6},
                            ],
                        },
                    }
                ]
            },
            "table readings must be strictly increasing: point 2 (4.0) does not exceed point 1",
        ),
        (
            {
                "calibrations": [
                    {
                        **BASE,
                        "correction": {
                            "kind": "table",
                            "points": [
                                {"reading": 0, "value": 0},
                                {"reading": 5, "value": 5},
                                {"reading": 6, "value": 4},
                            ],
                        },
                    }
                ]
            },
            "table values must be strictly monotonic",
        ),
        ({"calibrations": [{**BASE, "U": -0.1}]}, "U (expanded uncertainty) must be ≥ 0"),
        (
            {"calibrations": [{**BASE, "correction": {"kind": "offset", "b": 0, "u_b": -1}}]},
            "u_b (standard uncertainty) must be ≥ 0",
        ),
        (
            {
                "calibrations": [
                    {
                        **BASE,
                        "correction": {
                            "kind": "table",
                            "points": [
                                {"reading": 0, "value": 0, "U": -1},
                                {"reading": 5, "value": 5},
                            ],
                        },
                    }
                ]
            },
            "U (expanded uncertainty) must be ≥ 0",
        ),
        (
            {"calibrations": [{**BASE, "valid_until": "2025-12-31"}]},
            "valid_until (2025-12-31) is before the calibration date (2026-01-10)",
        ),
        ({"calibrations": [{**BASE, "k": 0}]}, "coverage factor k must be > 0"),
        (
            {"calibrations": [{**BASE, "correction": {"kind": "linear", "correlation": 1.5}}]},
            "correlation must lie in [-1, 1]",
        ),
        (
            {
                "calibrations": [
                    {
                        **BASE,
                        "correction": {
                            "kind": "polynomial",
                            "coefficients": [0, 1],
                            "covariance": [[1, 0]],
                        },
                    }
                ]
            },
            "covariance must be a 2×2 matrix",
        ),
        ({"range": {"min": 10, "max": 0}}, "range.min (10.0) must be below range.max (0.0)"),
        ({"resolution": 0}, "resolution must be > 0"),
        ({"calibrations": [BASE, BASE]}, "certificate 'C1' is listed twice"),
        ({"scael": 1}, "Extra inputs are not permitted"),
    ],
)
def test_bad_calibration_data_is_refused(data: dict[str, Any], message: str) -> None:
    assert message in _error({"id": "x", **data})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (5, 5.0),
        (0.5, 0.5),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("7d", 604800.0),
        ("12", 12.0),
        (" 1.5 m ", 90.0),
    ],
)
def test_duration(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5 minutes", "-1", -1, "1y", True, None, float("nan"), "s"])
def test_bad_duration(text: Any) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)
