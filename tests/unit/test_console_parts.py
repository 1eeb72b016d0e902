"""Console parts without a server: messages in both languages, Nelson rules, capability,
risk scores, the vendored chart library."""

from __future__ import annotations

import hashlib
import itertools
import re
import string
from pathlib import Path

import pytest

from supervision.config import RiskConfig
from supervision.console.analysis import control_chart, cpk, nelson
from supervision.console.i18n import LANGUAGES, MESSAGES, Tr
from supervision.console.risk import RiskInputs, numbering_gaps, rank
from supervision.console.store import SecurityMark
from supervision.report import Completeness, InstrumentStatus

CONSOLE = Path(__file__).resolve().parents[2] / "supervision" / "console"
ECHARTS_SHA256 = "b66b25aeb4df84e33199dc21694014d336d222cbd9deb0e5a7c14bd6aa0d0fd0"


def fields(text: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(text) if f}


def test_every_message_exists_in_both_languages_with_the_same_fields() -> None:
    assert LANGUAGES == ("en", "zh")
    for key, (en, zh) in MESSAGES.items():
        assert en.strip() and zh.strip(), key
        assert fields(en) == fields(zh), key
        if key not in ("none", "nav.language") and not key.startswith("chart."):
            assert en != zh or not re.search("[A-Za-z]{4}", en), f"{key} is not translated"


def test_every_key_the_code_uses_is_defined() -> None:
    used: set[str] = set()
    for path in CONSOLE.glob("*.py"):
        used |= set(re.findall(r'\btr\(\s*"([a-z_]+\.[a-z_.]+)"', path.read_text()))
    missing = sorted(k for k in used if k not in MESSAGES)
    assert not missing, missing
    assert Tr("zh")("fleet.title") == "网关总览" and Tr("fr")("fleet.title") == "Fleet"


def test_nelson_rules_each_found() -> None:
    assert nelson([0, 0, 3.5, 0], 0, 1)[2] == [1]
    assert 2 in nelson([0.5] * 9, 0, 1)[8]
    assert 3 in nelson([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 0, 1)[5]
    alt = [0.5 * (-1) ** i for i in range(14)]
    assert 4 in nelson(alt, 0, 10)[13]
    assert 5 in nelson([2.5, 0, 2.5], 0, 1)[2]
    assert 6 in nelson([1.5, 1.5, 0, 1.5, 1.5], 0, 1)[4]
    assert 7 in nelson([0.1, -0.1] * 7 + [0.1], 0, 1)[14]
    assert 8 in nelson([1.5, -1.5] * 4, 0, 1)[7]
    assert nelson([0.1, -0.2, 0.3, -0.1, 0.2], 0, 1) == [[], [], [], [], []]


def test_control_chart_limits_and_marks() -> None:
    xs = [10.0, 10.2, 9.9, 10.1, 10.0, 9.8, 10.1, 10.2, 9.9, 10.0] * 3 + [14.0]
    chart = control_chart([(i, x, 1) for i, x in enumerate(xs)])
    assert chart.kind == "individuals" and chart.centre is not None and chart.ucl is not None
    assert chart.sigma == pytest.approx(
        sum(abs(b - a) for a, b in itertools.pairwise(xs)) / (len(xs) - 1) / 1.128
    )
    assert chart.violations[-1][0] == 30 and 1 in chart.violations[-1][2]
    xr = control_chart([(i, x, 1) for i, x in enumerate(xs[:30])], kind="xbar_r", subgroup=5)
    assert xr.kind == "xbar_r" and len(xr.points) == 6 and xr.r_ucl is not None
    down = control_chart([(0, 10.0, 50), (1, 10.1, 50), (2, 12.0, 50)], sigma_within=0.5)
    assert down.kind == "xbar" and down.sigma == pytest.approx(0.5 / 50**0.5)


def test_cpk() -> None:
    assert cpk(10.0, 0.1, 9.4, 10.9) == pytest.approx(2.0)
    assert cpk(10.0, 0.1, None, 10.3) == pytest.approx(1.0)
    assert cpk(10.0, 0.1, None, None) is None and cpk(10.0, 0.0, 9, 11) is None


def point(
    site: str, gw: str, inst: str | None, count: int, fail: int = 0, cond: int = 0, spc: int = 0
) -> dict[str, object]:
    return {
        "site": site,
        "gateway": gw,
        "device": "d",
        "point": "p",
        "instrument": inst,
        "count": count,
        "fail": fail,
        "conditional": cond,
        "spc": spc,
        "last_ns": 0,
    }


def test_risk_score_is_the_sum_of_explained_indicators() -> None:
    cfg = RiskConfig.model_validate({})
    inputs = RiskInputs(
        point_counts=[
            point("a", "ga", "I1", 1000, fail=20, cond=100, spc=10),
            point("b", "gb", "I2", 1000),
        ],
        instruments=[
            InstrumentStatus("ga", "I1", "expired"),
            InstrumentStatus("gb", "I2", "valid"),
        ],
        days=[Completeness("gb", "2026-01-01", 90, 100, [(5, 14)], 0)],
        clocks={"ga": "synchronised", "gb": "unsynchronised"},
        sites={"ga": "a", "gb": "b"},
        tamper={"gb": ["d"]},
        log_gaps={},
        security={"gb": 2},
        cpk={("ga", "d", "p"): (0.9, 1.33)},
    )
    entries = {(e.kind, e.name): e for e in rank(inputs, cfg)}
    a = {i.key: i for i in entries[("site", "a")].indicators}
    assert a["out_of_tolerance"].contribution == 40 * 2  # 2 % against a 1 % threshold
    assert a["conditional"].contribution == 15 * 2  # counted apart from fails: 10 % / 5 %
    assert a["spc_signals"].contribution == 20.0  # 1 + log10(10)
    assert a["cpk_low"].contribution == 15 and a["calibration_expired"].contribution == 30
    assert a["out_of_tolerance"].link == "/point/ga/d/p"
    b = {i.key: i for i in entries[("site", "b")].indicators}
    assert b["tamper"].contribution == 100 and b["security"].contribution == 70
    assert b["completeness"].contribution == 60  # capped at 3 × 20
    assert b["log_gaps"].fields["what"] == "gb: seq 5–14"
    assert b["clock_unsynchronised"].contribution == 10
    assert entries[("site", "b")].score == sum(i.contribution for i in b.values())
    assert ("instrument", "gb/I2") in entries  # the tampered meter's instrument
    marks = [SecurityMark("g", "event_gap", 3, 1), SecurityMark("g", "event_reset", 1, 2),
             SecurityMark("h", "reset", 7, 3), SecurityMark("h", "conflict", 9, 4)]  # fmt: skip
    assert numbering_gaps(marks) == {"g": ["log 3…", "log ↺1"], "h": ["seq ↺7"]}


def test_vendored_chart_library_is_the_recorded_one_and_nothing_loads_from_elsewhere() -> None:
    lib = CONSOLE / "static" / "vendor" / "echarts.min.js"
    assert hashlib.sha256(lib.read_bytes()).hexdigest() == ECHARTS_SHA256
    assert (CONSOLE / "static" / "vendor" / "LICENSE").exists()
    for path in [*CONSOLE.glob("*.py"), CONSOLE / "static" / "console.js"]:
        text = path.read_text()
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", text), path
