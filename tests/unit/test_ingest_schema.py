"""The ingest's hand-written content check against the batch JSON Schema.

Real gateway payloads (the gateway's sealer, reading model, alarms and event log)
must pass both; and every body the JSON Schema rejects must be rejected by the
fast check too (table of bad bodies, plus every key of every record replaced by
values of the wrong type or removed).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no types-jsonschema in the dev deps
import pytest

from drivers.base import Quality, Reason
from gateway.config.models.metrology import AlarmSeverity
from gateway.metrology.alarms import Alarm
from gateway.wire.signing import Signer
from gateway.wire.verify import BatchError, _check_schema, verify_batch
from supervision.model import SchemaError, parse_document, parse_verified
from supervision.sinks.line_protocol import batch_lines
from tests.ingest_support import T0_US, RealGateway, make_reading, new_signer

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "gateway/wire/schema/batch.schema.json").read_text()
)
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
JUNK: tuple[Any, ...] = (None, "x", "", -1, 0, 1.5, True, [], {}, ["x"], {"a": 1}, "0" * 65)


def schema_ok(doc: Any) -> bool:
    return bool(VALIDATOR.is_valid(doc))


def _lines(body: dict[str, Any], rows: bool) -> list[str] | None:
    try:
        batch = parse_document(body, body["site"], body["gateway"], body["type"], rows=rows)
        return batch_lines(batch)
    except SchemaError:
        return None


def fast_ok(doc: Any) -> bool:
    """The ingest's checks of a body, with the topic taken from the body itself.

    Both ways the ingest may check readings must agree: in full while parsing
    (``rows=True``), or while encoding them as line protocol (``rows=False``, where a
    reading like one already checked skips the checks of what it repeats).
    """
    try:
        body = _check_schema(json.dumps(doc).encode())
    except BatchError:
        return False
    two_step = _lines(body, rows=True)
    one_pass = _lines(body, rows=False)
    assert one_pass == two_step
    return two_step is not None


@pytest.fixture
def signer() -> Signer:
    return new_signer()


@pytest.fixture
def real(tmp_path: Path, signer: Signer) -> Iterator[RealGateway]:
    gw = RealGateway(signer, "gw-1", "plant-a", tmp_path)
    yield gw
    gw.close()


def real_payloads(real: RealGateway) -> list[bytes]:
    t = T0_US
    readings = [
        make_reading(t, "tt-1", "temp", 21.5, uncertainty=0.05, coverage=2.0,
                     instrument="TT-101", certificate="CAL-1", verdict="pass"),
        make_reading(t + 1, "tt-1", "temp2", 99.0,
                     flags=["out_of_tolerance", "calibration_expired"], verdict="fail",
                     quality=Quality.UNCERTAIN, reason=Reason.CALIBRATION_EXPIRED),
        make_reading(t + 2, "io", "running", True, unit=None),
        make_reading(t + 3, "scale", "mass", None, raw=None, quality=Quality.BAD,
                     reason=Reason.NO_COMMUNICATION),
        make_reading(t + 4, "scale", "id", "SN-1", unit=None),
        # what CJ/T 188 meters and OPC UA servers add: status flags, the server's time
        make_reading(t + 5, "water-1", "volume", 12.5, unit="m3",
                     flags=["valve_closed", "battery_low", "status:magnet_tamper"]),
        make_reading(t + 6, "plc-1", "temp", 80.25, server_ts_us=t + 7),
    ]  # fmt: skip
    alarm = Alarm("tt-1/temp/high", device="tt-1", point="temp", rule="high",
                  severity=AlarmSeverity.HIGH)  # fmt: skip
    records = alarm.update(True, t, 99.0, 80.0) + alarm.acknowledge("op", t + 1)
    records += alarm.update(False, t + 2, 20.0, 80.0)
    calibration = {
        "ts": t, "event": "calibration_expired", "device": "tt-1", "instrument": "TT-101",
        "certificate": "CAL-1", "valid_until": "2025-12-31", "days_left": -3,
        "message": "calibration of TT-101 expired 3 day(s) ago",
    }  # fmt: skip
    return [
        real.data(readings, t)[1],
        real.alarm(records, t)[1],
        real.event([("calibration_expired", calibration, "calibration")], t)[1],
    ]


def test_real_gateway_payloads_pass_both_checks(real: RealGateway, signer: Signer) -> None:
    keys = {signer.kid: signer.private_key.public_key()}
    for payload in real_payloads(real):
        vb = verify_batch(payload, keys)
        assert schema_ok(vb.body), list(VALIDATOR.iter_errors(vb.body))
        batch = parse_verified(vb, "plant-a", "gw-1", vb.type)
        assert batch.size == len(vb.body[{"data": "readings"}.get(vb.type, vb.type + "s")])


def test_alarm_and_calibration_event_items_carry_their_tags(real: RealGateway) -> None:
    _, alarm, event = (json.loads(p.split(b"\n")[0]) for p in real_payloads(real))
    items = parse_document(alarm, "plant-a", "gw-1", "alarm").items
    assert [dict(i.fields)["event"] for i in items] == ["raised", "acknowledged", "cleared"]
    assert dict(items[0].tags) == {"alarm": "tt-1/temp/high", "device": "tt-1",
                                   "point": "temp", "severity": "high"}  # fmt: skip
    ev = parse_document(event, "plant-a", "gw-1", "event").items[0]
    # promoted from the entry's data, so the report finds calibration events by instrument
    assert dict(ev.tags) == {"device": "tt-1", "instrument": "TT-101",
                             "type": "calibration_expired"}  # fmt: skip


def _valid(real: RealGateway) -> list[dict[str, Any]]:
    return [json.loads(p.split(b"\n")[0]) for p in real_payloads(real)]


def mutations(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every top-level key and every key of the first record: removed, or set to junk."""
    content = next(k for k in ("readings", "alarms", "events") if k in doc)
    for key in list(doc):
        d = copy.deepcopy(doc)
        del d[key]
        yield f"without {key}", d
        for junk in JUNK:
            d = copy.deepcopy(doc)
            d[key] = junk
            yield f"{key}={junk!r}", d
    for key in list(doc[content][0]):
        d = copy.deepcopy(doc)
        del d[content][0][key]
        yield f"{content}[0] without {key}", d
        for junk in JUNK:
            d = copy.deepcopy(doc)
            d[content][0][key] = junk
            yield f"{content}[0].{key}={junk!r}", d
    d = copy.deepcopy(doc)
    d[content][0]["unexpected"] = 1
    yield f"{content}[0] with an unknown key", d


def test_every_mutation_the_json_schema_rejects_the_fast_check_rejects(real: RealGateway) -> None:
    rejected = 0
    missed: list[str] = []
    for doc in _valid(real):
        assert schema_ok(doc) and fast_ok(doc)
        for what, bad in mutations(doc):
            if not schema_ok(bad):
                rejected += 1
                if fast_ok(bad):
                    missed.append(f"{doc['type']}: {what}")
    assert missed == []
    assert rejected > 300  # the generator really produces violations


def _table(real: RealGateway) -> list[tuple[str, dict[str, Any]]]:
    data, alarm, event = _valid(real)
    r0 = data["readings"][0]

    def with_reading(**kw: Any) -> dict[str, Any]:
        return data | {"readings": [r0 | kw]}

    return [
        ("version 2", data | {"v": 2}),
        ("unknown type", data | {"type": "metrics"}),
        ("gateway with a slash", data | {"gateway": "a/b"}),
        ("gateway longer than 64", data | {"gateway": "g" * 65}),
        ("seq 0", data | {"seq": 0}),
        ("seq as a string", data | {"seq": "1"}),
        ("seq as a boolean", data | {"seq": True}),
        ("negative sealed", data | {"sealed": -1}),
        ("empty readings", data | {"readings": []}),
        ("alarms inside a data batch", data | {"alarms": alarm["alarms"]}),
        ("unknown top-level key", data | {"extra": 1}),
        ("reading is a list", data | {"readings": [[1, 2]]}),
        ("quality excellent", with_reading(quality="excellent")),
        ("unknown reason", with_reading(reason="because")),
        ("unknown verdict", with_reading(verdict="maybe")),
        ("U without k", data | {"readings": [{k: v for k, v in r0.items() if k != "k"}]}),
        ("negative U", with_reading(U=-0.1)),
        ("k zero", with_reading(k=0)),
        ("raw null", with_reading(raw=None)),
        ("value a list", with_reading(value=[1])),
        ("flag with a space", with_reading(flags=["out of tolerance"])),
        ("flag repeated", with_reading(flags=["a", "a"])),
        ("flags a string", with_reading(flags="a")),
        ("ts negative", with_reading(ts=-5)),
        ("unit a number", with_reading(unit=5)),
        ("alarm state unknown", alarm | {"alarms": [alarm["alarms"][0] | {"state": "on"}]}),
        ("alarm without severity", alarm | {"alarms": [
            {k: v for k, v in alarm["alarms"][0].items() if k != "severity"}]}),
        ("alarm previous unknown", alarm | {"alarms": [alarm["alarms"][0] | {"previous": "x"}]}),
        ("alarm active a string", alarm | {"alarms": [alarm["alarms"][0] | {"active": "yes"}]}),
        ("event prev not hex", event | {"events": [event["events"][0] | {"prev": "zz"}]}),
        ("event data a list", event | {"events": [event["events"][0] | {"data": []}]}),
        ("event n zero", event | {"events": [event["events"][0] | {"n": 0}]}),
    ]  # fmt: skip


def test_table_of_bad_bodies_rejected_by_both(real: RealGateway) -> None:
    for what, bad in _table(real):
        assert not schema_ok(bad), f"the JSON Schema accepts {what}"
        assert not fast_ok(bad), f"the fast check accepts {what}"
