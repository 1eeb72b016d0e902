"""The audit trail cannot be cut, emptied or reset unnoticed: each attack, and reinit."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.audit.eventlog import (
    GENESIS,
    EventLog,
    EventLogCorrupt,
    EventLogReset,
    counter_path_for,
)
from gateway.audit.head import LogHead, SeqMark, read_head, write_head
from gateway.audit.reinit import PreviousHead, reinitialise
from gateway.audit.verify import verify_event_log
from gateway.cli.app import main
from gateway.wire.keys import generate_keypair, load_signer
from gateway.wire.signing import Signer
from tests.ingest_support import data_batch, new_signer, register

_CAPTURE_SIGNER = new_signer()


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    generate_keypair(tmp_path / "keys")
    return tmp_path / "keys"


def _signer(keys_dir: Path) -> Signer:
    return load_signer(keys_dir / "gateway.key")


def _keys(signer: Signer) -> dict[str, Any]:
    return {signer.kid: signer.private_key.public_key()}


def _fill(path: Path, signer: Signer, count: int) -> list[bytes]:
    with EventLog(path, signer, software_id="s") as log:
        for i in range(count):
            log.append("outbox_drop", {"i": i})
    return path.read_bytes().splitlines(keepends=True)


def _digest(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def _verify(path: Path, keys_dir: Path, *extra: str) -> int:
    return main(["verify", str(path), "--key", str(keys_dir / "gateway.pub"), *extra])


def _kinds(err: pytest.ExceptionInfo[EventLogCorrupt]) -> list[str]:
    return [p.kind for p in err.value.problems]


def test_cut_log_with_a_rewritten_counter_is_detected(
    tmp_path: Path, keys_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = _signer(keys_dir)
    path = tmp_path / "events.log"
    lines = _fill(path, signer, 5)
    cut = lines[:3]
    path.write_bytes(b"".join(cut))
    counter = counter_path_for(path)
    # the attacker writes the counter as it looked before it was signed
    counter.write_text(json.dumps({"n": 3, "last": _digest(cut[-1])}))
    with pytest.raises(EventLogCorrupt) as err:
        EventLog(path, signer, software_id="s")
    assert _kinds(err) == ["counter_unsigned"]
    assert _verify(path, keys_dir) == 1
    assert "counter_unsigned" in capsys.readouterr().out

    # ... or signs it with a key of their own
    other = Signer.from_private_key(Ed25519PrivateKey.generate())
    write_head(counter, LogHead(3, _digest(cut[-1])), other, ts_us=1)
    with pytest.raises(EventLogCorrupt) as err:
        EventLog(path, signer, software_id="s")
    assert _kinds(err) == ["unknown_key"]

    # ... or edits the number in a genuine counter: its signature no longer matches
    path.write_bytes(b"".join(lines))
    write_head(counter, LogHead(5, _digest(lines[-1])), signer, ts_us=1)
    path.write_bytes(b"".join(cut))
    counter.write_bytes(
        counter.read_bytes()
        .replace(b'"n":5', b'"n":3')
        .replace(_digest(lines[-1]).encode(), _digest(cut[-1]).encode())
    )
    with pytest.raises(EventLogCorrupt) as err:
        EventLog(path, signer, software_id="s")
    assert _kinds(err) == ["counter_forged"]
    assert _verify(path, keys_dir) == 1


def test_cut_log_with_its_counter_deleted_is_refused(tmp_path: Path, keys_dir: Path) -> None:
    signer = _signer(keys_dir)
    path = tmp_path / "events.log"
    lines = _fill(path, signer, 5)
    path.write_bytes(b"".join(lines[:3]))
    counter_path_for(path).unlink()
    before = path.read_bytes()
    with pytest.raises(EventLogCorrupt) as err:
        EventLog(path, signer, software_id="s")
    assert _kinds(err) == ["counter_missing"]
    assert path.read_bytes() == before and not counter_path_for(path).exists()


def test_an_emptied_log_fails_verification(
    tmp_path: Path, keys_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = _signer(keys_dir)
    path = tmp_path / "events.log"
    _fill(path, signer, 3)
    path.write_bytes(b"")
    assert _verify(path, keys_dir) == 1
    out = capsys.readouterr().out
    assert "truncated" in out and "the log is empty but 3 entries were written" in out
    with pytest.raises(EventLogCorrupt) as err:
        EventLog(path, signer, software_id="s")
    assert _kinds(err) == ["truncated"]


def test_a_file_that_is_neither_log_nor_capture_fails_verification(
    tmp_path: Path, keys_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for content in (b"", b"\n\n", b"   \n"):
        path = tmp_path / "nothing.bin"
        path.write_bytes(content)
        assert _verify(path, keys_dir) == 1
        assert "neither an event log nor a capture" in capsys.readouterr().out
    junk = tmp_path / "junk.txt"
    junk.write_bytes(b"hello\nworld\n")
    assert _verify(junk, keys_dir) == 1


def test_a_log_with_a_damaged_first_line_is_still_checked_as_a_log(
    tmp_path: Path, keys_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = _signer(keys_dir)
    path = tmp_path / "events.log"
    lines = _fill(path, signer, 3)
    path.write_bytes(b"garbage\n" + b"".join(lines[1:]))
    assert _verify(path, keys_dir) == 1
    out = capsys.readouterr().out
    assert "line 1: unsigned" in out and "deleted" not in out.split("line 1")[0]


def test_a_missing_log_is_not_restarted_where_the_gateway_has_run(
    tmp_path: Path, keys_dir: Path
) -> None:
    signer = _signer(keys_dir)
    path = tmp_path / "events.log"
    outbox = tmp_path / "outbox.db"
    rules = tmp_path / "rules"
    # a first start: nothing exists yet, the log is created
    with EventLog(path, signer, software_id="s", history=[outbox, rules]) as log:
        log.append("startup", {})
    outbox.write_bytes(b"as if written")
    path.unlink()
    counter_path_for(path).unlink()
    with pytest.raises(EventLogReset) as err:
        EventLog(path, signer, software_id="s", history=[outbox, rules])
    assert str(outbox) in str(err.value) and "metrogate audit reinit" in str(err.value)
    assert not path.exists()
    path.write_bytes(b"")  # emptied, counter gone: the same
    with pytest.raises(EventLogReset):
        EventLog(path, signer, software_id="s", history=[outbox, rules])
    outbox.unlink()
    rules.mkdir()
    (rules / "dev1.json").write_text("{}")
    with pytest.raises(EventLogReset) as err:
        EventLog(path, signer, software_id="s", history=[outbox, rules])
    assert str(rules) in str(err.value)


def test_reinit_continues_the_numbering_and_names_the_previous_head(
    tmp_path: Path, keys_dir: Path
) -> None:
    signer = _signer(keys_dir)
    path = tmp_path / "events.log"
    lines = _fill(path, signer, 4)
    mark = SeqMark(next=120, reserved=10_120, events=4, clean=True)
    with EventLog(path, signer, software_id="s") as log:
        log.record_seq(mark)
    rep = reinitialise(path, signer, software_id="s", reason="log archived", clock_us=lambda: 7)
    assert rep.previous == PreviousHead(4, _digest(lines[-1]), "counter")
    first = rep.entry
    assert first["n"] == 5 and first["prev"] == _digest(lines[-1])
    assert first["type"] == "log_reinitialised" and first["source"] == "operator"
    assert first["data"]["reason"] == "log archived"
    assert first["data"]["previous"] == {"n": 4, "hash": _digest(lines[-1]), "source": "counter"}
    retired = [p for p in rep.retired if not p.name.endswith(".counter")]
    assert len(retired) == 1 and retired[0].read_bytes() == b"".join(lines)
    assert first["data"]["retired"] == retired[0].name
    # both verify: the new log from its first entry, the old one with its own counter
    assert verify_event_log(path, _keys(signer)).ok
    old = verify_event_log(retired[0], _keys(signer))
    assert old.ok and old.counter_checked
    head = read_head(counter_path_for(path), _keys(signer))
    assert head is not None and head.n == 5 and head.seq is not None
    assert head.seq.reserved == 10_120  # sequence numbers keep going up
    with EventLog(path, signer, software_id="s") as log:
        assert log.counter == 5
        assert log.append("startup", {})["n"] == 6
    assert verify_event_log(path, _keys(signer)).ok


def test_reinit_after_the_log_was_lost_and_a_cut_reinit_log_is_detected(
    tmp_path: Path, keys_dir: Path
) -> None:
    signer = _signer(keys_dir)
    path = tmp_path / "events.log"
    _fill(path, signer, 2)
    path.unlink()
    counter_path_for(path).unlink()
    rep = reinitialise(path, signer, software_id="s", reason="state lost", min_seq=500)
    assert rep.previous is None and rep.entry["n"] == 1 and rep.entry["prev"] == GENESIS
    assert rep.entry["data"]["previous"] is None
    head = read_head(counter_path_for(path), _keys(signer))
    assert head is not None and head.seq is not None and head.seq.reserved == 500

    # the operator knows the previous head from the platform's copy
    given = PreviousHead(77, "ab" * 32, "operator")
    rep = reinitialise(path, signer, software_id="s", reason="platform head", previous=given)
    assert rep.entry["n"] == 78 and rep.entry["prev"] == "ab" * 32
    assert any("local head was entry 1" in n for n in rep.notes)
    with EventLog(path, signer, software_id="s") as log:
        log.append("startup", {})
        log.append("shutdown", {})
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[1:]))  # the reinit entry cut off the head of the log
    assert [p.kind for p in verify_event_log(path, _keys(signer)).problems] == ["deleted"]


def test_reinit_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(
        f"gateway: {{id: gw1, site: s1, state_dir: {state}}}\n"
        "devices:\n  - id: d1\n    driver: modbus_tcp\n    host: 127.0.0.1\n    port: 1502\n"
        "    unit: 1\n    poll: 1s\n    timeout: 100ms\n    points:\n"
        "      - {id: p0, table: holding, address: 0, type: float32}\n"
    )
    generate_keypair(state)
    signer = load_signer(state / "gateway.key")
    _fill(state / "events.log", signer, 3)
    with pytest.raises(SystemExit) as usage:
        main(["audit", "reinit", "-c", str(cfg)])  # a reason is required
    assert usage.value.code == 2
    with EventLog(state / "events.log", signer, software_id="s"):
        assert main(["audit", "reinit", "-c", str(cfg), "--reason", "x"]) == 1  # in use
    assert "in use" in capsys.readouterr().err
    code = main(["audit", "reinit", "-c", str(cfg), "--reason", "archive", "--previous-n", "3"])
    assert code == 2
    assert main(["audit", "reinit", "-c", str(cfg), "--reason", "archive"]) == 0
    out = capsys.readouterr().out
    assert "previous: entry 3" in out and "first entry 4 (log_reinitialised)" in out
    assert len(list(state.glob("events.log.retired-*"))) == 2  # the log and its counter
    assert main(["verify", str(state / "events.log"), "--key", str(state / "gateway.pub")]) == 0


# ------------------------------------------------- a capture file of anything, at random

_SIGNED = [data_batch(_CAPTURE_SIGNER, "gw-cap", seq, 2) for seq in (1, 2, 3)]


@st.composite
def _capture_file(draw: st.DrawFn) -> bytes:
    parts: list[bytes] = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["payload", "b64", "junk", "json", "damaged"]))
        if kind == "payload":
            parts.append(draw(st.sampled_from(_SIGNED)))
        elif kind == "b64":
            rec: Any = {"payload_b64": base64.b64encode(draw(st.sampled_from(_SIGNED))).decode()}
            rec |= draw(st.fixed_dictionaries({}, optional={"received_us": st.one_of(
                st.integers(), st.floats(), st.text(max_size=5), st.none())}))  # fmt: skip
            parts.append(json.dumps(rec).encode())
        elif kind == "json":
            parts.append(json.dumps(draw(st.one_of(
                st.lists(st.integers(), max_size=3), st.text(max_size=10), st.integers(),
                st.dictionaries(st.sampled_from(["payload_b64", "alg"]), st.text(max_size=8)),
            ))).encode())  # fmt: skip
        elif kind == "damaged":
            good = bytearray(draw(st.sampled_from(_SIGNED)))
            good[draw(st.integers(0, len(good) - 1))] ^= 1 << draw(st.integers(0, 7))
            parts.append(bytes(good))
        else:
            parts.append(draw(st.binary(max_size=80)))
    return b"\n".join(parts) + draw(st.sampled_from([b"", b"\n"]))


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(content=_capture_file())
def test_verify_of_any_capture_file_answers_ok_or_failed_never_raises(
    tmp_path_factory: pytest.TempPathFactory, content: bytes
) -> None:
    """``metrogate verify`` over any file: exit 0 only for whole signed batches, in
    order, with no gap; 1 for everything else — never a traceback."""
    tmp = tmp_path_factory.mktemp("cap")
    register(tmp / "keys", "gw-cap", _CAPTURE_SIGNER)
    path = tmp / "capture.bin"
    path.write_bytes(content)
    code = main(["verify", str(path), "--key", str(tmp / "keys" / "gw-cap.pub")])
    assert code in (0, 1)
    if code == 0:  # something genuine was in it, raw or as base64
        b64 = [base64.b64encode(p) for p in _SIGNED]
        assert any(p in content for p in _SIGNED + b64), content
