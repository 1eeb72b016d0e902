"""Line protocol encoding of received batches: escaping, typing, idempotent stamps."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.wire.verify import MAX_TS_US
from supervision.model import SchemaError, body_digest, parse_batch, parse_document, rows_of
from supervision.sinks.line_protocol import (
    LineEncoder,
    batch_lines,
    escape_measurement,
    escape_string,
    escape_tag,
)

# one encoder for the module's tests, so that readings checked in full by one test are
# "already checked" (memoised) in the next, as in a running sink
ENCODER = LineEncoder()


def test_tag_escaping() -> None:
    assert escape_tag("a b,c=d") == "a\\ b\\,c\\=d"
    assert escape_tag("back\\slash") == "back\\\\slash"
    assert escape_tag("°C") == "°C"


def test_measurement_and_string_escaping() -> None:
    assert escape_measurement("m 1,x=y") == "m\\ 1\\,x=y"
    assert escape_string('say "hi" \\ bye') == '"say \\"hi\\" \\\\ bye"'


def body(readings: list[dict[str, object]], seq: int = 7) -> bytes:
    doc = {"v": 1, "type": "data", "gateway": "gw 1", "site": "s,1", "seq": seq,
           "sealed": 1_000_000, "readings": readings}  # fmt: skip
    return json.dumps(doc).encode()


def test_reading_line_types_and_tags() -> None:
    r = {"ts": 1_700_000_000_123_456, "device": "d=1", "point": "p 1", "value": 5,
         "raw": True, "unit": "m/s", "quality": "good", "flags": ["a", "out_of_tolerance"],
         "U": 0.1, "k": 2, "instrument": "I-1", "verdict": "fail"}  # fmt: skip
    lines = batch_lines(parse_batch(body([r]), "s,1", "gw 1", "data"))
    assert lines[0] == (
        "reading,site=s\\,1,gateway=gw\\ 1,device=d\\=1,point=p\\ 1,instrument=I-1,unit=m/s "
        'quality="good",flags="a,out_of_tolerance",U=0.1,k=2.0,verdict="fail",value=5.0,'
        "raw_bool=true,seq=7i 1700000000123456000"
    )
    # the bookkeeping point: sub-µs digits carry seq mod 1000; the digest of the body
    assert lines[1] == (
        "batch,site=s\\,1,gateway=gw\\ 1,kind=data seq=7i,n=1i,sealed=1000000i,"
        f'digest="{body_digest(body([r]))}" 1000000007'
    )


def test_null_and_string_values() -> None:
    rs = [
        {"ts": 1, "device": "d", "point": "p", "value": None, "quality": "bad",
         "reason": "no_communication"},
        {"ts": 2, "device": "d", "point": "q", "value": 'a"b', "quality": "good"},
    ]  # fmt: skip
    lines = batch_lines(parse_batch(body(rs), "s,1", "gw 1", "data"))
    assert lines[0].endswith(' quality="bad",reason="no_communication",seq=7i 1000')
    assert 'value_str="a\\"b"' in lines[1]


def test_same_bytes_give_the_same_points() -> None:
    r = {"ts": 5, "device": "d", "point": "p", "value": 1.5, "quality": "good"}
    b = body([r])
    assert batch_lines(parse_batch(b, "s,1", "gw 1", "data")) == batch_lines(
        parse_batch(b, "s,1", "gw 1", "data")
    )


# -- the ingest's single pass (check and encode each reading at once) ----------------

FULL: dict[str, Any] = {
    "ts": 1_700_000_000_000_001, "device": "d 1,x=y\\", "point": "p=1", "value": 20.5,
    "raw": 2001, "unit": "°C", "quality": "uncertain", "reason": "not_stable",
    "flags": ["out_of_tolerance", "note:a.b-1"], "U": 0.05, "k": 2, "instrument": "TI 1",
    "certificate": 'CAL "7" \\', "verdict": "conditional_pass",
}  # fmt: skip
MINIMAL: dict[str, Any] = {"ts": 3, "device": "d", "point": "p", "value": 1, "quality": "good"}
UNIT_ONE: dict[str, Any] = MINIMAL | {"unit": "m", "U": 0, "k": 1}


def _outcome(readings: list[Any], *, rows: bool) -> list[str] | tuple[str, str]:
    """The lines of a data batch of ``readings`` (parsed with ``rows``), or why refused."""
    doc = {"v": 1, "type": "data", "gateway": "gw 1", "site": "s,1", "seq": 9,
           "sealed": 5, "readings": readings}  # fmt: skip
    try:
        return ENCODER.batch_lines(parse_document(doc, "s,1", "gw 1", "data", rows=rows))
    except SchemaError as exc:
        return exc.reason, exc.detail


def _same_both_ways(readings: list[Any]) -> list[str] | tuple[str, str]:
    two_step = _outcome(readings, rows=True)
    assert _outcome(readings, rows=False) == two_step, readings
    return two_step


def _without(r: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in r.items() if k != key}


VALID: list[dict[str, Any]] = [
    FULL,
    MINIMAL,
    UNIT_ONE,
    FULL | {"value": None, "raw": 'r"s\\'},
    FULL | {"value": True, "raw": False},
    FULL | {"value": 'say "hi" \\', "flags": []},
    FULL | {"value": float("inf"), "raw": float("-inf")},  # what 1e999 parses to
    FULL | {"value": -0.5, "k": 2.0, "U": 0.05},
    _without(FULL, "flags"),
    _without(_without(FULL, "raw"), "certificate"),
    MINIMAL | {"value": None, "quality": "bad", "reason": "no_communication"},
]
# Each repeats the fixed values of a valid reading above (so the single pass has
# already checked those), with one thing wrong that the full check refuses.
INVALID: list[dict[str, Any] | list[Any]] = [
    UNIT_ONE | {"k": True},  # True == 1 as a key, not as a JSON number
    UNIT_ONE | {"U": False},
    MINIMAL | {"unit": None},  # a null, not an absent key
    MINIMAL | {"raw": None},
    MINIMAL | {"extra": 1},
    _without(MINIMAL, "value") | {"extra": 1},  # as many keys as a valid one
    _without(MINIMAL, "ts") | {"extra": 1},
    MINIMAL | {"ts": 0},
    MINIMAL | {"ts": True},
    MINIMAL | {"ts": 1.5},
    MINIMAL | {"value": [1]},
    MINIMAL | {"value": {"a": 1}},
    FULL | {"raw": [1]},
    FULL | {"flags": ["out_of_tolerance", "out_of_tolerance"]},
    FULL | {"flags": "out_of_tolerance"},
    FULL | {"flags": [["x"]]},
    MINIMAL | {"device": ["d"]},
    MINIMAL | {"quality": "excellent"},
    [MINIMAL],
    MINIMAL | {"ts": MAX_TS_US + 1},  # its line's nanoseconds would not fit 64 bits
    MINIMAL | {"ts": 10**400},
    MINIMAL | {"value": 10**400},  # valid JSON, but no float holds it
    MINIMAL | {"value": -(2**1024)},
    FULL | {"value": 10**400},
    FULL | {"raw": 10**400},
    FULL | {"U": 10**400},
    UNIT_ONE | {"k": 10**400},
]


def test_single_pass_equals_check_then_encode_for_valid_readings() -> None:
    for _ in range(2):  # first checked in full, then found among those already checked
        for r in VALID:
            lines = _same_both_ways([r])
            assert isinstance(lines, list) and len(lines) == 2, r
        assert isinstance(_same_both_ways(VALID), list)
    lines = _same_both_ways([FULL])
    assert lines[0] == (
        "reading,site=s\\,1,gateway=gw\\ 1,device=d\\ 1\\,x\\=y\\\\,point=p\\=1,"
        'instrument=TI\\ 1,unit=°C quality="uncertain",reason="not_stable",'
        'flags="out_of_tolerance,note:a.b-1",U=0.05,k=2.0,verdict="conditional_pass",'
        'certificate="CAL \\"7\\" \\\\",value=20.5,raw=2001.0,seq=9i 1700000000000001000'
    )


def test_single_pass_refuses_what_the_full_check_refuses() -> None:
    for r in VALID:  # their fixed values are known now
        _same_both_ways([r])
    for bad in INVALID:
        outcome = _same_both_ways([MINIMAL, FULL, bad])
        assert isinstance(outcome, tuple) and outcome[0] == "schema", bad


def test_sqlite_rows_of_a_batch_left_unchecked() -> None:
    doc = {"v": 1, "type": "data", "gateway": "g", "site": "s", "seq": 1, "sealed": 5,
           "readings": [FULL, MINIMAL]}  # fmt: skip
    lazy = parse_document(doc, "s", "g", "data", rows=False)
    assert lazy.rows == [] and lazy.size == 2
    assert rows_of(lazy) == parse_document(doc, "s", "g", "data").rows
    doc["readings"] = [MINIMAL | {"extra": 1}]
    with pytest.raises(SchemaError):
        rows_of(parse_document(doc, "s", "g", "data", rows=False))


_DELETE = object()
_POOLS: dict[str, list[Any]] = {
    "ts": [1, 7, 1_700_000_000_000_000, MAX_TS_US, MAX_TS_US + 1, 2**70, 0, -1, True, 1.5,
           "1", None, _DELETE],
    "device": ["d", "d 1,x=y\\", "", None, 5, ["d"], _DELETE],
    "point": ["p", "p=1", None, _DELETE],
    "unit": ["m/s", "°C", None, 5, "", _DELETE],
    "instrument": ["TI 1", None, ["i"], _DELETE],
    "certificate": ['c"q', None, 0, _DELETE],
    "value": [1.5, 2, -0.5, True, False, "s", 'a"b\\', None, [1], {"a": 1}, 10**20, 2**1023,
              2**1024, 10**400, _DELETE],
    "raw": [1.5, 3, True, "r", None, [1], 2**1024, -(10**400), _DELETE],
    "quality": ["good", "bad", "uncertain", "excellent", None, 1, _DELETE],
    "reason": ["no_communication", "because", None, 1, _DELETE],
    "verdict": ["pass", "fail", "maybe", None, _DELETE],
    "flags": [[], ["a"], ["a", "b:x.y-1"], ["a", "a"], "a", [1], [["x"]], ["bad flag"], None,
              _DELETE],
    "U": [0.05, 0, 1, True, False, -1, None, "1", _DELETE],
    "k": [2, 1, 2.0, True, 0, None, _DELETE],
    "extra": [1],
}  # fmt: skip
_CHANGE = st.one_of([st.tuples(st.just(k), st.sampled_from(pool)) for k, pool in _POOLS.items()])


def _changed(base: dict[str, Any], changes: list[tuple[str, Any]]) -> dict[str, Any]:
    r = dict(base)
    for key, v in changes:
        if v is _DELETE:
            r.pop(key, None)
        else:
            r[key] = v
    return r


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.builds(_changed, st.sampled_from(VALID), st.lists(_CHANGE, max_size=3)),
        min_size=1,
        max_size=4,
    )
)
def test_single_pass_agrees_with_the_full_check_on_generated_readings(
    readings: list[dict[str, Any]],
) -> None:
    for r in VALID:  # some of the generated ones repeat the fixed values of these
        _same_both_ways([r])
    _same_both_ways(readings)


def test_each_encoder_keeps_its_own_memo_and_no_module_state_grows() -> None:
    """Caches belong to the encoder (and its reading checker), bounded; nothing kept in
    module globals, which every sink of the process would share and none could bound."""
    import supervision.model as model_mod
    import supervision.sinks.line_protocol as lp_mod

    def containers() -> dict[str, int]:
        return {
            f"{mod.__name__}.{name}": len(v)
            for mod in (model_mod, lp_mod)
            for name, v in vars(mod).items()
            if isinstance(v, dict | set | list)
        }

    before = containers()
    a, b = LineEncoder(max_cached=3), LineEncoder()
    for seq in range(1, 9):
        readings = [MINIMAL | {"device": f"d{seq}", "flags": [f"f{seq}"]}]
        doc = {"v": 1, "type": "data", "gateway": "g", "site": "s", "seq": seq, "sealed": 5,
               "readings": readings}  # fmt: skip
        a.batch_lines(parse_document(doc, "s", "g", "data", rows=False))
    assert containers() == before
    assert len(a._fixed) <= 3 and len(a._known["s", "g"]) <= 3  # bounded by its own limit
    assert not b._fixed and not b._known  # and not shared


def test_security_points_of_numbering_events_and_of_messages() -> None:
    """One ``security`` measurement: numbering events at their own time (+ seq mod 1000),
    message records at their receipt (+ a number from the digest), with reason, topic
    and digest; a redelivered message gives the same point at its own receipt."""
    from supervision.model import SecurityEvent
    from supervision.sinks.line_protocol import security_line

    conflict = SecurityEvent("s 1", "gw1", "conflict", 1234, 10, 'seq "1"', "sequence_conflict")
    assert security_line(conflict) == (
        'security,site=s\\ 1,gateway=gw1,kind=conflict seq=1234i,detail="seq \\"1\\"",'
        'reason="sequence_conflict" 10234'
    )
    assert security_line(SecurityEvent("s", "g", "event_gap", 3, 7, "d")) == (
        'security,site=s,gateway=g,kind=event_gap seq=3i,detail="d" 7003'
    )
    forged = SecurityEvent.of_message("gw1", "unknown_key", "k", "t/gw1", 5, b"x")
    line = security_line(forged)
    offset = int(forged.digest[:8], 16) % 1000
    assert line == (
        'security,site=-,gateway=gw1,kind=forgery seq=0i,detail="k",reason="unknown_key",'
        f'topic="t/gw1",digest="{forged.digest}" {5000 + offset}'
    )
