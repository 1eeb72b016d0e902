"""`metrogate check --online`: an OPC UA endpoint is tried before start, and what is
wrong with its config is reported at its place in the file. The server is the
simulated OPC UA server in its own process, over real sockets."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.opcua_security import create_application_certificate
from gateway.cli import app as cli
from tests.integration.test_opcua import SimProcess


@pytest.fixture(autouse=True)
def _quiet_asyncua() -> Iterator[None]:
    logger = logging.getLogger("asyncua")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SimProcess, Path]]:
    """One server for the module: secured and plain endpoints, a user, five points."""
    tmp = tmp_path_factory.mktemp("online")
    pki = tmp / "pki"
    pki.mkdir()
    create_application_certificate(pki / "gw.pem", pki / "gw.key", "urn:metrogate:test:gw")
    sim = SimProcess(
        tmp / "server",
        cert_dir=str(pki),
        endpoints=["None/None", "SignAndEncrypt/Basic256Sha256"],
        users={"operator": "s3cret"},
    )
    yield sim, pki
    sim.close()


def check(path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    path.write_text(text)
    code = cli.main(["check", "-c", str(path), "--online", "--online-timeout", "20"])
    captured = capsys.readouterr()
    assert "s3cret" not in captured.err + captured.out
    return code, captured.err.replace(str(path), "FILE").splitlines() + captured.out.replace(
        str(path), "FILE"
    ).splitlines()


def config(url: str, extra: str = "", points: str = "") -> str:
    points = points or (
        "      - {id: temp, node: 'ns=2;s=Line1.Temp'}\n"
        "      - {id: count, path: '2:Line1/2:Count'}\n"
    )
    return (
        "gateway: {id: gw, site: s}\ndevices:\n"
        f"  - id: plc\n    driver: opcua\n    url: {url}\n{extra}    points:\n{points}"
    )


def test_a_config_that_works(
    server: tuple[SimProcess, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim, _ = server
    extra = "    username: operator\n    password: s3cret\n    mode: subscribe\n"
    code, out = check(tmp_path / "gw.yaml", config(sim.url, extra), capsys)
    assert code == 0, out
    assert out[-1] == "FILE: online: 1 device(s) tried, no problems"


def test_nodes_that_do_not_exist_and_types_that_are_no_numbers(
    server: tuple[SimProcess, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim, _ = server
    points = (
        "      - {id: temp, node: 'ns=2;s=Line1.Temp'}\n"
        "      - {id: ghost, node: 'ns=2;s=Line1.Nothing'}\n"
        "      - {id: name, path: '2:Line1/2:Name'}\n"  # a String where a number is wanted
    )
    extra = "    username: operator\n    password: s3cret\n"
    code, out = check(tmp_path / "gw.yaml", config(sim.url, extra, points), capsys)
    assert code == 1
    assert out[0].startswith("FILE:10:21: devices[0].points[1].node: online: plc at ")
    assert "point ghost (ns=2;s=Line1.Nothing): node not readable (BadNodeIdUnknown)" in out[0]
    assert out[1].startswith("FILE:11:20: devices[0].points[2].path: online: ")
    assert "data type String cannot be a number" in out[1]
    assert out[-1] == "FILE: online: 1 device(s) tried, 2 problem(s)"


def test_a_wrong_password(
    server: tuple[SimProcess, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim, _ = server
    extra = "    username: operator\n    password: wrong\n"
    code, out = check(tmp_path / "gw.yaml", config(sim.url, extra), capsys)
    assert code == 1
    assert out[0].startswith("FILE:6:5: devices[0].username: online: plc at ")
    assert "user name or password" in out[0]


def test_an_untrusted_server_certificate_names_its_fingerprint(
    server: tuple[SimProcess, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim, pki = server
    other = tmp_path / "other"
    create_application_certificate(other / "c.pem", other / "k.pem", "urn:other", server=True)
    extra = (
        "    username: operator\n    password: s3cret\n    security:\n"
        "      mode: SignAndEncrypt\n      policy: Basic256Sha256\n"
        f"      certificate: {pki / 'gw.pem'}\n      private_key: {pki / 'gw.key'}\n"
        f"      trusted_servers: [{other / 'c.pem'}]\n"
    )
    code, out = check(tmp_path / "gw.yaml", config(sim.url, extra), capsys)
    assert code == 1
    assert out[0].startswith("FILE:13:7: devices[0].security.trusted_servers: online: plc at ")
    assert "is not in the trust list" in out[0] and "SHA-256" in out[0]
    # with the server's certificate trusted, the same device connects
    assert sim.certificate is not None
    text = config(sim.url, extra.replace(str(other / "c.pem"), str(sim.certificate)))
    code, out = check(tmp_path / "gw.yaml", text, capsys)
    assert code == 0, out


def test_an_endpoint_nobody_serves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    code, out = check(tmp_path / "gw.yaml", config(f"opc.tcp://127.0.0.1:{port}"), capsys)
    assert code == 1
    assert out[0].startswith("FILE:5:5: devices[0].url: online: plc at ")


def test_without_online_nothing_is_contacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(config("opc.tcp://192.0.2.1:4840"))  # TEST-NET: would never answer
    assert cli.main(["check", "-c", str(path)]) == 0
    assert "device(s) tried" not in capsys.readouterr().out


def test_a_subscription_the_server_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = SimProcess(tmp_path / "refusing", refuse_subscriptions=True)
    try:
        text = config(sim.url, "    mode: subscribe\n")
        code, out = check(tmp_path / "gw.yaml", text, capsys)
    finally:
        sim.close()
    assert code == 1
    assert out[0].startswith("FILE:6:5: devices[0].mode: online: plc at ")
    assert "refused the subscription (BadTooManySubscriptions)" in out[0]
