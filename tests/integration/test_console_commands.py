"""The console publishes signed commands through a real Mosquitto with passwords and the
deploy ACL: as the broker's ``operator`` user they reach the gateway's topic, with the
ingest's own user (which may not write ``cmd/``) they do not."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.wire.commands import build_command, parse_command
from gateway.wire.keys import load_signer
from supervision.config import load_config
from supervision.console.app import send_command
from tests.console_support import console_yaml
from tests.eventually import eventually
from tests.services import Mosquitto, find_binary, free_port

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[2]


def broker_with_acl(tmp: Path) -> tuple[Mosquitto, int]:
    passwords = tmp / "passwd"
    for i, (user, pw) in enumerate((("ingest", "i-pass"), ("operator", "o-pass"))):
        subprocess.run(
            [find_binary("mosquitto_passwd"), "-b", *(["-c"] if i == 0 else []),
             str(passwords), user, pw],
            check=True, capture_output=True,
        )  # fmt: skip
    auth_port = free_port()
    extra = (
        f"listener {auth_port} 127.0.0.1\npassword_file {passwords}\nallow_anonymous false\n"
        f"acl_file {ROOT / 'deploy' / 'mosquitto' / 'acl'}\n"
    )
    broker = Mosquitto(tmp / "mosquitto", extra=extra)
    broker.start()
    return broker, auth_port


async def test_commands_go_out_as_the_operator_user(tmp_path: Path) -> None:
    broker, auth_port = broker_with_acl(tmp_path)
    got: list[bytes] = []
    sub = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    sub.on_message = lambda _c, _u, m: got.append(bytes(m.payload))
    try:
        sub.connect("127.0.0.1", broker.port)  # the open listener: sees every topic
        sub.subscribe("metrogate/v1/+/+/cmd/#", qos=1)
        sub.loop_start()
        store = f"{{kind: sqlite, path: {tmp_path / 's.db'}}}"
        operator = "  mqtt_username: operator\n  mqtt_password: o-pass\n"
        sent = []
        for user_block in ("", operator):  # the ingest's user first, then the operator
            path = console_yaml(tmp_path, store, mqtt_port=auth_port, extra=user_block)
            text = path.read_text().replace(
                "client_id: console-test}",
                "client_id: console-test, username: ingest, password: i-pass}",
            )
            path.write_text(text)
            cfg = load_config(path)
            payload = build_command(
                load_signer(tmp_path / "ops" / "alice.key"), action="ack", gateway="gw1",
                site="s1", alarm="d/p/high", operator="alice", ts_us=time.time_ns() // 1000,
            )  # fmt: skip
            await send_command(cfg, "s1", "gw1", "ack", payload)  # returns after the PUBACK
            sent.append(payload)
        await eventually(lambda: bool(got), "the operator's command", within=10)
        # the broker routes a message before it acknowledges it: had the first been
        # allowed, it would have arrived before the second
        assert got == [sent[1]]
        assert parse_command(got[0].rsplit(b"\n", 1)[0]).operator == "alice"
    finally:
        sub.loop_stop()
        sub.disconnect()
        broker.stop()
