"""load_config_compact gives what load_config gives, errors included."""

from __future__ import annotations

import asyncio
import os
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


def big_config(tmp: Path, points: int) -> Path:
    pts = "\n".join(
        f"      - {{id: p{i}, table: holding, address: {2 * i}, type: float32, unit: bar}}"
        for i in range(points)
    )
    path = tmp / "big.yaml"
    path.write_text(
        f"gateway: {{id: gw, site: s, state_dir: {tmp / 'state'}}}\ndevices:\n"
        "  - id: d1\n    driver: modbus_tcp\n    host: 127.0.0.1\n    max_gap: 0\n"
        f"    points:\n{pts}\n"
    )
    return path


def test_a_child_past_its_time_is_killed(tmp_path: Path) -> None:
    path = big_config(tmp_path, 2000)
    with pytest.raises(TimeoutError, match=r"loading took longer than 0\.001 s"):
        load_config_compact(path, timeout=0.001)
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # the killed child was reaped: no zombie left
    assert load_config_compact(path, timeout=120).config.devices[0].id == "d1"


async def test_loading_from_a_thread_leaves_the_event_loop_running(tmp_path: Path) -> None:
    """What a reload does: the parent waits for the child in a worker thread."""
    path = big_config(tmp_path, 2000)
    beats = 0

    async def heartbeat() -> None:
        nonlocal beats
        while True:
            await asyncio.sleep(0.005)
            beats += 1

    task = asyncio.create_task(heartbeat(), name="heartbeat")
    try:
        loaded = await asyncio.to_thread(load_config_compact, path, timeout=120)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(loaded.config.devices[0].points) == 2000
    assert beats >= 3, "the loop ran while the file was parsed"
