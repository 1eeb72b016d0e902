"""The ISA-18.2 alarm state machine, delays, shelving and persistence."""

from __future__ import annotations

import json

import pytest

from gateway.config.models.metrology import AlarmSeverity
from gateway.metrology.alarms import Alarm, AlarmState, ShelveTooLong

S = 1_000_000
N, AU, AA, RU = (
    AlarmState.NORMAL,
    AlarmState.ACTIVE_UNACKNOWLEDGED,
    AlarmState.ACTIVE_ACKNOWLEDGED,
    AlarmState.RETURNED_UNACKNOWLEDGED,
)


def alarm(on: float = 0.0, off: float = 0.0) -> Alarm:
    return Alarm(
        "d1/p1/high",
        device="d1",
        point="p1",
        rule="high",
        severity=AlarmSeverity.HIGH,
        on_delay_s=on,
        off_delay_s=off,
        message="too hot",
    )


def test_raise_ack_clear() -> None:
    a = alarm()
    (rec,) = a.update(True, 1 * S, 81.0, 80.0)
    assert rec == {
        "ts": 1 * S,
        "alarm": "d1/p1/high",
        "device": "d1",
        "point": "p1",
        "rule": "high",
        "state": "active_unacknowledged",
        "previous": "normal",
        "event": "raised",
        "active": True,
        "acknowledged": False,
        "shelved": False,
        "severity": "high",
        "value": 81.0,
        "limit": 80.0,
        "message": "too hot",
    }
    assert a.update(True, 2 * S, 82.0, 80.0) == []  # no flood while it stays active
    (ack,) = a.acknowledge("alice", 3 * S)
    assert (ack["state"], ack["event"], ack["user"]) == (
        "active_acknowledged",
        "acknowledged",
        "alice",
    )
    (clr,) = a.update(False, 4 * S, 79.0, 80.0)
    assert (clr["state"], clr["event"], clr["previous"]) == (
        "normal",
        "cleared",
        "active_acknowledged",
    )
    json.dumps([rec, ack, clr])


def test_return_unacknowledged_then_ack() -> None:
    a = alarm()
    a.update(True, 1 * S)
    (ret,) = a.update(False, 2 * S)
    assert (ret["state"], ret["event"]) == ("returned_unacknowledged", "returned")
    assert a.state is RU
    (ack,) = a.acknowledge("bob", 3 * S)
    assert (ack["state"], ack["previous"]) == ("normal", "returned_unacknowledged")


def test_returned_unacknowledged_goes_active_again() -> None:
    a = alarm()
    a.update(True, 1 * S)
    a.update(False, 2 * S)
    (again,) = a.update(True, 3 * S)
    assert (again["state"], again["previous"]) == (
        "active_unacknowledged",
        "returned_unacknowledged",
    )


def test_acknowledge_when_nothing_to_acknowledge_is_a_no_op() -> None:
    a = alarm()
    assert a.acknowledge("x", 1) == []
    a.update(True, 1)
    a.acknowledge("x", 2)
    assert a.acknowledge("x", 3) == [] and a.state is AA


def test_on_delay() -> None:
    a = alarm(on=5)
    assert a.update(True, 0) == []
    assert a.update(True, 4 * S) == []
    assert a.update(False, 4 * S + 1) == []  # a blip resets the delay
    assert a.update(True, 5 * S) == []
    assert a.update(True, 9 * S) == []
    (rec,) = a.update(True, 10 * S)
    assert rec["state"] == "active_unacknowledged" and a.state is AU


def test_off_delay_stops_flapping() -> None:
    a = alarm(off=10)
    records = a.update(True, 0)
    for i in range(1, 40):  # condition flickers every second
        records += a.update(i % 2 == 0, i * S)
    assert [r["event"] for r in records] == ["raised"]
    assert [r["event"] for r in a.update(False, 40 * S) + a.update(False, 51 * S)] == ["returned"]


def test_shelve_and_expiry() -> None:
    a = alarm()
    a.update(True, 0)
    (sh,) = a.shelve(100 * S, "carol", 1 * S)
    assert (sh["event"], sh["shelved"], sh["shelved_until"]) == ("shelved", True, 100 * S)
    # while shelved the alarm still follows its condition; records say shelved
    (ret,) = a.update(False, 2 * S)
    assert ret["shelved"] is True and ret["state"] == "returned_unacknowledged"
    (act,) = a.update(True, 3 * S)
    assert act["shelved"] is True
    assert a.tick(99 * S) == []
    (un,) = a.tick(100 * S)
    assert (un["event"], un["shelved"], un["state"]) == (
        "unshelved",
        False,
        "active_unacknowledged",
    )
    assert "user" not in un
    assert a.tick(200 * S) == []


def test_shelve_must_be_positive() -> None:
    with pytest.raises(ShelveTooLong):
        alarm().shelve(5, "x", 5)


def test_state_round_trip_keeps_active_alarm_active() -> None:
    a = alarm(off=10)
    a.update(True, 0, 90.0, 80.0)
    a.acknowledge("x", 1)
    a.update(False, 2 * S)  # off-delay pending
    a.shelve(100 * S, "x", 3 * S)
    saved = json.loads(json.dumps(a.to_state()))
    b = alarm(off=10)
    b.load_state(saved)
    assert (b.state, b.active, b.last_value, b.shelved_until_us) == (AA, True, 90.0, 100 * S)
    assert b.update(False, 11 * S) == []  # the pending off-delay survived
    (rec,) = b.update(False, 12 * S)
    assert rec["state"] == "normal"


def test_malformed_state_is_refused() -> None:
    with pytest.raises(ValueError):
        alarm().load_state({"state": "exploded", "active": True})
