"""One serial line, one Modbus transmission mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.loader import ConfigError, load_config

CONFIG = """\
gateway: {id: gw, site: s}
buses:
  - {id: line, port: /dev/ttyUSB0}
devices:
  - id: a
    driver: modbus_rtu
    bus: line
    unit: 1
    points: [{id: p, ref: 40001}]
  - id: b
    driver: modbus_ascii
    bus: line
    unit: 2
    points: [{id: p, ref: 40001}]
"""


def test_rtu_and_ascii_on_one_line_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(CONFIG)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert [str(p) for p in err.value.problems] == [
        f"{path}:11:5: devices[1].driver: bus 'line' mixes Modbus RTU and Modbus ASCII: "
        "every device on one serial line must use the same transmission mode"
    ]


def test_each_mode_on_its_own_line_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    text = CONFIG.replace("buses:\n", "buses:\n  - {id: other, port: /dev/ttyUSB1}\n")
    path.write_text(
        text.replace(
            "    driver: modbus_ascii\n    bus: line", "    driver: modbus_ascii\n    bus: other"
        )
    )
    assert len(load_config(path).config.devices) == 2
