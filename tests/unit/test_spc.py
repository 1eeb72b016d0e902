"""Control charts, each Nelson rule (a sequence that triggers it, one that must not),
EWMA, CUSUM and capability."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.config.models.metrology import SpcConfig, SpecLimits
from gateway.metrology.spc import ControlChart, Nelson

TRIGGER_AND_NOT: dict[int, tuple[list[float], list[float]]] = {
    1: ([0, 0, 3.5], [2.9, -2.9, 3.0, -3.0]),
    2: ([0.5] * 9, [0.5] * 8 + [-0.5, 0.5, 0.0, 0.5]),
    3: ([0, 0.1, 0.2, 0.3, 0.4, 0.5], [0, 0.1, 0.2, 0.3, 0.4, 0.4, 0.5]),
    4: ([0.1, -0.1] * 7, [0.1, -0.1] * 6 + [0.1, 0.2, -0.1]),
    5: ([2.5, 0, 2.5], [2.5, 0, -2.5, 0, 0, 2.5]),
    6: ([1.5, 1.5, 0, 1.5, 1.5], [1.5, 1.5, 0, 0, 1.5, -1.5]),
    7: ([0.5, -0.5] * 7 + [0.5], [0.5, -0.5] * 7 + [1.5]),
    8: ([1.5, -1.5] * 4, [1.5] * 8 + [0.5] + [-1.5] * 7),
}


@pytest.mark.parametrize("rule", range(1, 9))
def test_nelson_rule_triggers_on_the_completing_point(rule: int) -> None:
    triggering, _ = TRIGGER_AND_NOT[rule]
    n = Nelson([rule])
    hits = [n.add(z) for z in triggering]
    assert hits[-1] == [rule]
    assert all(h == [] for h in hits[:-1])


@pytest.mark.parametrize("rule", range(1, 9))
def test_nelson_rule_does_not_trigger(rule: int) -> None:
    _, harmless = TRIGGER_AND_NOT[rule]
    n = Nelson([rule])
    assert [n.add(z) for z in harmless] == [[]] * len(harmless)


def test_nelson_rules_are_selectable() -> None:
    n = Nelson([1, 5])
    assert [n.add(z) for z in [0.5] * 9] == [[]] * 9  # rule 2 not selected
    every = Nelson(list(range(1, 9)))
    out = [every.add(z) for z in [0.5] * 9]
    assert out[-1] == [2]


def test_nelson_state_round_trip() -> None:
    a = Nelson([2])
    for _ in range(8):
        a.add(0.5)
    b = Nelson([2])
    b.load_state(a.to_state())
    assert b.add(0.5) == [2]


def chart(spec: dict[str, Any] | None = None, **kw: Any) -> ControlChart:
    return ControlChart(
        SpcConfig.model_validate(kw), None if spec is None else SpecLimits.model_validate(spec)
    )


def test_individuals_learns_centre_and_sigma_from_moving_range() -> None:
    c = chart(learn=5)
    assert [c.add(x) for x in [10, 12, 11, 13, 12]] == [[]] * 5
    assert c.center == pytest.approx(11.6)
    assert c.sigma == pytest.approx(1.5 / 1.128)  # MR̄ = (2+1+2+1)/4
    lcl, cl, ucl = c.limits() or (0, 0, 0)
    assert ucl == pytest.approx(11.6 + 2.66 * 1.5, rel=1e-3)  # X̄ + 2.66·MR̄
    assert lcl == pytest.approx(11.6 - 2.66 * 1.5, rel=1e-3)
    assert cl == pytest.approx(11.6)
    assert c.add(11.6 + 3.01 * 1.5 / 1.128) == ["spc_nelson_1"]
    assert c.add(11.6) == []


def test_flat_learning_phase_learns_again() -> None:
    c = chart(learn=5)
    for _ in range(5):
        c.add(1.0)
    assert not c.learned


def test_xbar_r_chart() -> None:
    c = chart(chart="xbar_r", subgroup=2, learn=5, nelson=[1])
    for x in [1, 3, 2, 2, 3, 5, 2, 4, 1, 1]:
        assert c.add(x) == []
    assert c.center == pytest.approx(2.4)
    assert c.sigma == pytest.approx(1.2 / 1.128)  # R̄/d2
    assert c.add(0) == []  # subgroup incomplete
    assert c.add(5) == ["spc_range"]  # R = 5 > D4·R̄ = 3.92
    # X̄ beyond X̿ + A2·R̄ = 2.4 + 1.880·1.2 = 4.656
    c.add(4.7)
    assert c.add(4.7) == ["spc_nelson_1"]


def test_configured_centre_and_sigma_skip_learning() -> None:
    c = chart(center=0, sigma=1, nelson=[1])
    assert c.learned and c.add(3.1) == ["spc_nelson_1"]


def test_ewma_detects_small_shift() -> None:
    # z_i = 1.5·(1 − 0.8^i) against 3·√(0.2/1.8·(1 − 0.64^i)): crosses at i = 5
    c = chart(center=0, sigma=1, nelson=[], ewma={"lambda": 0.2, "L": 3})
    out = [c.add(1.5) for _ in range(6)]
    assert out == [[], [], [], [], ["spc_ewma"], ["spc_ewma"]]


def test_cusum_detects_drift() -> None:
    c = chart(center=0, sigma=1, nelson=[], cusum={"k": 0.5, "h": 4})
    out = [c.add(1.5) for _ in range(5)]  # C⁺ = 1, 2, 3, 4, 5
    assert out == [[], [], [], [], ["spc_cusum"]]
    c2 = chart(center=0, sigma=1, nelson=[], cusum={"k": 0.5, "h": 4})
    assert [c2.add(x) for x in [-1.5] * 4 + [0.5]] == [[]] * 5  # C⁻ = 1,2,3,4 then 3


def test_capability() -> None:
    spec = {"lower": 9, "upper": 11}
    c = chart(spec, center=10, sigma=0.25, nelson=[], capability_window=10, min_cpk=1.29)
    for i in range(10):
        assert c.add(10 + (0.1 if i % 2 else -0.1)) == []
    cap = c.capability()
    assert cap is not None and cap.n == 10
    assert cap.cp == pytest.approx(2 / 1.5)
    assert cap.cpk == pytest.approx(1 / 0.75)
    s = math.sqrt(10 * 0.01 / 9)
    assert cap.pp == pytest.approx(2 / (6 * s))
    assert cap.ppk == pytest.approx(1 / (3 * s))
    flags = [c.add(10.2) for _ in range(10)]
    # replacing 9.9 then 10.1 by 10.2: mean 10.03 (Cpk 1.293), then 10.04 (Cpk 1.28 < 1.29)
    assert flags[0] == [] and flags[1] == ["spc_cpk_low"]


def test_chart_state_round_trip() -> None:
    a = chart(learn=5, cusum={})
    for x in [10, 12, 11, 13, 12, 14]:
        a.add(x)
    b = chart(learn=5, cusum={})
    b.load_state(a.to_state())
    assert (b.center, b.sigma, b.cusum_hi) == (a.center, a.sigma, a.cusum_hi)
    assert b.add(15) == a.add(15)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"nelson": [0, 9]}, "Nelson rules are numbered 1 to 8, got [0, 9]"),
        ({"chart": "xbar_r"}, "an X̄-R chart needs subgroup between 2 and 5"),
        ({"subgroup": 3}, "an individuals chart has subgroup 1"),
        ({"sigma": 0}, "sigma must be > 0"),
        ({"ewma": {"lambda": 1.5}}, "less than or equal to 1"),
    ],
)
def test_bad_spc_config_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as e:
        SpcConfig.model_validate(data)
    assert message in str(e.value)
