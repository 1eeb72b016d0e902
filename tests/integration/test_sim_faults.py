"""Simulators fail on request, for every simulated kind: a fault set in the config
(`sim:` of a device or point) or with `metrogate sim --fault` shows up as the bad
reading it should be, with its reason, through the real driver the registry builds —
and the other devices on the same line (or server) keep reading good."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from drivers.base import utc_now_us
from gateway.acquisition.build import build_drivers
from gateway.acquisition.poller import DevicePoller
from gateway.cli import app as cli
from gateway.cli.simulate import SimConfigError, apply_requests, run_simulators
from gateway.config.loader import load_config
from gateway.metrology.pipeline import DeviceMetrology
from gateway.wire.reading import Reading

HEAD = "gateway: {id: gw, site: s}\n"

Result = dict[str, dict[str, Reading]]


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    # asyncua logs lost connections with tracebacks; the tests provoke them
    logger = logging.getLogger("asyncua")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


async def poll(
    tmp_path: Path, text: str, *, faults: tuple[str, ...] = (), polls: int = 1
) -> list[Result]:
    """Serve the config's simulators (free ports, ptys) and poll every device ``polls``
    times through the drivers the registry builds; the readings of each round."""
    path = tmp_path / "gw.yaml"
    path.write_text(HEAD + text)
    loaded = load_config(path)
    apply_requests(loaded.config, list(faults), [])
    rounds: list[Result] = []
    async with run_simulators(loaded.config, free_ports=True), AsyncExitStack() as stack:
        drivers = await build_drivers(loaded, stack)
        pollers = {}
        for dev in loaded.config.devices:
            points = [(str(p.id), p, getattr(p, "unit", None)) for p in dev.points]
            metro = DeviceMetrology(dev.id, points, dev, {}, utc_now_us)
            pollers[dev.id] = DevicePoller(dev, drivers[dev.id], metro, lambda k, r: None)
        for _ in range(polls):
            await asyncio.sleep(0.15)  # streaming scales: a frame since the last poll
            result: Result = {}
            for device_id, poller in pollers.items():
                result[device_id] = {r.point: r for r in await poller.poll_once()}
            rounds.append(result)
    return rounds


def qualities(result: Result, device: str) -> set[tuple[str, str | None]]:
    return {
        (r.quality.value, r.reason.value if r.reason else None) for r in result[device].values()
    }


GOOD = {("good", None)}

# ---------------------------------------------------------------------------- Modbus TCP

TCP = """\
devices:
  - id: ok
    driver: modbus_tcp
    host: 127.0.0.1
    port: 1502
    unit: 1
    timeout: 300ms
    points: [{id: a, ref: 40001, sim: 7}]
  - id: bad
    driver: modbus_tcp
    host: 127.0.0.1
    port: 1502
    unit: 2
    timeout: 300ms
    FAULT
    points: [{id: b, ref: 40001, sim: 8}, {id: c, ref: 40002}]
"""


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("silent", ("bad", "no_communication")),
        ("'slow,0.8'", ("bad", "no_communication")),  # later than the 300 ms timeout
        ("'exception,2'", ("bad", "config_error")),  # illegal data address
        ("exception", ("bad", "device_failure")),  # 04: server device failure
        ("garbage", ("bad", "no_communication")),  # no reply the client can decode
        ("drop", ("bad", "no_communication")),
    ],
)
async def test_modbus_tcp_device_faults(
    tmp_path: Path, fault: str, expected: tuple[str, str]
) -> None:
    (result,) = await poll(tmp_path, TCP.replace("FAULT", f"sim: {{fault: {fault}}}"))
    assert qualities(result, "bad") == {expected}
    assert qualities(result, "ok") == GOOD and result["ok"]["a"].value == 7


async def test_value_faults_stuck_and_step_from_the_command_line(tmp_path: Path) -> None:
    text = TCP.replace("FAULT", "").replace(
        "{id: c, ref: 40002}", "{id: c, ref: 40002, sim: {kind: ramp, start: 0, rate: 20}}"
    )
    rounds = await poll(tmp_path, text, faults=("bad:c=stuck", "ok:a=step,5"), polls=3)
    values = [r["bad"]["c"].value for r in rounds]
    assert len(set(values)) == 1  # the ramp does not move a stuck value
    assert {r["ok"]["a"].value for r in rounds} == {12}  # 7 + 5
    assert {r["bad"]["b"].value for r in rounds} == {8}


# ---------------------------------------------------------------------------- serial Modbus

RTU = """\
buses: [{id: line, port: /dev/null, timeout: 200ms, quarantine_after: 100}]
devices:
  - {id: ok, driver: DRIVER, bus: line, unit: 1, points: [{id: a, ref: 40001, sim: 3}]}
  - {id: bad, driver: DRIVER, bus: line, unit: 2, sim: {fault: FAULT}, points: [{id: b, ref: 40001}]}
"""  # noqa: E501


@pytest.mark.parametrize(
    ("driver", "fault", "expected"),
    [
        ("modbus_rtu", "silent", ("bad", "no_communication")),
        ("modbus_rtu", "'slow,0.5'", ("bad", "no_communication")),
        ("modbus_rtu", "'exception,3'", ("bad", "config_error")),
        ("modbus_rtu", "bad_checksum", ("bad", "no_communication")),
        ("modbus_rtu", "wrong_address", ("bad", "no_communication")),
        ("modbus_rtu", "noise", ("good", None)),  # noise before a good frame is skipped
        ("modbus_ascii", "garbage", ("bad", "no_communication")),
        ("modbus_ascii", "truncated", ("bad", "no_communication")),
        ("modbus_ascii", "exception", ("bad", "device_failure")),
    ],
)
async def test_serial_modbus_device_faults(
    tmp_path: Path, driver: str, fault: str, expected: tuple[str, str]
) -> None:
    (result,) = await poll(tmp_path, RTU.replace("DRIVER", driver).replace("FAULT", fault))
    assert qualities(result, "bad") == {expected}
    assert qualities(result, "ok") == GOOD and result["ok"]["a"].value == 3


# ---------------------------------------------------------------------------- scales

SCALES = """\
buses:
  - {id: lab, port: /dev/sim-lab, timeout: 300ms, quarantine_after: 100}
  - {id: floor, port: /dev/sim-floor, bytesize: 7, timeout: 300ms}
  - {id: other, port: /dev/sim-other, timeout: 300ms}
devices:
  - {id: balance, driver: mtsics, bus: lab, BALANCE points: [{id: mass, unit: g, sim: 250.5}]}
  - {id: scale, driver: toledo_continuous, bus: floor, poll: 100ms, SCALE points: [{id: weight, sim: 3.25}]}
  - {id: ok, driver: modbus_rtu, bus: other, unit: 1, points: [{id: a, ref: 40001, sim: 3}]}
"""  # noqa: E501


async def test_balance_and_scale_values_from_sim(tmp_path: Path) -> None:
    text = SCALES.replace("BALANCE ", "").replace("SCALE ", "")
    (result,) = await poll(tmp_path, text)
    assert result["balance"]["mass"].value == 250.5
    assert result["scale"]["weight"].value == 3.25
    assert all(qualities(result, d) == GOOD for d in result)


@pytest.mark.parametrize(
    ("balance", "scale", "expected_balance", "expected_scale"),
    [
        ("exception", "silent", ("bad", "device_failure"), ("bad", "no_communication")),
        ("silent", "bad_checksum", ("bad", "no_communication"), ("bad", "no_communication")),
        ("garbage", "garbage", ("bad", "no_communication"), ("bad", "no_communication")),
    ],
)
async def test_balance_and_scale_faults(
    tmp_path: Path,
    balance: str,
    scale: str,
    expected_balance: tuple[str, str],
    expected_scale: tuple[str, str],
) -> None:
    text = SCALES.replace("BALANCE", f"sim: {{fault: {balance}}},").replace(
        "SCALE", f"sim: {{fault: {scale}}},"
    )
    (result,) = await poll(tmp_path, text)
    assert qualities(result, "balance") == {expected_balance}
    assert qualities(result, "scale") == {expected_scale}
    assert qualities(result, "ok") == GOOD


# ---------------------------------------------------------------------------- meters

DLT645 = """\
buses: [{id: meters, port: /dev/null, baudrate: 2400, timeout: 300ms, quarantine_after: 100}]
devices:
  - id: ok
    driver: dlt645
    bus: meters
    address: "000000000001"
    points: [{id: energy, di: "00010000", sim: 1234.5}]
  - id: bad
    driver: dlt645
    bus: meters
    address: "000000000002"
    sim: {fault: FAULT}
    points: [{id: energy, di: "00010000"}, {id: voltage, di: "02010100"}]
"""


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("exception", ("bad", "config_error")),  # error 02H: no such data
        ("'exception,1'", ("bad", "device_failure")),  # error 01H: other error
        ("truncated", ("bad", "no_communication")),
        ("silent", ("bad", "no_communication")),
    ],
)
async def test_dlt645_meter_faults(tmp_path: Path, fault: str, expected: tuple[str, str]) -> None:
    (result,) = await poll(tmp_path, DLT645.replace("FAULT", fault))
    assert qualities(result, "bad") == {expected}
    assert qualities(result, "ok") == GOOD and result["ok"]["energy"].value == 1234.5


CJT188 = """\
buses: [{id: water, port: /dev/null, baudrate: 2400, timeout: 300ms, quarantine_after: 100}]
devices:
  - id: ok
    driver: cjt188
    bus: water
    address: "00000000000001"
    meter_type: cold_water
    points: [{id: volume, field: cumulative_flow, sim: 42.5}, {id: closed, field: valve_closed, sim: true}]
  - id: bad
    driver: cjt188
    bus: water
    address: "00000000000002"
    meter_type: cold_water
    sim: {fault: FAULT}
    points: [{id: volume, field: cumulative_flow}]
"""  # noqa: E501


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("exception", ("bad", "device_failure")),  # an abnormal reply C1H
        ("wrong_address", ("bad", "no_communication")),
        ("bad_checksum", ("bad", "no_communication")),
        ("'slow,0.6'", ("bad", "no_communication")),
        ("noise", ("good", None)),
    ],
)
async def test_cjt188_meter_faults(tmp_path: Path, fault: str, expected: tuple[str, str]) -> None:
    (result,) = await poll(tmp_path, CJT188.replace("FAULT", fault))
    assert qualities(result, "bad") == {expected}
    assert qualities(result, "ok") == GOOD
    ok = result["ok"]
    assert ok["volume"].value == 42.5 and ok["closed"].value is True
    assert ok["volume"].flags == ["valve_closed"]  # the status the meter reports


# ---------------------------------------------------------------------------- OPC UA

OPCUA = """\
devices:
  - id: ok
    driver: opcua
    url: opc.tcp://127.0.0.1:4840/line
    timeout: 500ms
    points:
      - {id: temp, node: "ns=2;s=Line1.Temp", sim: 21.5}
      - {id: pressure, path: "3:Line1/3:Pressure", sim: {value: 2.5, STATUS}}
  - id: bad
    driver: opcua
    url: opc.tcp://127.0.0.1:4840/line
    timeout: 500ms
    FAULT
    points: [{id: speed, node: "ns=2;s=Line1.Speed", sim: 12}]
"""


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("sim: {fault: silent}", ("bad", "no_communication")),  # its reads are not answered
        ("sim: {fault: exception}", ("bad", "device_failure")),  # BadDeviceFailure
        ("sim: {fault: 'status,BadOutOfService'}", ("bad", "out_of_service")),
    ],
)
async def test_opcua_device_faults_on_a_shared_server(
    tmp_path: Path, fault: str, expected: tuple[str, str]
) -> None:
    (result,) = await poll(tmp_path, OPCUA.replace("FAULT", fault).replace(", STATUS", ""))
    assert qualities(result, "bad") == {expected}
    assert qualities(result, "ok") == GOOD and result["ok"]["temp"].value == 21.5


async def test_opcua_point_status_costs_only_its_point(tmp_path: Path) -> None:
    text = OPCUA.replace("FAULT", "").replace("STATUS", "status: BadSensorFailure")
    (result,) = await poll(tmp_path, text, faults=("bad:speed=status,UncertainLastUsableValue",))
    ok = result["ok"]
    assert (ok["pressure"].quality.value, ok["pressure"].reason) == ("bad", "sensor_failure")
    assert ok["temp"].quality.value == "good"
    speed = result["bad"]["speed"]
    assert (speed.quality.value, speed.reason, speed.value) == (
        "uncertain",
        "last_usable_value",
        12.0,
    )


async def test_opcua_dropped_sessions(tmp_path: Path) -> None:
    text = OPCUA.replace("FAULT", "sim: {fault: 'drop,0.3'}").replace(", STATUS", "")
    rounds = await poll(tmp_path, text, polls=8)
    seen = set().union(*(qualities(r, "bad") for r in rounds))
    assert ("bad", "no_communication") in seen  # every session of the server is cut
    assert ("good", None) in seen  # and the driver reconnects in between


# ---------------------------------------------------------------------------- bad requests


async def test_a_fault_the_simulator_cannot_show_names_device_and_kind(tmp_path: Path) -> None:
    with pytest.raises(SimConfigError, match=r"devices scale sim: fault 'exception' is not"):
        await poll(
            tmp_path, SCALES.replace("BALANCE ", "").replace("SCALE", "sim: {fault: exception},")
        )
    with pytest.raises(SimConfigError, match="no device 'nobody'"):
        await poll(
            tmp_path,
            SCALES.replace("BALANCE ", "").replace("SCALE ", ""),
            faults=("nobody=silent",),
        )
    with pytest.raises(SimConfigError, match="kind must be one of"):
        await poll(tmp_path, RTU.replace("DRIVER", "modbus_rtu").replace("FAULT", "sideways"))


def test_metrogate_sim_locates_a_bad_sim_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(HEAD + RTU.replace("DRIVER", "modbus_rtu").replace("FAULT", "'slow,x'"))
    assert cli.main(["sim", "-c", str(path), "--free-ports"]) == 2
    err = capsys.readouterr().err.replace(str(path), "FILE").splitlines()
    assert err[0].startswith("FILE:5:55: devices[1].sim: devices bad sim: fault: slow: 'delay'")
    assert err[1] == "FILE: nothing simulated"
    path.write_text(HEAD + RTU.replace("DRIVER", "modbus_rtu").replace("FAULT", "silent"))
    argv = ["sim", "-c", str(path), "--free-ports", "--fault", "ok:a=drift"]
    assert cli.main(argv) == 2
    assert "'rate'" in capsys.readouterr().err
