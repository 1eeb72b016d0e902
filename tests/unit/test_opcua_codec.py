"""OPC UA pieces that need no server: StatusCode mapping, DataValue → sample, settings,
the trust list; and the simulators' value faults."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pytest
from asyncua import ua
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.base import Quality, Reason
from drivers.opcua import Deadband, OpcUaDriver, OpcUaPoint, Security, relative_path, sample_of
from drivers.opcua_security import (
    TrustList,
    application_uri_of,
    create_application_certificate,
    fingerprint,
    load_certificate,
)
from drivers.opcua_status import quality_of, status_name
from simulators.faults import Drift, SimValue, Step, Stuck, build_value_fault
from simulators.values import Ramp


@pytest.mark.parametrize(
    ("name", "quality", "reason"),
    [
        ("Good", Quality.GOOD, None),
        ("GoodLocalOverride", Quality.GOOD, None),
        ("UncertainLastUsableValue", Quality.UNCERTAIN, Reason.LAST_USABLE_VALUE),
        ("UncertainNoCommunicationLastUsableValue", Quality.UNCERTAIN, Reason.NO_COMMUNICATION),
        ("UncertainSensorNotAccurate", Quality.UNCERTAIN, Reason.SENSOR_FAILURE),
        ("UncertainEngineeringUnitsExceeded", Quality.UNCERTAIN, Reason.UNITS_EXCEEDED),
        ("UncertainSensorCalibration", Quality.UNCERTAIN, Reason.CALIBRATION_EXPIRED),
        ("UncertainDominantValueChanged", Quality.UNCERTAIN, Reason.INVALID_VALUE),  # default
        ("BadNoCommunication", Quality.BAD, Reason.NO_COMMUNICATION),
        ("BadNotConnected", Quality.BAD, Reason.NO_COMMUNICATION),
        ("BadWaitingForInitialData", Quality.BAD, Reason.NO_COMMUNICATION),
        ("BadDeviceFailure", Quality.BAD, Reason.DEVICE_FAILURE),
        ("BadSensorFailure", Quality.BAD, Reason.SENSOR_FAILURE),
        ("BadOutOfService", Quality.BAD, Reason.OUT_OF_SERVICE),
        ("BadConfigurationError", Quality.BAD, Reason.CONFIG_ERROR),
        ("BadNodeIdUnknown", Quality.BAD, Reason.CONFIG_ERROR),
        ("BadUserAccessDenied", Quality.BAD, Reason.CONFIG_ERROR),
        ("BadOutOfRange", Quality.BAD, Reason.UNITS_EXCEEDED),
        ("BadInternalError", Quality.BAD, Reason.DEVICE_FAILURE),  # default
    ],
)
def test_status_codes(name: str, quality: Quality, reason: Reason | None) -> None:
    code = getattr(ua.StatusCodes, name)
    assert quality_of(code) == (quality, reason)
    assert status_name(code) == name
    # the info bits (limits, overflow) do not change the verdict
    assert quality_of(code | 0x0000_0400 | 0x0000_0100) == (quality, reason)


def test_unknown_status_codes_fall_back_to_their_severity() -> None:
    assert quality_of(0x4FFF_0000) == (Quality.UNCERTAIN, Reason.INVALID_VALUE)
    assert quality_of(0xBFFF_0000) == (Quality.BAD, Reason.DEVICE_FAILURE)
    assert status_name(0x4FFF_0000) == "0x4FFF0000"


T_SOURCE = dt.datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
T_SERVER = dt.datetime(2026, 5, 1, 12, 0, 1, tzinfo=dt.UTC)
US_SOURCE = 1777636800123456
US_SERVER = 1777636801000000


def _dv(
    value: object, status: int = 0, source: object = T_SOURCE, server: object = T_SERVER
) -> ua.DataValue:
    dv = ua.DataValue(ua.Variant(value))
    dv.StatusCode = ua.StatusCode(status)  # type: ignore[arg-type]
    dv.SourceTimestamp = source  # type: ignore[assignment]
    dv.ServerTimestamp = server  # type: ignore[assignment]
    return dv


def test_sample_is_stamped_with_the_source_time_and_keeps_the_server_time() -> None:
    p = OpcUaPoint("t", node="ns=2;s=T", scale=2.0, offset=1.0)
    s, why = sample_of(p, _dv(10.5), now_us=5)
    assert why is None and (s.value, s.raw, s.quality) == (22.0, 10.5, Quality.GOOD)
    assert (s.ts_us, s.server_ts_us) == (US_SOURCE, US_SERVER)
    s, _ = sample_of(p, _dv(10.5, source=None), now_us=5)
    assert s.ts_us == US_SERVER
    s, _ = sample_of(p, _dv(10.5, source=None, server=None), now_us=5)
    assert s.ts_us == 5 and s.server_ts_us is None
    # OPC UA's "no time" (1601) is no time
    s, _ = sample_of(p, _dv(1.0, source=dt.datetime(1601, 1, 1, tzinfo=dt.UTC)), now_us=5)
    assert s.ts_us == US_SERVER


@pytest.mark.parametrize(
    ("kind", "value", "why"),
    [
        ("number", "12.5", "a str, not a number"),
        ("number", True, "a bool, not a number"),
        ("number", float("nan"), "not a finite number"),
        ("number", [1.0, 2.0], "an array"),
        ("bool", 1, "a int, not a boolean"),
        ("string", 3, "a int, not a string"),
        ("number", None, "no value"),
    ],
)
def test_a_value_the_point_cannot_hold_is_bad_never_zero(
    kind: str, value: object, why: str
) -> None:
    p = OpcUaPoint("x", node="ns=2;s=X", kind=kind)  # type: ignore[arg-type]
    s, reason = sample_of(p, _dv(value), now_us=5)
    assert s.quality is Quality.BAD and s.reason is Reason.INVALID_VALUE and s.value is None
    assert reason is not None and why in reason


def test_bad_status_drops_the_value_uncertain_keeps_it() -> None:
    p = OpcUaPoint("x", node="ns=2;s=X")
    s, _ = sample_of(p, _dv(3.0, ua.StatusCodes.BadSensorFailure), now_us=5)
    assert (s.value, s.quality, s.reason) == (None, Quality.BAD, Reason.SENSOR_FAILURE)
    s, _ = sample_of(p, _dv(3.0, ua.StatusCodes.UncertainLastUsableValue), now_us=5)
    assert (s.value, s.quality) == (3.0, Quality.UNCERTAIN)


def test_settings_are_checked_early(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one of node and path"):
        OpcUaPoint("x")
    with pytest.raises(ValueError, match="NodeId"):
        OpcUaPoint("x", node="ns=two;s=X")
    with pytest.raises(ValueError, match="empty"):
        OpcUaPoint("x", path="Objects/")
    with pytest.raises(ValueError, match="percent"):
        Deadband("percent", 150)
    with pytest.raises(ValueError, match="matching policy"):
        Security("Sign", "None")
    with pytest.raises(ValueError, match="certificate and key"):
        Security("SignAndEncrypt", "Basic256Sha256")
    with pytest.raises(ValueError, match=r"opc\.tcp"):
        OpcUaDriver("d", "http://plc", [], timeout=1)
    assert relative_path("Objects/2:Line1/2:Temp").to_string() == "/2:Line1/2:Temp"


def test_application_certificate_and_trust_list(tmp_path: Path) -> None:
    cert, key = tmp_path / "a" / "cert.pem", tmp_path / "a" / "key.pem"
    create_application_certificate(cert, key, "urn:metrogate:test", server=True)
    assert key.stat().st_mode & 0o777 == 0o600
    loaded = load_certificate(cert)
    assert application_uri_of(loaded) == "urn:metrogate:test"
    from cryptography.hazmat.primitives import serialization

    der = loaded.public_bytes(serialization.Encoding.DER)
    assert TrustList([cert]).trusts(der)
    assert TrustList([cert]).fingerprints == {fingerprint(der)}
    assert not TrustList([]).trusts(der)
    with pytest.raises(ValueError, match=r"key\.pem"):
        TrustList([tmp_path / "a"])  # a folder holding a key is a mistake, named


def test_value_faults() -> None:
    v = SimValue(Ramp(0.0, 1.0))
    assert v.value(10) == 10.0
    v.set_fault(Stuck(), 10)
    assert v.value(20) == 10.0
    v.set_fault(Drift(0.5), 20)
    assert v.value(30) == pytest.approx(35.0)
    v.set_fault(Step(-5.0), 30)
    assert v.value(40) == pytest.approx(35.0)
    v.set_fault(None, 40)
    assert v.value(50) == 50.0
    flag = SimValue(True)
    flag.set_fault(Drift(1.0), 0)
    assert flag.value(5) is True  # only numbers drift
    assert build_value_fault({"kind": "drift", "rate": 0.1}) == Drift(0.1)
    assert build_value_fault(None) is None
    for bad, msg in [
        ({"kind": "melt"}, "kind"),
        ({"kind": "step"}, "missing 'offset'"),
        ({"kind": "stuck", "rate": 1}, "unknown key 'rate'"),
        ({"kind": "drift", "rate": "fast"}, "finite number"),
    ]:
        with pytest.raises(ValueError, match=msg):
            build_value_fault(bad)


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.sampled_from([1e300, -1.7e308, 2**64 - 1, -(2**63), 5e-324]),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.lists(st.floats(), max_size=3),
    st.datetimes(),
)
_TIMES = st.one_of(
    st.none(),
    st.datetimes(min_value=dt.datetime(1601, 1, 1), max_value=dt.datetime(9999, 12, 31)),
    st.datetimes(timezones=st.just(dt.UTC)),
)


def _variant(value: object) -> ua.Variant:
    try:
        return ua.Variant(value)
    except Exception:  # a value asyncua cannot carry never arrives from a server
        return ua.Variant(None)


@settings(max_examples=500, deadline=None)
@given(
    kind=st.sampled_from(["number", "bool", "string"]),
    value=_VALUES,
    status=st.integers(0, 2**32 - 1),
    source=_TIMES,
    server=_TIMES,
    scale=st.one_of(
        st.just(1.0),
        st.sampled_from([1e300, -1e300, 1e-300]),
        st.floats(allow_nan=False, allow_infinity=False),
    ),
    offset=st.one_of(
        st.just(0.0),
        st.sampled_from([1.7e308, -1.7e308]),
        st.floats(allow_nan=False, allow_infinity=False),
    ),
)
def test_any_data_value_from_a_server_is_a_sample_and_a_usable_one_is_finite(
    kind: str,
    value: object,
    status: int,
    source: dt.datetime | None,
    server: dt.datetime | None,
    scale: float,
    offset: float,
) -> None:
    """Whatever a server (or a forged reply) puts in a DataValue, it becomes a sample —
    never an exception in the subscription consumer — and a number that is not BAD is a
    finite number after scale and offset (never ±inf or NaN into the metrology)."""
    p = OpcUaPoint("x", node="ns=2;s=X", kind=kind, scale=scale, offset=offset)  # type: ignore[arg-type]
    dv = ua.DataValue(_variant(value))
    dv.StatusCode = ua.StatusCode(status)
    dv.SourceTimestamp = source  # type: ignore[assignment]
    dv.ServerTimestamp = server  # type: ignore[assignment]
    s, why = sample_of(p, dv, now_us=5)
    assert s.point == "x" and isinstance(s.ts_us, int)
    if s.quality is Quality.BAD:
        assert s.value is None
    elif kind == "number":
        assert isinstance(s.value, int | float) and math.isfinite(s.value), (s, why)
