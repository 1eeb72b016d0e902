"""`driver: cjt188`: what `check` knows about CJ/T 188 meters before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import app as cli
from gateway.config.loader import load_config
from gateway.config.models.cjt188 import parse_meter_type

HEAD = """\
gateway: {id: gw, site: s}
buses:
  - {id: line, port: /dev/ttyUSB0, baudrate: 2400}
  - {id: other, port: /dev/ttyUSB1, baudrate: 2400}
devices:
"""


def check(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    path = tmp_path / "gw.yaml"
    path.write_text(text)
    code = cli.main(["check", "-c", str(path)])
    return code, capsys.readouterr().err.replace(str(path), "FILE").splitlines()


@pytest.mark.parametrize(
    ("given", "code"),
    [("10", 0x10), ("10H", 0x10), ("0x20", 0x20), (21, 0x21), ("gas", 0x30), ("Heat", 0x20)],
)
def test_meter_types_as_the_standard_writes_them(given: object, code: int) -> None:
    assert parse_meter_type(given) == code


@pytest.mark.parametrize("given", ["50", "1A", "water", True, 5, "0x100", None])
def test_what_is_not_a_meter_type(given: object) -> None:
    with pytest.raises(ValueError, match="meter type"):
        parse_meter_type(given)


def test_a_valid_meter_and_its_defaults(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        HEAD + "  - {id: w, driver: cjt188, bus: line, address: 12345678, meter_type: '10',\n"
        "     points: [{id: v, field: cumulative_flow}]}\n"
    )
    dev = load_config(path).config.devices[0]
    assert (dev.address, dev.meter_type, dev.di_order, dev.preamble) == (
        "00000012345678",
        0x10,
        "low_first",
        2,
    )


def test_syntax_errors_are_located(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = HEAD + (
        "  - id: w\n"
        "    driver: cjt188\n"
        "    bus: line\n"
        "    address: 1234567890123X\n"
        "    meter_type: '55'\n"
        "    preamble: 7\n"
        "    status_bits:\n"
        "      - {bit: 2, name: low}\n"
        "    points: [{id: v, field: cumulative_flow}]\n"
    )
    code, err = check(tmp_path, text, capsys)
    assert code == 2
    assert err[0].startswith("FILE:9:5: devices[0].address: meter address '1234567890123X'")
    assert err[1].startswith("FILE:10:5: devices[0].meter_type: meter type '55'")
    assert err[2].startswith("FILE:11:5: devices[0].preamble:")
    assert err[3].startswith("FILE:13:10: devices[0].status_bits[0].bit:")
    assert err[4] == "FILE: 4 problem(s); nothing started"


def test_points_are_checked_against_the_meter_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = HEAD + (
        "  - id: w\n"
        "    driver: cjt188\n"
        "    bus: line\n"
        "    address: '00000012345678'\n"
        "    meter_type: cold_water\n"
        "    points:\n"
        "      - {id: v, field: cumulative_flow, unit: kWh}\n"
        "  - id: h\n"
        "    driver: cjt188\n"
        "    bus: other\n"
        "    address: '00000012345679'\n"
        "    meter_type: heat\n"
        "    points:\n"
        "      - {id: t, field: supply_temperature}\n"
        "      - {id: f, field: flow_sensor_fault}\n"
        "  - {id: e, driver: cjt188, bus: other, address: '00000012345670', meter_type: gas}\n"
    )
    code, err = check(tmp_path, text, capsys)
    assert code == 2
    assert err[0] == "FILE:12:41: devices[0].points[0].unit: point 'v': kWh is not a unit of volume"
    assert err[1].startswith(
        "FILE:20:17: devices[1].points[1].field: point 'f': field 'flow_sensor_fault' is not "
        "read from a heat meter (one of "
    )
    assert err[2] == "FILE:21:5: devices[2].points: a CJ/T 188 meter needs at least one point"


def test_addresses_on_a_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    meter = "  - {{id: {id}, driver: cjt188, bus: {bus}, address: '{a}', meter_type: '10', points: [{{id: v, field: cumulative_flow}}]}}\n"  # noqa: E501
    text = HEAD + "".join(
        meter.format(id=i, bus=b, a=a)
        for i, b, a in [
            ("a", "line", "00000012345678"),
            ("b", "line", "00000012345678"),  # the same address twice
            ("c", "line", "AAAAAAAAAAAAAA"),  # a wildcard among other meters
            ("d", "other", "AAAAAAAAAAAAAA"),  # alone on its line: fine
        ]
    )
    code, err = check(tmp_path, text, capsys)
    assert code == 2
    assert err == [
        "FILE:7:40: devices[1].address: same meter address as devices[0] on bus 'line': "
        "replies could not be told apart",
        "FILE:8:40: devices[2].address: the wildcard address answers for the one meter of a "
        "line, but bus 'line' has other CJ/T 188 meters (devices[0]): give this meter its "
        "address",
        "FILE: 2 problem(s); nothing started",
    ]


def test_two_wildcard_meters_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    meter = "  - {{id: {id}, driver: cjt188, bus: line, address: AAAAAAAAAAAAAA, meter_type: '{t}', points: [{{id: v, field: cumulative_flow}}]}}\n"  # noqa: E501
    text = HEAD + meter.format(id="a", t="10") + meter.format(id="b", t="20")
    code, err = check(tmp_path, text, capsys)
    assert code == 2
    assert [e.split(": ", 2)[1] for e in err[:-1]] == ["devices[0].address", "devices[1].address"]
