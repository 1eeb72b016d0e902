"""Line protocol encoding of received batches: escaping, typing, idempotent stamps."""

from __future__ import annotations

import json

from supervision.model import parse_batch
from supervision.sinks.line_protocol import (
    batch_lines,
    escape_measurement,
    escape_string,
    escape_tag,
)


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
    # the bookkeeping point: sub-µs digits carry seq mod 1000
    assert lines[1] == (
        "batch,site=s\\,1,gateway=gw\\ 1,kind=data seq=7i,n=1i,sealed=1000000i 1000000007"
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
