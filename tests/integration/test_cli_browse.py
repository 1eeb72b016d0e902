"""`metrogate browse`: a technician lists an OPC UA server's nodes through a device of
the config, against the simulated server in its own process."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

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
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    sim = SimProcess(tmp_path_factory.mktemp("browse"), users={"operator": "s3cret"})
    yield sim
    sim.close()


def write(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "gw.yaml"
    path.write_text(
        "gateway: {id: gw, site: s}\n"
        "buses: [{id: line, port: /dev/null}]\n"
        "devices:\n"
        f"  - id: plc\n    driver: opcua\n    url: {url}\n"
        "    username: operator\n    password: s3cret\n"
        "    points: [{id: t, node: 'ns=2;s=Line1.Temp'}]\n"
        "  - {id: meter, driver: modbus_rtu, bus: line, points: [{id: v, ref: 40001}]}\n"
    )
    return path


def test_browse_the_objects_folder_and_below(
    server: SimProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, server.url)
    assert cli.main(["browse", "-c", str(path), "--device", "plc"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"plc at {server.url}: Objects, {len(out) - 3} node(s)"
    assert any(line.startswith("ns=2;s=Line1 ") and " 2:Line1 " in line for line in out)
    assert any(" object " in line for line in out)

    assert cli.main(["browse", "-c", str(path), "--device", "plc", "--path", "2:Line1"]) == 0
    rows = capsys.readouterr().out.splitlines()
    temp = next(r for r in rows if r.startswith("ns=2;s=Line1.Temp "))
    assert temp.split() == ["ns=2;s=Line1.Temp", "2:Line1/2:Temp", "variable", "Double", "21.5"]

    argv = ["browse", "-c", str(path), "--device", "plc", "--path", "2:Line1", "--json"]
    assert cli.main(argv) == 0
    entries = {e["node"]: e for e in json.loads(capsys.readouterr().out)}
    assert entries["ns=2;s=Line1.Name"]["data_type"] == "String"
    assert entries["ns=2;s=Line1.Name"]["value"] == "press 4"
    assert entries["ns=2;s=Line1.Running"]["value"] == "True"


def test_what_cannot_be_browsed(
    server: SimProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, server.url)
    assert cli.main(["browse", "-c", str(path), "--device", "nobody"]) == 2
    assert "no device 'nobody'" in capsys.readouterr().err
    assert cli.main(["browse", "-c", str(path), "--device", "meter"]) == 2
    assert "a Modbus RTU device has no address space to browse" in capsys.readouterr().err
    argv = ["browse", "-c", str(path), "--device", "plc", "--path", "2:Nowhere"]
    assert cli.main(argv) == 1
    assert "not found" in capsys.readouterr().err
    wrong = write(tmp_path, server.url)
    wrong.write_text(wrong.read_text().replace("password: s3cret", "password: nope"))
    assert cli.main(["browse", "-c", str(wrong), "--device", "plc"]) == 1
    err = capsys.readouterr().err
    assert "user name or password" in err and "nope" not in err
