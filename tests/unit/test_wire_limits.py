"""Receiving is bounded: JSON nesting scanned before parsing, integers range-checked,
and whatever bytes arrive, verification raises nothing but its own error."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.wire.signing import Signer
from gateway.wire.verify import (
    MAX_DEPTH,
    MAX_SEQ,
    MAX_TS_US,
    BatchError,
    Captured,
    SeqKind,
    SequenceTracker,
    json_depth,
    loads_bounded,
    verify_batch,
    verify_capture,
)
from supervision.model import SchemaError, parse_document, parse_status

DEEP = 100_000  # far beyond what Python's parser survives (about 1,000)


def _depth(v: Any) -> int:
    if isinstance(v, list):
        return 1 + max((_depth(x) for x in v), default=0)
    if isinstance(v, dict):
        return 1 + max((_depth(x) for x in v.values()), default=0)
    return 0


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.sampled_from('ab"\\[]{}\n\u00e9:,'), max_size=8),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(alphabet='k"\\[}', max_size=4), inner, max_size=4),
    max_leaves=30,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(_json, st.booleans())
def test_depth_scan_is_exact_on_json(doc: Any, ascii_only: bool) -> None:
    text = json.dumps(doc, ensure_ascii=ascii_only).encode()
    assert json_depth(text, 64) == min(_depth(doc), 65)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(alphabet='[]{}"\\ ,:1a', max_size=300).map(str.encode))
def test_bounded_parse_of_any_bytes_raises_only_value_error(data: bytes) -> None:
    with contextlib.suppress(ValueError):  # anything else fails the test
        loads_bounded(data)


def test_deep_nesting_is_refused_before_parsing() -> None:
    for deep in (b"[" * DEEP, b"[" * DEEP + b"]" * DEEP, b'{"a":' * DEEP, b'["\\"' + b"[" * DEEP):
        assert json_depth(deep) == MAX_DEPTH + 1
        with pytest.raises(ValueError, match="nested deeper"):
            loads_bounded(deep)
    # brackets inside strings are not nesting
    assert loads_bounded(b'["' + b"[" * DEEP + b'"]') == ["[" * DEEP]
    assert json_depth(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) == MAX_DEPTH
    assert json_depth(b'{"a":"\\\\"}') == 1  # an escaped backslash does not escape the quote


@pytest.fixture
def signer() -> Signer:
    return Signer.from_private_key(Ed25519PrivateKey.generate())


def _body(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "v": 1, "type": "data", "gateway": "gw-1", "site": "s", "seq": 3, "sealed": 10,
        "readings": [{"ts": 5, "device": "d", "point": "p", "value": 1.0, "quality": "good"}],
    }  # fmt: skip
    return doc | over


def _kind(payload: bytes, signer: Signer) -> str:
    with pytest.raises(BatchError) as err:
        verify_batch(payload, {signer.kid: signer.private_key.public_key()})
    return err.value.kind


def test_hostile_payloads_are_batch_errors(signer: Signer) -> None:
    good = signer.sign_payload(json.dumps(_body()).encode())
    body, _, sig = good.rpartition(b"\n")
    cases = {
        b"[" * DEEP: "unsigned",  # a body alone, not even a cut-off object
        b'{"a":' * DEEP: "unsigned",
        body + b"\n" + b"[" * DEEP: "unsigned",  # a signature line that is none
        body + b"\n" + b'{"alg":' * DEEP: "malformed",
        body + b"\n" + sig + b" " * 600: "malformed",  # longer than a signature line
        body + b"\n\xff\xfe" + sig: "unsigned",
        signer.sign_payload(b"[" * DEEP): "schema",  # signed, and nested too deep
        signer.sign_payload(b"\xff" * 10): "schema",  # not UTF-8
    }
    for payload, kind in cases.items():
        assert _kind(payload, signer) == kind, payload[:40]


@pytest.mark.parametrize(
    ("key", "value"),
    [("seq", 0), ("seq", MAX_SEQ + 1), ("seq", 2**70), ("seq", 10**400), ("seq", -1),
     ("sealed", -1), ("sealed", MAX_TS_US + 1), ("sealed", 10**20), ("seq", True)],
)  # fmt: skip
def test_header_integers_out_of_range_are_schema_errors(
    signer: Signer, key: str, value: int
) -> None:
    payload = signer.sign_payload(json.dumps(_body(**{key: value})).encode())
    assert _kind(payload, signer) == "schema"


def test_header_integers_at_their_limits_pass(signer: Signer) -> None:
    payload = signer.sign_payload(json.dumps(_body(seq=MAX_SEQ, sealed=MAX_TS_US)).encode())
    b = verify_batch(payload, {signer.kid: signer.private_key.public_key()})
    assert (b.seq, b.sealed) == (MAX_SEQ, MAX_TS_US)


def _event(**over: Any) -> dict[str, Any]:
    return {"ts": 5, "n": 1, "type": "startup", "source": "daemon", "data": {},
            "software": "ab", "prev": "0" * 64, "sig": "x"} | over  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "entry"),
    [
        ("event", _event(n=MAX_SEQ + 1)),
        ("event", _event(n=10**400)),
        ("event", _event(ts=MAX_TS_US + 1)),
        ("event", _event(data={"x": 10**400})),  # nested: kept as JSON text, fine
        ("alarm", {"ts": 5, "alarm": "d/p/r", "device": "d", "state": "normal",
                   "severity": "low", "shelved_until": 2**70}),
        ("alarm", {"ts": 5, "alarm": "d/p/r", "device": "d", "state": "normal",
                   "severity": "low", "value": 10**400}),
    ],
)  # fmt: skip
def test_item_integers_are_range_checked(kind: str, entry: dict[str, Any]) -> None:
    key = {"alarm": "alarms", "event": "events"}[kind]
    doc = _body(type=kind)
    del doc["readings"]
    doc[key] = [entry]
    if entry.get("data") == {"x": 10**400}:
        parse_document(doc, "s", "gw-1", kind)  # inside data: text, not a number field
        return
    with pytest.raises(SchemaError):
        parse_document(doc, "s", "gw-1", kind)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"v":1,"state":"online","gateway":"g","site":"s","since":100000000000000000000}',
        b'{"v":1,"state":"online","gateway":"g","site":"s","since":-1}',
        b'{"v":1,"state":"online","gateway":"g","site":"s","since":"soon"}',
        b"[" * DEEP,
        b'{"v":1,"state":"online","gateway":"g","site":"s","software":' + b"[" * DEEP,
        b"\xff\xfe",
        b'{"v":1,"state":"online","gateway":"g","site":"s","since":NaN}',
    ],
)
def test_status_parse_is_bounded_and_checked(payload: bytes) -> None:
    with pytest.raises(SchemaError):
        parse_status(payload, "s", "g")


def test_status_since_in_range_passes() -> None:
    ok = b'{"v":1,"state":"online","gateway":"g","site":"s","since":%d}' % MAX_TS_US
    assert parse_status(ok, "s", "g").since_us == MAX_TS_US


# -- sequence numbers that went back ----------------------------------------------


def test_numbers_below_the_highest_sealed_after_it_are_a_reset() -> None:
    tr = SequenceTracker()
    for seq in range(1, 6):
        tr.record("gw", seq, digest=bytes([seq]), sealed=1000 + seq)
    # the gateway lost its state: 1 again, sealed later than 5
    assert tr.classify("gw", 1, digest=b"other", sealed=2000).kind is SeqKind.RESET
    assert tr.classify("gw", 5, digest=b"other", sealed=2000).kind is SeqKind.RESET
    # the same bytes again are what they were: a duplicate; other bytes, sealed no
    # later: a conflict
    assert tr.classify("gw", 3, digest=bytes([3]), sealed=1003).kind is SeqKind.DUPLICATE
    assert tr.classify("gw", 3, digest=b"other", sealed=1003).kind is SeqKind.CONFLICT
    assert tr.classify("gw", 6, sealed=2000).kind is SeqKind.NEW
    # restored from a store: numbers below are looked up, a later seal is a reset
    fresh = SequenceTracker()
    fresh.restore("gw", 5, 1005)
    assert fresh.classify("gw", 2, sealed=1002).kind is SeqKind.REPLAY
    assert fresh.classify("gw", 2, sealed=3000).kind is SeqKind.RESET
    assert SequenceTracker().classify("gw", 2, sealed=3000).kind is SeqKind.NEW
    again = SequenceTracker()
    again.load_json(json.loads(json.dumps(tr.to_json())))
    assert again.classify("gw", 1, sealed=2000).kind is SeqKind.RESET


def test_capture_names_a_reset_and_a_key_used_for_another_gateway(signer: Signer) -> None:
    other = Signer.from_private_key(Ed25519PrivateKey.generate())
    keys = {s.kid: s.private_key.public_key() for s in (signer, other)}

    def batch(s: Signer, seq: int, sealed: int, gateway: str = "gw-1") -> Captured:
        body = json.dumps(_body(seq=seq, sealed=sealed, gateway=gateway)).encode()
        return Captured(f"seq {seq}", s.sign_payload(body))

    caps = [batch(signer, 1, 10), batch(signer, 2, 20), batch(signer, 1, 30),
            batch(signer, 3, 40, gateway="gw-2")]  # fmt: skip
    rep = verify_capture(caps, keys, gateway_of={signer.kid: "gw-1", other.kid: "gw-2"})
    assert any("reset" in p for p in rep.problems), rep.problems
    assert any("key_mismatch" in p and "gw-2" in p for p in rep.problems), rep.problems
    # without bindings the same key may sign for any gateway
    assert not any("key_mismatch" in p for p in verify_capture(caps, keys).problems)


def test_verify_command_binds_keys_in_a_directory_to_their_gateways(
    tmp_path: Path, signer: Signer, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from gateway.cli.app import main

    other = Signer.from_private_key(Ed25519PrivateKey.generate())
    keys = tmp_path / "keys"
    keys.mkdir()
    for name, s in (("gw-1", signer), ("gw-2", other)):
        pem = s.private_key.public_key().public_bytes(
            Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
        )
        (keys / f"{name}.pub").write_bytes(pem)
    own = tmp_path / "own.bin"
    own.write_bytes(signer.sign_payload(json.dumps(_body(gateway="gw-1")).encode()) + b"\n")
    forged = tmp_path / "forged.bin"
    # gw-1's key, a batch in gw-2's name
    forged.write_bytes(signer.sign_payload(json.dumps(_body(gateway="gw-2")).encode()) + b"\n")
    assert main(["verify", str(own), "--key", str(keys)]) == 0
    assert main(["verify", str(forged), "--key", str(keys)]) == 1
    assert "key_mismatch" in capsys.readouterr().out
    # the file named for the gateway binds the same way
    assert main(["verify", str(forged), "--key", str(keys / "gw-1.pub")]) == 1


def test_schemas_carry_the_same_bounds() -> None:
    root = Path(__file__).resolve().parents[2] / "gateway" / "wire" / "schema"
    batch = json.loads((root / "batch.schema.json").read_text())
    alarm_set = json.loads((root / "alarm-set.schema.json").read_text())
    assert batch["$defs"]["us"]["maximum"] == MAX_TS_US
    assert batch["properties"]["seq"]["maximum"] == MAX_SEQ
    assert batch["$defs"]["event"]["properties"]["n"]["maximum"] == MAX_SEQ
    assert alarm_set["properties"]["ts"]["maximum"] == MAX_TS_US
