"""The publisher against a real Mosquitto with TLS, client certificates and passwords;
MQTT 5; the Last Will when the gateway dies."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import os
import signal
import subprocess
import sys
from asyncio.subprocess import DEVNULL
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.config.loader import load_config
from gateway.wire.signing import SignatureError, split_payload
from simulators.modbus_device import ModbusTcpSimulator
from tests.eventually import eventually
from tests.integration.gwtest import line_config
from tests.integration.test_gateway_e2e import collecting, running, sim_units
from tests.services import Mosquitto, find_binary, free_port

pytestmark = pytest.mark.services

REPO = Path(__file__).resolve().parents[2]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_pki(d: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, in ``d``."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("test CA"))
        .issuer_name(_name("test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    _write(d / "ca", ca_key, ca)
    for name, san in (("server", True), ("client", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(f"test {name}"))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
        )
        if san:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        _write(d / name, key, builder.sign(ca_key, hashes.SHA256()))


@pytest.fixture
def secure_broker(tmp_path: Path) -> tuple[Mosquitto, int]:
    """A plain listener for the test's collector, and a TLS + client cert + password one."""
    pki = tmp_path / "pki"
    pki.mkdir()
    make_pki(pki)
    passwords = tmp_path / "passwd"
    subprocess.run(
        [find_binary("mosquitto_passwd"), "-b", "-c", str(passwords), "gw1", "s3cret"],
        check=True,
        capture_output=True,
    )
    tls_port = free_port()
    extra = (
        f"listener {tls_port} 127.0.0.1\n"
        f"cafile {pki / 'ca.crt'}\ncertfile {pki / 'server.crt'}\nkeyfile {pki / 'server.key'}\n"
        "require_certificate true\n"
        f"password_file {passwords}\nallow_anonymous false\n"
    )
    broker = Mosquitto(tmp_path / "mosquitto", extra=extra)
    broker.start()
    yield broker, tls_port  # type: ignore[misc]
    broker.stop()


def tls_config(tmp: Path, tls_port: int, sim_port: int, password: str) -> Path:
    loaded = line_config(tmp, tls_port, sim_port)
    pki = tmp / "pki"
    text = loaded.path.read_text().replace(
        f"url: 'mqtt://127.0.0.1:{tls_port}'",
        f"url: 'mqtts://127.0.0.1:{tls_port}', username: gw1, password: '${{MG_TEST_PASSWORD}}', "
        f"tls: {{ca: {pki / 'ca.crt'}, cert: {pki / 'client.crt'}, key: {pki / 'client.key'}}}",
    )
    loaded.path.write_text(text)
    os.environ["MG_TEST_PASSWORD"] = password
    return loaded.path


async def test_tls_with_client_certificate_and_password(
    secure_broker: tuple[Mosquitto, int], tmp_path: Path
) -> None:
    broker, tls_port = secure_broker
    async with ModbusTcpSimulator(sim_units()) as sim:
        loaded = load_config(tls_config(tmp_path, tls_port, sim.port, "s3cret"))
        assert loaded.config.mqtt.uses_tls
        async with collecting(broker, loaded) as col, running(loaded) as gw:
            await eventually(lambda: len(col.readings()) >= 100, "readings over TLS", within=20)
            assert gw.publisher is not None and gw.publisher.stats.connected
    assert not col.errors


async def test_wrong_password_is_refused_and_data_waits(
    secure_broker: tuple[Mosquitto, int], tmp_path: Path
) -> None:
    _, tls_port = secure_broker
    async with ModbusTcpSimulator(sim_units()) as sim:
        loaded = load_config(tls_config(tmp_path, tls_port, sim.port, "wrong"))
        async with running(loaded) as gw:
            assert gw.publisher is not None and gw.outbox is not None
            await eventually(lambda: gw.publisher.stats.failures >= 1, "a refusal", within=10)
            await eventually(lambda: gw.outbox.stats().batches >= 10, "data kept", within=10)
            assert not gw.publisher.stats.connected
            assert gw.publisher.stats.published == 0


async def test_mqtt5(mosquitto: Mosquitto, tmp_path: Path) -> None:
    async with ModbusTcpSimulator(sim_units()) as sim:
        loaded = line_config(tmp_path, mosquitto.port, sim.port, extra="")
        text = loaded.path.read_text().replace(
            "backoff_max: 1s}", "backoff_max: 1s, protocol: '5'}"
        )
        loaded.path.write_text(text)
        loaded = load_config(loaded.path)
        assert loaded.config.mqtt.protocol == "5"
        async with collecting(mosquitto, loaded) as col, running(loaded):
            await eventually(lambda: len(col.readings()) >= 100, "readings over MQTT 5", within=20)
    assert not col.errors


async def test_last_will_says_offline_when_the_gateway_dies(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    async with ModbusTcpSimulator(sim_units()) as sim:
        loaded = line_config(tmp_path, mosquitto.port, sim.port)
        text = loaded.path.read_text().replace("backoff_max: 1s}", "backoff_max: 1s, keepalive: 1}")
        loaded.path.write_text(text)
        loaded = load_config(loaded.path)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-m", "gateway", "run", "-c", str(loaded.path)]
        async with collecting(mosquitto, loaded) as col:
            proc = await asyncio.create_subprocess_exec(*cmd, env=env, stderr=DEVNULL)
            try:
                await eventually(
                    lambda: any(s["state"] == "online" for s in col.status), "birth", within=20
                )
            finally:
                proc.send_signal(signal.SIGKILL)
                async with asyncio.timeout(10):
                    await proc.wait()
            await eventually(
                lambda: bool(col.status) and col.status[-1]["state"] == "offline",
                "last will",
                within=10,
            )
    offline = col.status[-1]
    assert offline == {"v": 1, "state": "offline", "gateway": "gw1", "site": "test-site"}
    # plain JSON, unsigned by design (docs/wire.md): no signature line after the body
    raw = col.status_payloads[-1]
    assert json.loads(raw) == offline
    with pytest.raises(SignatureError) as unsigned:
        split_payload(raw)
    assert unsigned.value.kind == "unsigned"
    await asyncio.sleep(0)
