"""load_config_compact gives what load_config gives, errors included."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.loader import ConfigError, load_config, load_config_compact

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"


def test_same_result_as_in_process() -> None:
    direct = load_config(EXAMPLES / "demo.yaml")
    compact = load_config_compact(EXAMPLES / "demo.yaml")
    assert compact.config == direct.config
    assert compact.sha256 == direct.sha256
    assert [str(w) for w in compact.warnings] == [str(w) for w in direct.warnings]


def test_errors_come_back_located(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("gateway: {id: gw, site: s}\ndevices:\n  - {id: d, driver: nope}\n")
    with pytest.raises(ConfigError) as direct:
        load_config(bad)
    with pytest.raises(ConfigError) as compact:
        load_config_compact(bad)
    assert [str(p) for p in compact.value.problems] == [str(p) for p in direct.value.problems]
    assert str(compact.value.problems[0]).startswith(f"{bad}:3:")


def test_shared_values_keep_equality_and_make_the_config_read_only() -> None:
    from gateway.config.loader import share_equal_values

    direct = load_config(EXAMPLES / "modbus-tcp.yaml").config
    shared = load_config(EXAMPLES / "modbus-tcp.yaml").config
    share_equal_values(shared)
    assert shared == direct
    units = [p.unit for d in shared.devices for p in getattr(d, "points", []) if p.unit == "V"]
    assert len(units) > 1 and all(u is units[0] for u in units)
    point = shared.devices[0].points[0]  # type: ignore[union-attr]
    with pytest.raises(AttributeError):
        point.scale = 2.0  # a shared fields-set record is frozen: no silent leak


def test_parameters_are_computed_in_the_child() -> None:
    from gateway.audit.parameters import parameters_json

    loaded = load_config_compact(EXAMPLES / "demo.yaml", parameters=parameters_json)
    assert loaded.parameters == parameters_json(load_config(EXAMPLES / "demo.yaml").config)
