"""`driver: opcua`: what `check` knows about an OPC UA device before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.opcua_security import create_application_certificate
from gateway.cli import app as cli
from gateway.common.types import secret_values
from gateway.config.loader import load_config
from gateway.config.models.registry import KINDS, BuildContext

HEAD = "gateway: {id: gw, site: s}\ndevices:\n"


def check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    path = tmp_path / "gw.yaml"
    path.write_text(text)
    code = cli.main(["check", "-c", str(path)])
    captured = capsys.readouterr()
    return code, captured.err.replace(str(path), "FILE").replace(str(tmp_path), "DIR").splitlines()


def device(extra: str = "", points: str = "[{id: t, node: 'ns=2;s=Line1.Temp'}]") -> str:
    return (
        "  - id: plc\n    driver: opcua\n    url: opc.tcp://127.0.0.1:4840/x\n"
        f"    points: {points}\n" + extra
    )


def test_a_valid_device_and_its_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLC_PASSWORD", "s3cret")
    path = tmp_path / "gw.yaml"
    path.write_text(
        HEAD
        + device(
            "    username: gateway\n    password: ${PLC_PASSWORD}\n    mode: subscribe\n",
            "[{id: t, path: '3:Line1/3:Temp', sampling_interval: 200ms, queue_size: 5,"
            " deadband: {kind: percent, value: 2}}]",
        )
    )
    loaded = load_config(path)
    dev = loaded.config.devices[0]
    assert secret_values(loaded.config) == ["s3cret"]  # masked in every log line
    driver = KINDS["opcua"].build(dev, BuildContext(loaded.plans["plc"], lambda: 0))
    assert driver.endpoint == "opc.tcp://127.0.0.1:4840/x"
    (point,) = loaded.plans["plc"]
    assert (point.sampling_interval, point.queue_size, point.deadband.value) == (0.2, 5, 2.0)
    assert KINDS["opcua"].describe(dev, loaded.plans["plc"]) == driver.describe_plan()


def test_points_and_endpoints_are_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = HEAD + device(
        points="\n      - {id: a, node: 'ns=2;q=oops'}"
        "\n      - {id: b, node: 'ns=2;s=A', path: '2:A'}"
        "\n      - {id: c, path: ''}"
        "\n      - {id: d, node: 'ns=2;s=D', kind: bool, scale: 2}"
        "\n      - {id: e, node: 'ns=2;s=E', deadband: {kind: percent, value: 120}}",
    )
    text += "  - {id: x, driver: opcua, url: 'opc.tcp://user:pw@host:4840', points: []}\n"
    text += "  - {id: y, driver: opcua, url: 'http://host', points: []}\n"
    code, err = check(tmp_path, text, capsys)
    assert code == 2
    assert err == [
        "FILE:7:17: devices[0].points[0].node: not a NodeId: write ns=N;s=NAME, ns=N;i=NUMBER, "
        "ns=N;g=GUID or ns=N;b=BASE64 (got 'ns=2;q=oops')",
        "FILE:8:9: devices[0].points[1]: give node (a NodeId) or path (a browse path), exactly one",
        "FILE:9:17: devices[0].points[2].path: an empty browse path: write browse names, e.g. "
        "2:Line1/2:Temp (got '')",
        "FILE:10:9: devices[0].points[3]: scale and offset apply to numbers, not to a bool point",
        "FILE:11:35: devices[0].points[4].deadband: a percent deadband is at most 100, not 120",
        # a password in the URL is never echoed
        "FILE:12:5: devices[1]: url: the endpoint carries a user name or password: put them in "
        "username and password (from ${ENV} or ${file:...}), not in the URL",
        "FILE:13:28: devices[2].url: not an OPC UA endpoint: write opc.tcp://host[:port][/path] "
        "(got 'http://host')",
        "FILE: 7 problem(s); nothing started",
    ]


def test_a_password_needs_a_user(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = check(tmp_path, HEAD + device("    password: ${file:pw}\n"), capsys)
    assert code == 2
    assert any("cannot read secret file" in line for line in err)
    (tmp_path / "pw").write_text("s3cret\n")
    code, err = check(tmp_path, HEAD + device("    password: ${file:pw}\n"), capsys)
    assert err[0] == "FILE:3:5: devices[0]: a password needs a username"
    assert "s3cret" not in "".join(err)


def test_security_settings_that_cannot_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = HEAD + device("    security: {mode: Sign, policy: None}\n")
    text += device("    security: {mode: SignAndEncrypt, policy: Basic256Sha256}\n").replace(
        "id: plc", "id: p2"
    )
    text += device("    security: {certificate: c.pem}\n").replace("id: plc", "id: p3")
    code, err = check(tmp_path, text, capsys)
    assert code == 2
    assert err[:3] == [
        "FILE:7:5: devices[0].security: security mode Sign goes with a policy other than None, "
        "not None",
        "FILE:12:5: devices[1].security: security mode SignAndEncrypt needs certificate and "
        "private_key",
        "FILE:17:5: devices[2].security: certificate needs private_key: the certificate and "
        "its key go together",
    ]


def test_the_security_files_are_checked_where_they_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = tmp_path / "pki"
    create_application_certificate(pki / "gw.pem", pki / "gw.key", "urn:test:gw")
    create_application_certificate(pki / "other.pem", pki / "other.key", "urn:test:other")
    (pki / "trusted").mkdir()
    (pki / "junk.pem").write_text("not a certificate")
    secured = (
        "    security:\n      mode: SignAndEncrypt\n      policy: Basic256Sha256\n"
        "      certificate: pki/gw.pem\n      private_key: {key}\n"
        "      trusted_servers: {trust}\n"
    )
    text = HEAD
    text += device(secured.format(key="pki/other.key", trust="[pki/trusted, pki/junk.pem]"))
    text += device(secured.format(key="pki/gw.key", trust="[pki/missing]")).replace(
        "id: plc", "id: p2"
    )
    text += device(secured.format(key="pki/gw.key", trust="[]")).replace("id: plc", "id: p3")
    code, err = check(tmp_path, text, capsys)
    assert code == 2
    assert err == [
        f"FILE:11:7: devices[0].security.private_key: {tmp_path}/pki/other.key: not the key "
        f"of the certificate {tmp_path}/pki/gw.pem".replace(str(tmp_path), "DIR"),
        "FILE:12:38: devices[0].security.trusted_servers[1]: DIR/pki/junk.pem: not a PEM or "
        + err[1].split("not a PEM or ", 1)[1],
        "FILE:22:25: devices[1].security.trusted_servers[0]: DIR/pki/missing: no such file "
        "or folder",
        "FILE:32:7: devices[2].security.trusted_servers: security mode SignAndEncrypt trusts "
        "no server: add the server's certificate (metrogate scan --opcua URL shows its "
        "fingerprint)",
        "FILE: 4 problem(s); nothing started",
    ]


def test_relative_paths_are_the_config_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = tmp_path / "site" / "pki"
    create_application_certificate(pki / "gw.pem", pki / "gw.key", "urn:test:gw")
    create_application_certificate(pki / "srv.pem", pki / "srv.key", "urn:test:srv", server=True)
    path = tmp_path / "site" / "gw.yaml"
    path.write_text(
        HEAD
        + device(
            "    security:\n      mode: Sign\n      policy: Aes128_Sha256_RsaOaep\n"
            "      certificate: pki/gw.pem\n      private_key: pki/gw.key\n"
            "      trusted_servers: [pki/srv.pem]\n"
        )
    )
    monkeypatch.chdir(tmp_path)  # not the config file's directory
    sec = load_config(Path("site/gw.yaml")).config.devices[0].security
    assert sec.certificate == pki / "gw.pem" and sec.private_key == pki / "gw.key"
    assert sec.trusted_servers == [pki / "srv.pem"]


def test_warnings_for_commissioning_and_subscription_settings_on_a_poll(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = HEAD + device(
        "    security: {accept_unknown_server: true}\n",
        "[{id: t, node: 'ns=2;s=T', queue_size: 3}]",
    )
    code, err = check(tmp_path, text, capsys)
    assert code == 0
    assert err == [
        "FILE:6:40: devices[0].points[0].queue_size: warning: queue_size applies to mode: "
        "subscribe; this device polls",
        "FILE:7:16: devices[0].security.accept_unknown_server: warning: any server certificate "
        "is accepted: use this while commissioning only, then put the server's certificate in "
        "trusted_servers",
    ]


def test_a_device_without_points(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = check(tmp_path, HEAD + device(points="[]"), capsys)
    assert code == 2
    assert err[0] == "FILE:6:5: devices[0].points: an OPC UA device needs at least one point"
