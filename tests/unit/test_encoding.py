"""The batch body encoder: the bytes the standard library writes, and its refusals."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.wire.encoding import encode_body

STD = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


BODIES: list[dict[str, Any]] = [
    {
        "v": 1,
        "type": "data",
        "gateway": "gw1",
        "site": "s",
        "seq": 2**40,
        "sealed": 1_795_847_523_123_456,
        "readings": [
            {"ts": 1, "device": "d", "point": "p", "value": 1.2345678, "raw": 40123,
             "unit": "°C", "quality": "good", "flags": ["out_of_tolerance"], "U": 0.05, "k": 2.0},
            {"ts": 2, "device": "d", "point": "s", "value": 'Waage "A" \n\t\u0001 ✓',
             "quality": "bad", "reason": "no_communication"},
            {"ts": 3, "device": "d", "point": "b", "value": True, "raw": False,
             "quality": "uncertain"},
            {"ts": 4, "device": "d", "point": "n", "value": None, "quality": "bad"},
            {"ts": 5, "device": "d", "point": "x", "value": -0.0, "raw": 2**63 - 1,
             "quality": "good"},
            {"ts": 6, "device": "d", "point": "y", "value": 0.1 + 0.2, "raw": -(2**63),
             "quality": "good"},
        ],
    },
    {"v": 1, "type": "event", "gateway": "g", "site": "s", "seq": 1, "sealed": 0,
     "events": [{"n": 1, "data": {"nested": {"list": [1, 2.5, "x"], "empty": {}}}}]},
]  # fmt: skip


@pytest.mark.parametrize("body", BODIES)
def test_the_bytes_are_what_the_standard_library_writes(body: dict[str, Any]) -> None:
    assert encode_body(body) == STD(body).encode("utf-8")
    assert json.loads(encode_body(body)) == body


def test_tiny_numbers_may_be_spelt_otherwise_but_are_the_same_value() -> None:
    body = {"v": 1, "value": 1e-7}
    assert json.loads(encode_body(body)) == body


def test_what_json_cannot_hold_is_refused_as_value_error() -> None:
    with pytest.raises(ValueError):
        encode_body({"v": 1, "big": 2**64})
    with pytest.raises(ValueError):
        encode_body({"v": 1, "obj": object()})
