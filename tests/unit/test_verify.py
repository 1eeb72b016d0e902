"""Verification: batches, sequence classification, event-log files, the verify command."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.eventlog import EventLog, counter_path_for
from gateway.audit.verify import verify_event_log
from gateway.cli.app import main
from gateway.wire.keys import generate_keypair, load_signer
from gateway.wire.signing import Signer
from gateway.wire.verify import (
    BatchError,
    Captured,
    SeqKind,
    SequenceTracker,
    read_capture,
    verify_batch,
    verify_capture,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def signer() -> Signer:
    return Signer.from_private_key(Ed25519PrivateKey.generate())


def _keys(*signers: Signer) -> dict[str, Any]:
    return {s.kid: s.private_key.public_key() for s in signers}


def _body(seq: int, gateway: str = "gw-1", **extra: Any) -> bytes:
    obj: dict[str, Any] = {
        "v": 1,
        "type": "data",
        "gateway": gateway,
        "site": "plant.a",
        "seq": seq,
        "sealed": 1_760_000_000_000_000 + seq,
        "readings": [
            {
                "ts": 1_760_000_000_000_000,
                "device": "bal1",
                "point": "w",
                "value": 12.5,
                "quality": "good",
            }
        ],
    }
    obj.update(extra)
    return json.dumps(obj, separators=(",", ":")).encode()


def _batch(signer: Signer, seq: int, gateway: str = "gw-1") -> bytes:
    return signer.sign_payload(_body(seq, gateway))


def _kind(payload: bytes, keys: dict[str, Any]) -> str:
    with pytest.raises(BatchError) as err:
        verify_batch(payload, keys)
    return err.value.kind


# -- batches ---------------------------------------------------------------------


def test_round_trip(signer: Signer) -> None:
    b = verify_batch(_batch(signer, 7), _keys(signer))
    assert (b.gateway, b.site, b.seq, b.type, b.kid) == ("gw-1", "plant.a", 7, "data", signer.kid)
    assert b.body["readings"][0]["value"] == 12.5
    assert b.body_bytes == _body(7)


def test_every_tampered_byte_is_detected(signer: Signer) -> None:
    payload = _batch(signer, 1)
    keys = _keys(signer)
    kinds = set()
    for i in range(len(payload)):
        for flip in (0x01, 0x20):
            bad = bytearray(payload)
            bad[i] ^= flip
            try:
                verify_batch(bytes(bad), keys)
            except BatchError as exc:
                kinds.add(exc.kind)
            else:
                pytest.fail(f"flipping byte {i} went undetected")
    assert "bad_signature" in kinds


def test_every_truncation_is_named_truncated(signer: Signer) -> None:
    payload = _batch(signer, 1)
    body_len = len(_body(1))
    keys = _keys(signer)
    for cut in range(1, len(payload)):
        # cut exactly at the separator leaves a complete unsigned body
        expected = "unsigned" if cut == body_len else "truncated"
        assert _kind(payload[:cut], keys) == expected, cut


def test_wrong_key_unsigned_malformed_algorithm_schema(signer: Signer) -> None:
    other = Signer.from_private_key(Ed25519PrivateKey.generate())
    payload = _batch(signer, 1)
    assert _kind(payload, _keys(other)) == "unknown_key"
    # a different key filed under the right id
    assert _kind(payload, {signer.kid: other.private_key.public_key()}) == "bad_signature"
    assert _kind(_body(1), _keys(signer)) == "unsigned"
    assert _kind(_body(1) + b"\n" + _body(2), _keys(signer)) == "malformed"
    assert _kind(_body(1) + b"\nhello", _keys(signer)) == "unsigned"
    wrong_alg = payload.replace(b'"alg":"Ed25519"', b'"alg":"SM2"')
    assert _kind(wrong_alg, _keys(signer)) == "bad_algorithm"
    no_seq = json.loads(_body(1))
    del no_seq["seq"]
    assert _kind(signer.sign_payload(json.dumps(no_seq).encode()), _keys(signer)) == "schema"
    assert _kind(signer.sign_payload(_body(0)), _keys(signer)) == "schema"
    assert _kind(signer.sign_payload(_body(1, gateway="a/b")), _keys(signer)) == "schema"
    assert _kind(signer.sign_payload(b"[1,2]"), _keys(signer)) == "schema"


# -- sequence tracking -----------------------------------------------------------


def test_new_gap_gap_fill_duplicate_replay() -> None:
    tr = SequenceTracker(duplicate_window_s=60.0, duplicate_window_seq=100)
    assert tr.record("gw", 1, now=0).kind is SeqKind.NEW
    assert tr.record("gw", 2, now=1).kind is SeqKind.NEW
    v = tr.record("gw", 6, now=2)
    assert v.kind is SeqKind.NEW and v.new_gaps == ((3, 5),)
    assert tr.gaps("gw") == [(3, 5)]
    assert tr.record("gw", 4, now=3).kind is SeqKind.GAP_FILL
    assert tr.gaps("gw") == [(3, 3), (5, 5)]
    assert tr.record("gw", 2, now=10).kind is SeqKind.DUPLICATE  # redelivery
    assert tr.record("gw", 4, now=10).kind is SeqKind.DUPLICATE
    assert tr.record("gw", 2, now=100).kind is SeqKind.REPLAY  # settled long ago
    assert tr.record("gw", 3, now=100).kind is SeqKind.GAP_FILL
    assert tr.record("gw", 5, now=100).kind is SeqKind.GAP_FILL
    assert tr.gaps("gw") == []
    assert tr.record("other", 5, now=100).kind is SeqKind.NEW  # per gateway
    assert tr.high("gw") == 6 and tr.high("other") == 5


def test_replay_far_behind_in_sequence_even_if_recent() -> None:
    tr = SequenceTracker(duplicate_window_s=3600.0, duplicate_window_seq=3)
    for s in range(1, 11):
        tr.record("gw", s, now=0)
    assert tr.classify("gw", 8, now=1).kind is SeqKind.DUPLICATE
    assert tr.classify("gw", 2, now=1).kind is SeqKind.REPLAY
    assert tr.classify("gw", 0, now=1).kind is SeqKind.REPLAY  # below the first seen


def test_classify_is_pure_so_a_failed_store_is_not_a_duplicate() -> None:
    tr = SequenceTracker()
    tr.record("gw", 1, now=0)
    assert tr.classify("gw", 2, now=0).kind is SeqKind.NEW
    # the store failed: nothing recorded, so the broker's redelivery is still new
    assert tr.classify("gw", 2, now=1).kind is SeqKind.NEW
    assert tr.record("gw", 2, now=1).kind is SeqKind.NEW
    assert tr.classify("gw", 2, now=2).kind is SeqKind.DUPLICATE


def test_same_number_with_other_bytes_is_a_conflict_not_a_duplicate() -> None:
    tr = SequenceTracker(duplicate_window_s=60.0, duplicate_window_seq=100)
    assert tr.record("gw", 1, now=0, digest=b"a").kind is SeqKind.NEW
    assert tr.record("gw", 2, now=0, digest=b"b").kind is SeqKind.NEW
    assert tr.classify("gw", 1, now=1, digest=b"a").kind is SeqKind.DUPLICATE
    assert tr.classify("gw", 1, now=1, digest=b"x").kind is SeqKind.CONFLICT
    assert tr.record("gw", 1, now=1, digest=b"x").kind is SeqKind.CONFLICT
    # the conflict changed nothing: the original bytes are still the reference
    assert tr.classify("gw", 1, now=2, digest=b"a").kind is SeqKind.DUPLICATE
    # without a digest the caller gets the old verdicts
    assert tr.classify("gw", 1, now=2).kind is SeqKind.DUPLICATE
    # once the number left the window, its digest is forgotten with it
    assert tr.classify("gw", 1, now=120, digest=b"x").kind is SeqKind.REPLAY


def test_state_round_trip_and_gap_cap() -> None:
    tr = SequenceTracker(max_gap_ranges=2)
    for s in (1, 3, 5, 7):
        tr.record("gw", s, now=0)
    assert tr.gaps("gw") == [(4, 4), (6, 6)] and tr.lost == 1
    state = json.loads(json.dumps(tr.to_json()))
    tr2 = SequenceTracker()
    tr2.load_json(state)
    assert tr2.gaps("gw") == [(4, 4), (6, 6)]
    assert tr2.classify("gw", 6, now=0).kind is SeqKind.GAP_FILL
    assert tr2.classify("gw", 7, now=0).kind is SeqKind.REPLAY  # restored = settled
    assert tr2.classify("gw", 8, now=0).kind is SeqKind.NEW
    tr2.forget("gw")
    assert tr2.classify("gw", 1, now=0).kind is SeqKind.NEW


def test_capture_names_replay_conflict_gap_and_notes_duplicates(signer: Signer) -> None:
    keys = _keys(signer)
    caps = [Captured(f"#{s}", _batch(signer, s)) for s in (1, 2, 3, 5, 3)]
    rep = verify_capture(caps, keys)
    assert rep.notes == ["#3: gateway gw-1 seq 3: duplicate: identical redelivery"]
    assert rep.problems == ["gateway gw-1: gap: sequence numbers 4 are missing"]
    caps.append(Captured("#old", _batch(signer, 1)))
    rep = verify_capture(caps, keys, tracker=SequenceTracker(duplicate_window_seq=2))
    assert "#old: gateway gw-1 seq 1: replay: an old batch was sent again" in rep.problems
    other_body = signer.sign_payload(_body(2, extra_field=1))
    rep = verify_capture([*caps[:3], Captured("#x", other_body)], keys)
    assert rep.problems == [
        "#x: gateway gw-1 seq 2: conflict: same sequence number, different content"
    ]


# -- event-log files ---------------------------------------------------------------


def _log(path: Path, signer: Signer, count: int) -> list[bytes]:
    with EventLog(path, signer, software_id="s") as log:
        for i in range(count):
            log.append("outbox_drop", {"i": i})
    return path.read_bytes().splitlines(keepends=True)


def _problems(path: Path, signer: Signer) -> list[tuple[str, int | None]]:
    return [(p.kind, p.n) for p in verify_event_log(path, _keys(signer)).problems]


def test_event_log_tamper_cases_are_named(tmp_path: Path, signer: Signer) -> None:
    path = tmp_path / "events.log"
    lines = _log(path, signer, 6)
    assert verify_event_log(path, _keys(signer)).ok

    path.write_bytes(b"".join(lines).replace(b'"i":2', b'"i":9'))
    assert _problems(path, signer) == [("bad_signature", 3)]

    path.write_bytes(b"".join(lines[:2] + lines[3:]))
    assert _problems(path, signer) == [("deleted", 4)]

    path.write_bytes(b"".join(lines[2:]))
    assert _problems(path, signer) == [("deleted", 3)]  # the head is gone

    path.write_bytes(b"".join([*lines[:2], lines[3], lines[2], *lines[4:]]))
    assert _problems(path, signer) == [("reordered", 4), ("reordered", 3)]

    path.write_bytes(b"".join([*lines[:3], lines[2], *lines[3:]]))
    assert _problems(path, signer) == [("duplicated", 3)]

    path.write_bytes(b"".join(lines[:5]))
    assert _problems(path, signer) == [("truncated", None)]

    path.write_bytes(b"".join(lines) + lines[0][:20])
    assert _problems(path, signer) == [("torn_tail", None)]

    # an entry rewritten and re-signed with the gateway's own key: only the chain shows it
    body = json.loads(lines[2].split(b"\t")[0])
    body["data"]["i"] = 99
    raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    forged = signer.sign_payload(raw).replace(b"\n", b"\t") + b"\n"
    path.write_bytes(b"".join([*lines[:2], forged, *lines[3:]]))
    assert _problems(path, signer) == [("broken_chain", 4)]

    other = Signer.from_private_key(Ed25519PrivateKey.generate())
    path.write_bytes(b"".join(lines))
    assert {p.kind for p in verify_event_log(path, _keys(other)).problems} == {"unknown_key"}


def test_event_log_without_counter_still_checks_the_chain(tmp_path: Path, signer: Signer) -> None:
    path = tmp_path / "events.log"
    lines = _log(path, signer, 3)
    counter_path_for(path).unlink()
    rep = verify_event_log(path, _keys(signer))
    assert rep.ok and not rep.counter_checked
    path.write_bytes(b"".join(lines[:1] + lines[2:]))
    assert _problems(path, signer) == [("deleted", 3)]


# -- the command ---------------------------------------------------------------------


def test_keygen_then_verify_capture_formats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keygen", "--dir", str(tmp_path / "keys")]) == 0
    assert "key id:" in capsys.readouterr().out
    assert main(["keygen", "--dir", str(tmp_path / "keys")]) == 2
    signer = load_signer(tmp_path / "keys" / "gateway.key")
    key = str(tmp_path / "keys" / "gateway.pub")

    single = tmp_path / "one.bin"
    single.write_bytes(_batch(signer, 1))
    assert main(["verify", str(single), "--key", key]) == 0
    assert "1 batches OK" in capsys.readouterr().out

    stream = tmp_path / "sub.txt"  # as `mosquitto_sub` prints: payload + newline each
    stream.write_bytes(b"".join(_batch(signer, s) + b"\n" for s in (1, 2, 3)))
    assert main(["verify", str(stream), "--key", str(tmp_path / "keys")]) == 0
    capsys.readouterr()

    stream.write_bytes(b"".join(_batch(signer, s) + b"\n" for s in (1, 2, 4)))
    assert main(["verify", str(stream), "--key", key]) == 1
    assert "gap: sequence numbers 3 are missing" in capsys.readouterr().out

    tampered = _batch(signer, 2).replace(b"12.5", b"13.5")
    stream.write_bytes(_batch(signer, 1) + b"\n" + tampered + b"\n")
    assert main(["verify", str(stream), "--key", key]) == 1
    assert "line 3: bad_signature" in capsys.readouterr().out

    stream.write_bytes(_batch(signer, 1) + b"\n" + _batch(signer, 2)[:40])
    assert main(["verify", str(stream), "--key", key]) == 1
    assert "line 3: truncated" in capsys.readouterr().out

    jsonl = tmp_path / "cap.jsonl"
    recs = [
        {
            "topic": "t",
            "payload_b64": base64.b64encode(_batch(signer, s)).decode(),
            "received_us": rx,
        }
        for s, rx in ((1, 0), (2, 1_000_000), (1, 7_200_000_000))
    ]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert main(["verify", str(jsonl), "--key", key]) == 1  # seq 1 again two hours later
    assert "line 3: gateway gw-1 seq 1: replay" in capsys.readouterr().out

    other = generate_keypair(tmp_path / "other")
    assert main(["verify", str(single), "--key", str(other.public_path)]) == 1
    assert "unknown_key" in capsys.readouterr().out


def test_verify_command_on_event_log_as_a_process(tmp_path: Path) -> None:
    pair = generate_keypair(tmp_path / "keys")
    signer = load_signer(pair.private_path)
    path = tmp_path / "events.log"
    lines = _log(path, signer, 4)
    cmd = [
        sys.executable,
        "-m",
        "gateway",
        "verify",
        str(path),
        "--key",
        str(pair.public_path),
    ]
    ok = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "event log OK, 4 entries" in ok.stdout
    path.write_bytes(b"".join([lines[0], lines[2], lines[1], lines[3]]))
    bad = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert "reordered" in bad.stdout and "line 2 (entry 3)" in bad.stdout


def test_read_capture_pairs_lines(signer: Signer) -> None:
    a, b = _batch(signer, 1), _batch(signer, 2)
    body_b = b.split(b"\n")[0]
    caps = read_capture(a + b"\n" + body_b + b"\n" + b)
    assert [c.where for c in caps] == ["line 1", "line 3", "line 4"]
    assert caps[0].payload == a and caps[1].payload == body_b and caps[2].payload == b


def test_a_tracker_remembers_the_newest_numbers_with_their_digests_and_no_more() -> None:
    tr = SequenceTracker(duplicate_window_s=3600.0, duplicate_window_seq=1000, remember=3)
    digest = {s: hashlib.sha256(b"%d" % s).digest() for s in range(1, 8)}
    for s in (1, 2, 4, 5, 6):  # 3 is a gap
        tr.record("gw", s, now=0, digest=digest[s])
    for s in (4, 5, 6):  # the newest three: duplicate or conflict, by digest
        assert tr.classify("gw", s, now=1, digest=digest[s]).kind is SeqKind.DUPLICATE
        assert tr.classify("gw", s, now=1, digest=b"other").kind is SeqKind.CONFLICT
    # older ones fell out: a replay, for a receiver to settle with its store
    assert tr.classify("gw", 2, now=1, digest=digest[2]).kind is SeqKind.REPLAY
    assert tr.classify("gw", 2, now=1, digest=b"other").kind is SeqKind.REPLAY
    assert tr.record("gw", 3, now=1, digest=digest[3]).kind is SeqKind.GAP_FILL
    assert tr.classify("gw", 3, now=1, digest=b"other").kind is SeqKind.CONFLICT
    assert tr.classify("gw", 4, now=1, digest=digest[4]).kind is SeqKind.REPLAY  # pushed out
    # lowering the bound on a running tracker keeps the newest accepted
    tr.remember = 1
    assert tr.classify("gw", 3, now=1, digest=b"other").kind is SeqKind.CONFLICT
    assert tr.classify("gw", 6, now=1, digest=digest[6]).kind is SeqKind.REPLAY
    tr.record("gw", 7, now=2, digest=digest[7])
    assert tr.classify("gw", 7, now=2, digest=b"other").kind is SeqKind.CONFLICT
    assert tr.classify("gw", 3, now=2).kind is SeqKind.REPLAY


def test_digests_of_any_length_compare_exactly() -> None:
    tr = SequenceTracker()
    tr.record("gw", 1, now=0, digest=b"ab" * 32)  # hex text, as a caller may pass it
    tr.record("gw", 2, now=0, digest=b"\x00" * 32)
    tr.record("gw", 3, now=0)  # none given: any bytes are a duplicate
    assert tr.classify("gw", 1, now=0, digest=b"ab" * 32).kind is SeqKind.DUPLICATE
    assert tr.classify("gw", 1, now=0, digest=b"ab" * 31 + b"ac").kind is SeqKind.CONFLICT
    assert tr.classify("gw", 2, now=0, digest=b"\x00" * 32).kind is SeqKind.DUPLICATE
    assert tr.classify("gw", 2, now=0, digest=b"\x00" * 31 + b"\x01").kind is SeqKind.CONFLICT
    assert tr.classify("gw", 3, now=0, digest=b"anything").kind is SeqKind.DUPLICATE


def test_lowering_the_gap_cap_gives_up_the_oldest_gaps_as_lost() -> None:
    tr = SequenceTracker()
    for s in (1, 3, 5, 10):
        tr.record("gw", s, now=0)
    assert tr.gaps("gw") == [(2, 2), (4, 4), (6, 9)]
    tr.max_gap_ranges = 1
    assert tr.gaps("gw") == [(6, 9)] and tr.lost == 2
    assert tr.record("gw", 7, now=0).kind is SeqKind.GAP_FILL  # split in two
    assert tr.gaps("gw") == [(6, 6), (8, 9)] and tr.lost == 2  # capped again with new gaps
    tr.record("gw", 12, now=0)
    assert tr.gaps("gw") == [(11, 11)] and tr.lost == 5
