"""Event log: chain, signatures, counter, parameter changes, limits, corruption at open."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit.eventlog import (
    GENESIS,
    ChangeKind,
    EventLog,
    EventLogCorrupt,
    EventLogFull,
    EventLogLocked,
    ParamChange,
    counter_path_for,
    diff_parameters,
)
from gateway.audit.head import LogHead, read_head, write_head
from gateway.audit.verify import verify_event_log
from gateway.wire.signing import Signer


@pytest.fixture
def signer() -> Signer:
    return Signer.from_private_key(Ed25519PrivateKey.generate())


def _keys(signer: Signer) -> dict[str, Any]:
    return {signer.kid: signer.private_key.public_key()}


def _open(path: Path, signer: Signer, **kw: Any) -> EventLog:
    return EventLog(path, signer, software_id="abcdef0123456789", **kw)


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _fill(path: Path, signer: Signer, count: int) -> None:
    with _open(path, signer) as log:
        for i in range(count):
            log.append("outbox_drop", {"i": i})


CONFIG_1 = {
    "devices": {
        "scale1": {"address": "10.0.0.5:502", "points": {"w": {"scale": 0.1, "unit": "kg"}}},
        "boiler": {"calibration": {"c": [-0.12, 1.0008]}, "limits": {"hi": 120}},
    }
}
CONFIG_2 = {
    "devices": {
        "scale1": {"address": "10.0.0.6:502", "points": {"w": {"scale": 0.1, "unit": "g"}}},
        "boiler": {"calibration": {"c": [-0.12, 1.0010]}},
    }
}


def test_diff_parameters_flat_keys_old_and_new() -> None:
    changes = diff_parameters(CONFIG_1, CONFIG_2)
    assert changes == [
        ParamChange("devices.boiler.calibration.c[1]", 1.0008, 1.0010, ChangeKind.CHANGED),
        ParamChange("devices.boiler.limits.hi", 120, None, ChangeKind.REMOVED),
        ParamChange("devices.scale1.address", "10.0.0.5:502", "10.0.0.6:502", ChangeKind.CHANGED),
        ParamChange("devices.scale1.points.w.unit", "kg", "g", ChangeKind.CHANGED),
    ]
    assert diff_parameters(CONFIG_1, CONFIG_1) == []
    assert diff_parameters({"a": (1, 2)}, {"a": [1, 2]}) == []
    assert diff_parameters({}, {"a": {"b": 1}}) == [ParamChange("a.b", None, 1, ChangeKind.ADDED)]
    assert diff_parameters({"a": []}, {"a": [5]}) == [
        ParamChange("a", [], None, ChangeKind.REMOVED),
        ParamChange("a[0]", None, 5, ChangeKind.ADDED),
    ]


def test_entries_are_chained_signed_counted_and_survive_reopen(
    tmp_path: Path, signer: Signer
) -> None:
    path = tmp_path / "state" / "events.log"
    with _open(path, signer, clock_us=lambda: 42) as log:
        e1 = log.append("startup", {"software": {"sha256": "x"}})
        e2 = log.append("clock_sync", {"old": None, "new": "unsynchronised"}, source="clock")
        assert log.counter == 2
    assert (e1["n"], e1["prev"], e1["ts"], e1["software"]) == (1, GENESIS, 42, "abcdef0123456789")
    lines = _lines(path)
    assert e2["prev"] == hashlib.sha256(lines[0].rstrip(b"\n")).hexdigest()
    assert e2["source"] == "clock" and e2["sig"]["kid"] == signer.kid
    # the returned entry re-encodes to exactly the stored line
    body = {k: v for k, v in e2.items() if k != "sig"}
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert lines[1].split(b"\t")[0] == canon.encode()
    head = read_head(counter_path_for(path), _keys(signer))
    assert head is not None and head.n == 2
    assert head.last == hashlib.sha256(lines[1].rstrip(b"\n")).hexdigest()

    with _open(path, signer) as log:
        assert log.counter == 2
        e3 = log.append("shutdown", {})
    assert e3["n"] == 3
    assert e3["prev"] == hashlib.sha256(lines[1].rstrip(b"\n")).hexdigest()
    rep = verify_event_log(path, _keys(signer))
    assert rep.ok and rep.entries == 3 and rep.counter_checked


def test_parameter_change_between_two_runs_logs_old_and_new(tmp_path: Path, signer: Signer) -> None:
    path = tmp_path / "events.log"
    with _open(path, signer) as log:
        (base,) = log.reconcile_parameters(CONFIG_1, source="config")
        assert base["type"] == "parameters_baseline"
        assert base["data"]["parameters"]["devices.scale1.points.w.unit"] == "kg"
        assert log.reconcile_parameters(CONFIG_1, source="config") == []
    with _open(path, signer) as log:  # the next run, with an edited config
        entries = log.reconcile_parameters(CONFIG_2, source="config:/etc/metrogate.yaml")
        assert log.parameters is not None
        assert log.parameters["devices.scale1.address"] == "10.0.0.6:502"
    got = {e["data"]["param"]: e["data"] for e in entries}
    assert [e["type"] for e in entries] == ["parameter_changed"] * 4
    assert got["devices.boiler.calibration.c[1]"] == {
        "param": "devices.boiler.calibration.c[1]",
        "change": "changed",
        "old": 1.0008,
        "new": 1.001,
    }
    assert got["devices.boiler.limits.hi"]["change"] == "removed"
    assert got["devices.scale1.points.w.unit"]["old"] == "kg"
    assert got["devices.scale1.points.w.unit"]["new"] == "g"
    assert entries[0]["source"] == "config:/etc/metrogate.yaml"
    # the old values are in the stored file too, and a third run sees no change
    stored = [json.loads(ln.split(b"\t")[0]) for ln in _lines(path)]
    assert any(s["data"].get("old") == "10.0.0.5:502" for s in stored)
    with _open(path, signer) as log:
        assert log.reconcile_parameters(CONFIG_2, source="config") == []
    assert verify_event_log(path, _keys(signer)).ok


def test_storage_limit_refuses_parameter_changes_and_never_overwrites(
    tmp_path: Path, signer: Signer
) -> None:
    path = tmp_path / "events.log"
    # parameter changes up to 10 - 3 = 7 entries, other events to 9, start-up/shutdown to 10
    with _open(path, signer, max_entries=10, reserve=3, lifecycle_room=1) as log:
        log.reconcile_parameters({"a": 1, "b": 1}, source="config")
        for i in range(5):
            log.append("outbox_drop", {"i": i})
        assert log.counter == 6 and log.parameter_changes_allowed
        two = diff_parameters({"a": 1, "b": 1}, {"a": 2, "b": 2})
        before = path.read_bytes()
        with pytest.raises(EventLogFull):
            log.record_parameter_changes(two, source="config")  # 6 + 2 > 7: none written
        assert path.read_bytes() == before and log.counter == 6
        log.record_parameter_changes(two[:1], source="config")
        assert not log.parameter_changes_allowed
        with pytest.raises(EventLogFull):
            log.reconcile_parameters({"a": 3, "b": 1}, source="config")
        assert log.reconcile_parameters({"a": 2, "b": 1}, source="config") == []  # unchanged
        log.append("tamper_counter", {})
        log.append("clock_jump", {})  # the reserve is used up to max_entries - 1
        assert log.full
        with pytest.raises(EventLogFull):
            log.append("clock_jump", {})
        log.append("shutdown", {})  # the lifecycle room
        with pytest.raises(EventLogFull):
            log.append("startup", {})
        assert log.counter == 10
    first = json.loads(_lines(path)[0].split(b"\t")[0])
    assert first["n"] == 1 and first["type"] == "parameters_baseline"  # nothing overwritten
    with _open(path, signer, max_entries=10, reserve=3) as log, pytest.raises(EventLogFull):
        log.append("startup", {})
    assert verify_event_log(path, _keys(signer)).ok


def _corrupt_open(path: Path, signer: Signer) -> EventLogCorrupt:
    before = path.read_bytes()
    with pytest.raises(EventLogCorrupt) as err:
        _open(path, signer)
    assert path.read_bytes() == before  # reported, never rewritten
    return err.value


def test_tampered_byte_is_detected_at_open(tmp_path: Path, signer: Signer) -> None:
    path = tmp_path / "events.log"
    with _open(path, signer) as log:
        log.reconcile_parameters({"scale": 0.1}, source="config")
        log.append("startup", {})
    path.write_bytes(path.read_bytes().replace(b'"scale":0.1', b'"scale":0.2'))
    err = _corrupt_open(path, signer)
    assert [(p.kind, p.line, p.n) for p in err.problems] == [("bad_signature", 1, 1)]
    assert "line 1 (entry 1): bad_signature" in str(err)


def test_deleted_reordered_and_truncated_entries_are_detected(
    tmp_path: Path, signer: Signer
) -> None:
    path = tmp_path / "events.log"
    _fill(path, signer, 5)
    lines = _lines(path)

    path.write_bytes(b"".join(lines[:2] + lines[3:]))
    assert [p.kind for p in _corrupt_open(path, signer).problems] == ["deleted"]

    path.write_bytes(b"".join([lines[0], lines[2], lines[1], *lines[3:]]))
    assert {p.kind for p in _corrupt_open(path, signer).problems} == {"reordered"}

    path.write_bytes(b"".join(lines[:4]))
    (p,) = _corrupt_open(path, signer).problems
    assert p.kind == "truncated" and "5 entries were written" in p.message

    path.write_bytes(b"")
    assert [p.kind for p in _corrupt_open(path, signer).problems] == ["truncated"]

    path.unlink()  # the whole log gone, its counter still there
    with pytest.raises(EventLogCorrupt) as err:
        _open(path, signer)
    assert [p.kind for p in err.value.problems] == ["truncated"]
    assert not path.exists()  # not recreated


def test_counter_lagging_is_a_crash_not_corruption(tmp_path: Path, signer: Signer) -> None:
    path = tmp_path / "events.log"
    _fill(path, signer, 3)
    cpath = counter_path_for(path)
    lines = _lines(path)
    digest = hashlib.sha256(lines[0].rstrip(b"\n")).hexdigest()
    write_head(cpath, LogHead(1, digest), signer, ts_us=1)
    # as if power failed between the entries' fsync and the counter's
    with _open(path, signer) as log:
        assert log.counter == 3
    head = read_head(cpath, _keys(signer))
    assert head is not None and head.n == 3


def test_torn_last_line_is_kept_aside_and_logged(tmp_path: Path, signer: Signer) -> None:
    path = tmp_path / "events.log"
    _fill(path, signer, 2)
    good = path.read_bytes()
    torn = b'{"data":{"i":2},"n":3,"prev":"ab'
    path.write_bytes(good + torn)
    with _open(path, signer) as log:
        assert log.counter == 3
    side = tmp_path / "events.log.torn-3"
    assert side.read_bytes() == torn
    last = json.loads(_lines(path)[-1].split(b"\t")[0])
    assert last["type"] == "log_tail_recovered"
    assert last["data"] == {
        "bytes": len(torn),
        "sha256": hashlib.sha256(torn).hexdigest(),
        "saved_to": side.name,
    }
    assert path.read_bytes().startswith(good)
    assert verify_event_log(path, _keys(signer)).ok


def test_second_opener_is_refused(tmp_path: Path, signer: Signer) -> None:
    path = tmp_path / "events.log"
    with _open(path, signer), pytest.raises(EventLogLocked):
        _open(path, signer)
    with _open(path, signer) as log:
        assert log.counter == 0


def test_key_change_needs_the_old_public_key(tmp_path: Path, signer: Signer) -> None:
    path = tmp_path / "events.log"
    _fill(path, signer, 2)
    new = Signer.from_private_key(Ed25519PrivateKey.generate())
    err = _corrupt_open(path, new)
    assert {p.kind for p in err.problems} == {"unknown_key"}
    with EventLog(path, new, software_id="s", trusted_keys=_keys(signer)) as log:
        e = log.append("startup", {})
    assert e["sig"]["kid"] == new.kid
    assert verify_event_log(path, _keys(signer) | _keys(new)).ok


def test_instrument_identity_seen_per_run_and_changes(tmp_path: Path, signer: Signer) -> None:
    path = tmp_path / "events.log"
    with _open(path, signer) as log:
        first = log.record_instrument_identity("bal1", {"serial": "B123"}, source="mtsics")
        assert first is not None and first["type"] == "instrument_identity"
        assert log.record_instrument_identity("bal1", {"serial": "B123"}, source="mtsics") is None
        swapped = log.record_instrument_identity("bal1", {"serial": "B999"}, source="mtsics")
        assert swapped is not None and swapped["type"] == "instrument_identity_changed"
        assert swapped["data"]["previous"] == {"serial": "B123"}
    with _open(path, signer) as log:  # a new run logs the identity seen at connect again
        again = log.record_instrument_identity("bal1", {"serial": "B999"}, source="mtsics")
        assert again is not None and again["type"] == "instrument_identity"
        changed = log.record_instrument_identity("bal1", {"serial": "B123"}, source="mtsics")
        assert changed is not None and changed["data"]["previous"] == {"serial": "B999"}


def test_tamper_counters_and_software_change(tmp_path: Path, signer: Signer) -> None:
    path = tmp_path / "events.log"
    sw1 = {"name": "metrogate", "version": "0.1.0", "sha256": "a" * 64}
    sw2 = {"name": "metrogate", "version": "0.1.1", "sha256": "b" * 64}
    with _open(path, signer) as log:
        types = [e["type"] for e in log.record_startup(sw1, config_path="c", config_sha256="1")]
        assert types == ["startup", "config_loaded"]
        t = log.record_tamper_counters("meter1", {"cover_open": 2}, source="dlt645")
        assert t is not None and t["data"]["previous"] is None
        assert log.record_tamper_counters("meter1", {"cover_open": 2}, source="dlt645") is None
    with _open(path, signer) as log:
        assert log.record_tamper_counters("meter1", {"cover_open": 2}, source="dlt645") is None
        t2 = log.record_tamper_counters("meter1", {"cover_open": 3}, source="dlt645")
        assert t2 is not None and t2["data"]["previous"] == {"cover_open": 2}
        entries = log.record_startup(sw2, config_path="c", config_sha256="2")
        assert [e["type"] for e in entries] == ["startup", "software_changed", "config_loaded"]
        assert entries[1]["data"] == {"old": "a" * 64, "new": "b" * 64}


def test_parameters_given_as_canonical_bytes_log_the_same(tmp_path: Path, signer: Signer) -> None:
    """The daemon hands over the baseline as bytes computed while loading its config."""
    from gateway.audit.eventlog import canonical_parameters

    def strip(entry: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in entry.items() if k not in ("ts", "sig", "prev")}

    with _open(tmp_path / "a.log", signer) as a, _open(tmp_path / "b.log", signer) as b:
        from_mapping = a.reconcile_parameters(CONFIG_1, source="config")
        from_bytes = b.reconcile_parameters(canonical_parameters(CONFIG_1), source="config")
        assert [strip(e) for e in from_bytes] == [strip(e) for e in from_mapping]
        assert b.reconcile_parameters(canonical_parameters(CONFIG_1), source="config") == []
        changes = b.reconcile_parameters(canonical_parameters(CONFIG_2), source="config")
        assert [strip(e) for e in changes] == [
            strip(e) for e in a.reconcile_parameters(CONFIG_2, source="config")
        ]
    assert verify_event_log(tmp_path / "b.log", _keys(signer)).ok
    with _open(tmp_path / "b.log", signer) as b:  # reopened: state rebuilt from the file
        assert b.reconcile_parameters(CONFIG_2, source="config") == []


# ------------------------------------------------------------------ damage at random

_SIGNER = Signer.from_private_key(Ed25519PrivateKey.generate())


@st.composite
def _damage(draw: st.DrawFn, good: bytes) -> bytes:
    kind = draw(st.sampled_from(["flip", "insert", "delete", "cut", "swap", "replace"]))
    at = draw(st.integers(0, len(good) - 1))
    if kind == "flip":
        bit = 1 << draw(st.integers(0, 7))
        return good[:at] + bytes([good[at] ^ bit]) + good[at + 1 :]
    if kind == "insert":
        return good[:at] + draw(st.binary(min_size=1, max_size=16)) + good[at:]
    if kind == "delete":
        return good[:at] + good[at + draw(st.integers(1, 64)) :]
    if kind == "cut":
        return good[:at]
    if kind == "swap":  # two bytes of the same line or of different ones
        other = draw(st.integers(0, len(good) - 1))
        lo, hi = sorted((at, other))
        if lo == hi:
            return good[:lo] + b"\x00" + good[lo + 1 :]
        return (
            good[:lo] + good[hi : hi + 1] + good[lo + 1 : hi] + good[lo : lo + 1] + good[hi + 1 :]
        )
    junk = draw(st.sampled_from([b"\t", b"\n", b"{}", b"[", b'"', b"\xff\xfe", b"1e999", b"null"]))
    return good[:at] + junk + good[at + 1 :]


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_a_log_damaged_anywhere_is_opened_or_refused_and_verify_says_which(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """Bytes flipped, inserted, deleted, swapped or cut anywhere in the log: opening it
    either works (a torn tail kept aside) or raises :class:`EventLogCorrupt` — nothing
    else — and ``verify`` reports the damage unless the open repaired it."""
    path = tmp_path_factory.mktemp("log") / "events.log"
    with _open(path, _SIGNER) as log:
        log.reconcile_parameters(CONFIG_1, source="config")
        for i in range(4):
            log.append("outbox_drop", {"i": i, "text": 'ü€ \\ " \t'})
    good = path.read_bytes()
    damaged = data.draw(_damage(good), label="log")
    path.write_bytes(damaged)
    report = verify_event_log(path, _keys(_SIGNER))
    assert report.ok is (damaged == good), damaged  # the signed counter sees a cut too
    try:
        with _open(path, _SIGNER) as log:
            assert log.counter >= 1
    except EventLogCorrupt as exc:
        assert exc.problems and str(exc)
        assert path.read_bytes() == damaged  # reported, never rewritten
    else:  # only a torn tail opens: kept aside and said so in the log itself
        last = json.loads(_lines(path)[-1].split(b"\t")[0])
        assert damaged == good or last["type"] == "log_tail_recovered", damaged
        assert verify_event_log(path, _keys(_SIGNER)).ok
