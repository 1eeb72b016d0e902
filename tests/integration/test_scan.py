"""`metrogate scan` against the simulators over real sockets and pseudo-terminals: what
answers is found, within its bounds, and the skeleton it writes is a config `check`
accepts."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.modbus_codec import DataType, PointSpec, Table
from gateway.cli import app as cli
from gateway.cli.scan import SETTINGS, run_scan, skeleton
from gateway.config.loader import load_config
from simulators.cjt188 import Cjt188Sim, SimMeter
from simulators.modbus_device import ModbusTcpSimulator, SimPoint
from simulators.opcua_server import OpcUaSim
from simulators.opcua_server import SimPoint as UaPoint
from simulators.pty import SimLine
from simulators.serial_instruments import Dlt645Sim, RtuBusSim, RtuSlave
from simulators.values import Constant


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    logger = logging.getLogger("asyncua")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


def _register(value: int) -> PointSpec:
    return PointSpec("r", Table.HOLDING, 0, DataType.UINT16)


def accepted(tmp_path: Path, text: str) -> list[str]:
    """The skeleton loads without a problem (what `metrogate check` does): its devices."""
    path = tmp_path / "found.yaml"
    path.write_text(text)
    return [d.id for d in load_config(path).config.devices]


async def test_modbus_tcp_units_over_a_range(tmp_path: Path) -> None:
    units = {
        1: [SimPoint(_register(0), Constant(1234))],
        5: [SimPoint(PointSpec("r", Table.HOLDING, 10, DataType.UINT16), Constant(1))],
    }
    async with ModbusTcpSimulator(units, holes={5: [(Table.HOLDING, 0, 10)]}) as sim:
        result = await run_scan(
            modbus_tcp=[f"127.0.0.1:{sim.port}"], units=range(1, 8), tcp_reply_s=0.2
        )
    found = {f.detail["unit"]: f for f in result.found}
    assert set(found) == {1, 5}
    assert found[1].detail["value"] == 1234
    assert found[5].detail["exception"] == 2  # it is there: register 0 is not its
    assert result.requests == 7 and result.stopped is None
    assert accepted(tmp_path, skeleton(result, tmp_path)) == [
        "modbus-127.0.0.1-1",
        "modbus-127.0.0.1-5",
    ]


async def test_modbus_rtu_line_settings_in_order_and_units(tmp_path: Path) -> None:
    slaves = {u: RtuSlave([_register(0)], {"r": 100 + u}) for u in (3, 7)}
    with SimLine(RtuBusSim(slaves), line=(19200, "E", 8, 1.0)) as line:
        result = await run_scan(
            serial=[line.path], units=range(1, 10), reply_s=0.05, protocols={"modbus_rtu"}
        )
    assert [(f.kind, f.detail["unit"], f.detail["line"]) for f in result.found] == [
        ("modbus_rtu", 3, (19200, "E", 8, 1)),
        ("modbus_rtu", 7, (19200, "E", 8, 1)),
    ]
    assert SETTINGS[1] == (19200, "E", 8, 1)
    assert result.requests == 2 * 9  # 9600 8E1 first, then 19200 8E1 where they answered
    text = skeleton(result, tmp_path)
    assert "baudrate: 19200" in text and "parity: E" in text
    assert len(accepted(tmp_path, text)) == 2


async def test_meters_by_broadcast_and_wildcard(tmp_path: Path) -> None:
    meter = Dlt645Sim({"123456789012": {0x00010000: 1234}})
    heat = Cjt188Sim({"00000012345678": SimMeter(0x20, {"current_heat": 12.5})})
    at_2400 = (2400, "E", 8, 1.0)
    with SimLine(meter, line=at_2400) as a, SimLine(heat, line=at_2400) as b:
        result = await run_scan(
            serial=[a.path, b.path], protocols={"dlt645", "cjt188"}, reply_s=0.05
        )
    found = [(f.kind, f.where, f.detail.get("address"), f.detail["line"]) for f in result.found]
    assert found == [
        ("dlt645", a.path, "123456789012", (2400, "E", 8, 1)),
        ("cjt188", b.path, "00000012345678", (2400, "E", 8, 1)),
    ]
    assert result.found[1].detail["meter_type"] == 0x20
    text = skeleton(result, tmp_path)
    assert "profile: cjt188-heat-meter" in text
    assert len(accepted(tmp_path, text)) == 2


async def test_two_meters_answering_a_broadcast_collide(tmp_path: Path) -> None:
    meters = Dlt645Sim({"000000000001": {}, "000000000002": {}})
    with SimLine(meters) as line:
        result = await run_scan(
            serial=[line.path], protocols={"dlt645"}, settings=SETTINGS[:1], reply_s=0.1
        )
    assert result.found == []
    assert any("no valid reply" in n for n in result.notes)


async def test_opcua_endpoints_and_a_skeleton_with_points(tmp_path: Path) -> None:
    points = [
        UaPoint("t", "3:Line1/3:Temp", value=21.5),
        UaPoint("n", "3:Line1/3:Count", data_type="Int32", value=3),
        UaPoint("r", "3:Line1/3:Running", data_type="Boolean", value=True),
    ]
    async with OpcUaSim(points, endpoints=["None/None", "Sign/Basic256Sha256"],
                        cert_dir=tmp_path / "srv") as sim:  # fmt: skip
        result = await run_scan(opcua=[sim.url])
    (found,) = result.found
    offered = {(e.mode, e.policy) for e in found.detail["endpoints"]}
    assert offered == {("None", "None"), ("Sign", "Basic256Sha256")}
    assert {e.node for e in found.detail["points"]} == {
        "ns=3;s=Line1.Temp", "ns=3;s=Line1.Count", "ns=3;s=Line1.Running",
    }  # fmt: skip
    text = skeleton(result, tmp_path)
    assert 'node: "ns=3;s=Line1.Running", kind: bool' in text
    assert accepted(tmp_path, text) == [f"opcua-127.0.0.1-{sim.port}-metrogate-sim"]


async def test_a_secured_only_server_gets_a_pki_beside_the_skeleton(tmp_path: Path) -> None:
    points = [UaPoint("t", "Line1/Temp", value=1.0)]
    async with OpcUaSim(points, endpoints=["SignAndEncrypt/Basic256Sha256"],
                        cert_dir=tmp_path / "srv") as sim:  # fmt: skip
        result = await run_scan(opcua=[sim.url])
    out = tmp_path / "site"
    out.mkdir()
    text = skeleton(result, out)
    assert (out / "pki" / "gateway-cert.pem").exists()
    assert list((out / "pki" / "trusted").iterdir())
    assert "mode: SignAndEncrypt" in text
    assert len(accepted(out, text)) == 1


async def test_the_budget_bounds_the_scan(tmp_path: Path) -> None:
    with SimLine(RtuBusSim({})) as line:
        result = await run_scan(serial=[line.path], units=range(1, 248), reply_s=0.02,
                                protocols={"modbus_rtu"}, max_requests=12)  # fmt: skip
        assert result.requests == 12 and result.stopped == "request budget reached (--max-requests)"
        # (a pty refuses to be set to the parity it had again: another setting this time)
        result = await run_scan(serial=[line.path], units=range(1, 248), reply_s=0.05,
                                protocols={"modbus_rtu"}, time_budget=0.5,
                                settings=[(19200, "N", 8, 1)])  # fmt: skip
    assert result.stopped == "time budget reached (--time-budget)"
    assert result.seconds < 10
    assert skeleton(result, tmp_path).endswith("devices: []   # nothing answered\n")


def test_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["scan"]) == 2
    assert "say what to scan" in capsys.readouterr().err
    assert cli.main(["scan", "--serial", "/dev/null", "--settings", "fast"]) == 2
    assert "BAUD-8E1" in capsys.readouterr().err
    slaves = {2: RtuSlave([_register(0)], {"r": 9})}
    out = tmp_path / "found.yaml"
    with SimLine(RtuBusSim(slaves)) as line:
        argv = ["scan", "--serial", line.path, "--units", "1-3", "--settings", "9600-8N1",
                "--protocols", "modbus_rtu", "--timeout", "0.05", "-o", str(out)]  # fmt: skip
        assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[0]
        == f"scan: modbus_rtu {line.path} at 9600 8N1: unit 2 answered: holding register 0 = 9"
    )
    assert lines[1].startswith("scan: 1 found, 3 request(s) in ")
    assert cli.main(["check", "-c", str(out)]) == 0
