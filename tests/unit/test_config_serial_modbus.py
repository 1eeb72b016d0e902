"""Serial Modbus devices (RTU, ASCII) get every check a Modbus TCP device gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import app as cli

CONFIG = """\
gateway: {id: gw, site: s}
buses:
  - {id: line, port: /dev/ttyUSB0}
devices:
  - id: meter
    driver: DRIVER
    bus: line
    unit: 1
    holes:
      - {table: holding, start: 10, end: 19}
    points:
      - {id: ok, ref: 40001}
      - {id: inside, table: holding, address: 12}
"""


def check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    path = tmp_path / "gw.yaml"
    path.write_text(text)
    code = cli.main(["check", "-c", str(path)])
    return code, capsys.readouterr().err.replace(str(path), "FILE").splitlines()


@pytest.mark.parametrize("driver", ["modbus_rtu", "modbus_ascii"])
def test_a_point_inside_a_hole_is_a_located_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], driver: str
) -> None:
    code, err = check(tmp_path, CONFIG.replace("DRIVER", driver), capsys)
    assert code == 2
    assert err == [
        "FILE:13:38: devices[0].points[1].address: inside: address 12 lies in a hole the "
        "device rejects",
        "FILE: 1 problem(s); nothing started",
    ]


def test_overlapping_points_and_a_device_without_points(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = CONFIG.replace("DRIVER", "modbus_rtu").replace(
        "table: holding, address: 12", "ref: 40001, type: uint32"
    )
    text += "  - {id: empty, driver: modbus_ascii, bus: other, unit: 2}\n"
    text = text.replace("buses:\n", "buses:\n  - {id: other, port: /dev/ttyUSB1}\n")
    code, err = check(tmp_path, text, capsys)
    assert code == 2
    assert err == [
        "FILE:14:22: devices[0].points[1].ref: holding 0..1 overlaps point 'ok' (0..0)",
        "FILE:15:5: devices[1].points: a Modbus device needs at least one point",
        "FILE: 2 problem(s); nothing started",
    ]
