"""Signed operator commands: the format, and the gateway's checks (gateway/operator.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.base import Quality
from gateway.config.models.metrology import PointMetrologyFields
from gateway.config.schema import CommandsConfig
from gateway.metrology.pipeline import DeviceMetrology
from gateway.operator import AlarmDesk, CommandGuard, NonceCache, Operator
from gateway.wire.commands import CommandError, build_command, parse_command
from gateway.wire.keys import generate_keypair, public_key_base64, public_key_from_text
from gateway.wire.reading import Reading
from gateway.wire.signing import Signer, key_id

T0 = 1_700_000_000_000_000
S = 1_000_000
ALARM = "d1/p/high"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


class Desk:
    """A real AlarmDesk over one real device with one high-limit alarm, recording its outputs."""

    def __init__(self, roles: tuple[str, ...] = ("ack", "shelve"), **settings: Any) -> None:
        self.clock = Clock()
        self.key = Ed25519PrivateKey.generate()
        self.signer = Signer.from_private_key(self.key)
        self.events: list[tuple[str, dict[str, Any], str]] = []
        self.emitted: list[dict[str, Any]] = []
        self.retained: list[bytes] = []
        fields = PointMetrologyFields.model_validate(
            {"rules": [{"kind": "high", "limit": 50, "severity": "high"}]}
        )
        self.metro = DeviceMetrology("d1", [("p", fields, "bar")], None, {}, self.clock)
        op = Operator(
            "alice", self.key.public_key(), key_id(self.key.public_key()), frozenset(roles)
        )
        guard = CommandGuard(
            gateway="gw1",
            site="s1",
            operators=[op],
            settings=CommandsConfig.model_validate(settings),
            clock=self.clock,
            record_event=self.record,
        )
        self.desk = AlarmDesk(
            gateway="gw1",
            site="s1",
            metrology=lambda: {"d1": self.metro},
            record_event=self.record,
            emit=lambda kind, recs: self.emitted.extend(recs),
            save_state=lambda dev: None,
            retain=lambda sub, payload: self.retained.append(payload),
            signer=Signer.from_private_key(Ed25519PrivateKey.generate()),
            clock=self.clock,
            guard=guard,
        )
        self.guard = guard

    def record(self, type_: str, data: dict[str, Any], *, source: str = "gateway") -> None:
        self.events.append((type_, data, source))

    def raise_alarm(self) -> None:
        r = Reading(self.clock.now, "d1", "p", 80.0, 80.0, "bar", Quality.GOOD)
        self.metro.process([r], self.clock.now)
        assert self.metro.active_alarms()[0]["state"] == "active_unacknowledged"

    def cmd(self, action: str = "ack", signer: Signer | None = None, **over: Any) -> bytes:
        kw: dict[str, Any] = {
            "action": action,
            "gateway": "gw1",
            "site": "s1",
            "alarm": ALARM,
            "operator": "alice",
            "ts_us": self.clock.now,
        }
        if action == "shelve":
            kw["duration_s"] = 60.0
        kw.update(over)
        return build_command(signer or self.signer, **kw)

    def state(self) -> str:
        return str(self.metro.active_alarms()[0]["state"])


def test_command_round_trip_and_form() -> None:
    signer = Signer.from_private_key(Ed25519PrivateKey.generate())
    payload = build_command(
        signer, action="shelve", gateway="g", site="s", alarm=ALARM, operator="bob",
        ts_us=T0, duration_s=30,
    )  # fmt: skip
    body = payload.rsplit(b"\n", 1)[0]
    cmd = parse_command(body)
    assert (cmd.action, cmd.alarm, cmd.operator, cmd.ts_us, cmd.duration_s) == (
        "shelve", ALARM, "bob", T0, 30.0,
    )  # fmt: skip
    assert len(cmd.nonce) == 32 and cmd.body() == body
    other = build_command(signer, action="ack", gateway="g", site="s", alarm=ALARM,
                          operator="bob", ts_us=T0)  # fmt: skip
    assert parse_command(other.rsplit(b"\n", 1)[0]).nonce != cmd.nonce


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"v":2,"type":"command"}',
        b'{"v":1,"type":"command","action":"delete"}',
        b'{"v":1,"type":"command","action":"ack","gateway":"g","site":"s","alarm":"x",'
        b'"operator":"o","ts":1,"nonce":"00000000000000000000000000000000"}',
        b'{"v":1,"type":"command","action":"shelve","gateway":"g","site":"s","alarm":"d/p/r",'
        b'"operator":"o","ts":1,"nonce":"00000000000000000000000000000000"}',
        b'{"v":1,"type":"command","action":"ack","gateway":"g","site":"s","alarm":"d/p/r",'
        b'"operator":"o","ts":1,"nonce":"short"}',
        b'{"v":1,"type":"command","action":"ack","gateway":"g","site":"s","alarm":"d/p/r",'
        b'"operator":"o","ts":1,"nonce":"00000000000000000000000000000000","x":1}',
    ],
)
def test_malformed_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(CommandError):
        parse_command(body)


def test_accepted_ack_names_the_operator_and_a_repeat_writes_nothing() -> None:
    d = Desk()
    d.raise_alarm()
    records = d.desk.command("ack", d.cmd())
    assert records and d.state() == "active_acknowledged"
    assert records[0]["user"] == "alice"
    ((type_, data, source),) = d.events
    assert (type_, source, data["operator"], data["alarm"]) == (
        "alarm_ack",
        "alice",
        "alice",
        ALARM,
    )
    assert d.emitted and d.retained
    assert d.desk.command("ack", d.cmd()) == []  # a new, valid command that changes nothing
    assert len(d.events) == 1 and d.guard.refused.total() == 0


def test_shelve_is_carried_out_and_recorded_with_its_duration() -> None:
    d = Desk()
    d.raise_alarm()
    assert d.desk.command("shelve", d.cmd("shelve", duration_s=120))
    assert d.metro.active_alarms()[0]["shelved"] is True
    assert d.events[0][0] == "alarm_shelve" and d.events[0][1]["duration"] == 120.0


def refusal(d: Desk, name: str, payload: bytes) -> str:
    before = d.guard.refused.copy()
    assert d.desk.command(name, payload) is None
    (kind,) = (d.guard.refused - before).keys()
    return kind


def test_every_kind_of_bad_command_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    d = Desk(roles=("ack",))
    d.raise_alarm()
    stranger = Signer.from_private_key(Ed25519PrivateKey.generate())
    good = d.cmd()
    body, sig = good.rsplit(b"\n", 1)
    tampered = body.replace(b'"alice"', b'"alicf"') + b"\n" + sig
    assert refusal(d, "ack", body) == "unsigned"
    assert refusal(d, "ack", body + b"\n{not json") == "malformed"
    assert refusal(d, "ack", d.cmd(signer=stranger)) == "unknown_operator"
    assert refusal(d, "ack", tampered) == "bad_signature"
    assert refusal(d, "ack", d.cmd(operator="mallory")) == "forged"
    assert refusal(d, "shelve", good) == "topic_mismatch"
    assert refusal(d, "ack", d.cmd(gateway="gw2")) == "wrong_gateway"
    assert refusal(d, "ack", d.cmd(ts_us=T0 - 31 * S)) == "out_of_window"
    assert refusal(d, "ack", d.cmd(ts_us=T0 + 31 * S)) == "out_of_window"
    assert refusal(d, "shelve", d.cmd("shelve")) == "not_permitted"
    assert refusal(d, "ack", d.cmd(alarm="d9/p/high")) == "unknown_alarm"
    assert refusal(d, "ack", d.cmd(alarm="d1/nope/high")) == "unknown_alarm"
    assert d.state() == "active_unacknowledged"
    assert d.desk.command("ack", good)  # the good one, once
    assert refusal(d, "ack", good) == "replayed"
    assert [e[0] for e in d.events].count("alarm_ack") == 1


def test_refusals_are_summarised_not_logged_one_by_one() -> None:
    d = Desk(refusal_summary=60)
    d.raise_alarm()
    unsigned = d.cmd().rsplit(b"\n", 1)[0]
    for _ in range(500):
        d.desk.command("ack", unsigned)
    summaries = [e for e in d.events if e[0] == "commands_refused"]
    assert len(summaries) == 1 and summaries[0][1]["counts"] == {"unsigned": 1}
    d.desk.tick(d.clock.now + 59 * S)
    assert len([e for e in d.events if e[0] == "commands_refused"]) == 1
    d.clock.now += 61 * S
    d.desk.tick(d.clock.now)
    summaries = [e for e in d.events if e[0] == "commands_refused"]
    assert len(summaries) == 2 and summaries[1][1]["counts"] == {"unsigned": 499}
    assert summaries[1][2] == "operator" and summaries[1][1]["last"]["kind"] == "unsigned"
    d.desk.tick(d.clock.now + 120 * S)  # nothing pending: nothing written
    assert len([e for e in d.events if e[0] == "commands_refused"]) == 2
    assert d.guard.refused["unsigned"] == 500


def test_nonce_cache_is_bounded_and_never_forgets_a_nonce_inside_the_window() -> None:
    cache = NonceCache(capacity=3, window_us=10 * S)
    for i in range(3):
        assert cache.add(f"n{i}", T0, T0)
    assert not cache.add("n3", T0, T0 + 5 * S)  # all three still inside the window
    assert "n0" in cache and len(cache) == 3
    assert cache.add("n3", T0 + 11 * S, T0 + 11 * S)  # the old ones expired and went
    assert len(cache) == 1 and "n0" not in cache


def test_full_nonce_cache_refuses_as_busy() -> None:
    d = Desk(nonce_cache=16)
    d.raise_alarm()
    for _ in range(16):
        d.desk.command("ack", d.cmd())
    assert refusal(d, "ack", d.cmd()) == "busy"
    d.clock.now += 31 * S
    assert d.desk.command("ack", d.cmd()) == []  # accepted again (and changes nothing)


def test_public_key_in_config_as_base64_or_pem_file(tmp_path: Path) -> None:
    pair = generate_keypair(tmp_path, name="alice")
    assert pair.private_path.name == "alice.key" and pair.public_path.name == "alice.pub"
    from_file = public_key_from_text(str(pair.public_path))
    from_text = public_key_from_text(public_key_base64(from_file))
    assert key_id(from_file) == key_id(from_text) == pair.kid
    assert json.dumps(public_key_base64(from_file))


def test_built_commands_match_the_json_schema() -> None:
    import jsonschema

    schema_path = Path(__file__).resolve().parents[2] / "gateway/wire/schema/command.schema.json"
    schema = json.loads(schema_path.read_text())
    signer = Signer.from_private_key(Ed25519PrivateKey.generate())
    for action, duration in (("ack", None), ("shelve", 10.0)):
        payload = build_command(
            signer, action=action, gateway="g", site="s", alarm=ALARM, operator="o",  # type: ignore[arg-type]
            ts_us=T0, duration_s=duration,
        )  # fmt: skip
        jsonschema.validate(json.loads(payload.rsplit(b"\n", 1)[0]), schema)
    bad = {"v": 1, "type": "command", "action": "ack", "gateway": "g", "site": "s",
           "alarm": ALARM, "operator": "o", "ts": 1, "nonce": "0" * 32, "duration": 5}  # fmt: skip
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    with pytest.raises(CommandError):
        parse_command(json.dumps(bad).encode())
