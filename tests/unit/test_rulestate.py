"""Rule state that cannot be written is logged once and kept, never raised; a state file
that is not what was written starts the device with none of it, never half."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.base import utc_now_us
from gateway.acquisition.rulestate import RuleStore
from gateway.metrology.pipeline import DeviceMetrology
from tests.unit.ops_support import one_device_config
from tests.unit.test_metrology import T0, S, make, reading


def metrologies(tmp: Path) -> list[DeviceMetrology]:
    out = []
    for dev in one_device_config(tmp, devices=2).config.devices:
        points = [(str(p.id), p, p.unit) for p in dev.points]
        out.append(DeviceMetrology(dev.id, points, dev, {}, utc_now_us))
    return out


async def test_a_failing_write_is_logged_once_and_the_next_save_writes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="metrogate.runtime")
    metros = metrologies(tmp_path)
    blocked = tmp_path / "rules"
    blocked.write_text("a file where the directory should be")  # every write fails
    store = RuleStore(blocked)
    assert store.save(metros[0]) is False
    await store.save_all(metros)  # in a worker thread: must not raise either
    assert store.failures == 3
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2  # one per device, not one per attempt
    blocked.unlink()
    await store.save_all(metros)
    assert sorted(p.name for p in blocked.iterdir()) == ["dev1.json", "dev2.json"]
    assert sum("saved again" in r.getMessage() for r in caplog.records) == 2
    fresh = metrologies(tmp_path)[0]
    store.restore(fresh)
    assert fresh.to_state() == metros[0].to_state()


# ------------------------------------------------- a state file that is not what was written

_CFG: dict[str, dict[str, Any]] = {
    "p": {
        "rules": [
            {"kind": "high", "limit": 80, "deadband": 5},
            {"kind": "rate", "max": 10, "per": 1},
            {"kind": "stuck", "count": 3, "alarm": False},
        ],
        "spc": {"learn": 5},
    }
}
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.sampled_from([10**400, "active_unacknowledged", "normal", "1e400"])
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


def _saved_state() -> dict[str, Any]:
    """A real state: an active alarm, a rate and stuck run, a learning chart."""
    dm = make(_CFG)
    for i, v in enumerate([90.0, 90.0, 91.0]):
        dm.process([reading("p", v, T0 + i * S)], T0 + i * S)
    state: dict[str, Any] = json.loads(json.dumps(dm.to_state()))
    return state


def _replace_somewhere(tree: Any, path: list[int], value: Any) -> Any:
    """``tree`` with the node chosen by ``path`` (indices into its children) replaced."""
    if not path or not isinstance(tree, dict | list) or not tree:
        return value
    if isinstance(tree, dict):
        keys = list(tree)
        key = keys[path[0] % len(keys)]
        return {**tree, key: _replace_somewhere(tree[key], path[1:], value)}
    i = path[0] % len(tree)
    return [*tree[:i], _replace_somewhere(tree[i], path[1:], value), *tree[i + 1 :]]


@settings(max_examples=300, deadline=None)
@given(
    content=st.one_of(
        st.binary(max_size=64),
        _JSON.map(lambda v: json.dumps(v).encode()),
        st.tuples(st.lists(st.integers(0, 50), max_size=6), _JSON).map(
            lambda pv: json.dumps(_replace_somewhere(_saved_state(), *pv)).encode()
        ),
        st.just(b"[" * 100_000 + b"]" * 100_000),  # deeper than the JSON parser goes
        st.just(b'{"version": 1, "points": {"p": {"rules": {"high": {"condition": 1e999}}}}}'),
    )
)
def test_a_state_file_that_is_not_what_was_written_starts_the_device_fresh(
    tmp_path_factory: pytest.TempPathFactory, content: bytes
) -> None:
    """Whatever the file holds, restoring never raises (the daemon starts), and the
    metrology it leaves is either the saved state or none: never half of one."""
    directory = tmp_path_factory.mktemp("rules")
    (directory / "d1.json").write_bytes(content)
    metro = make(_CFG)
    fresh = metro.to_state()
    RuleStore(directory).restore(metro)
    after = metro.to_state()
    if after != fresh:  # it took the file: then the file was a whole state of this format
        try:
            whole = make(_CFG)
            whole.load_state(json.loads(content))
        except Exception as exc:  # pragma: no cover - the assertion below says what
            raise AssertionError(f"half a state restored from {content[:200]!r}") from exc
        assert after == whole.to_state()
    # and the device goes on
    r = reading("p", 95.0, T0 + 10 * S)
    metro.process([r], T0 + 10 * S)
    assert RuleStore(directory).save(metro)
