"""Risk warning: which sites and instruments to inspect first, and why (pure).

Each entry (a site, or an instrument at a gateway) collects *indicators* from the
store's evidence over ``console.risk.window``. An indicator that applies contributes
``weight × factor`` to the entry's score, with the factor between 0 and 3:

==========================  =====================================================
indicator                   applies when — factor
==========================  =====================================================
``out_of_tolerance``        fail verdicts or ``out_of_tolerance`` flags, rate ≥
                            ``thresholds.out_of_tolerance_rate`` — rate / threshold
``conditional``             conditional pass/fail verdicts (counted apart from
                            fails), rate ≥ ``thresholds.conditional_rate`` — rate /
                            threshold
``spc_signals``             readings flagged ``spc_nelson_*`` ≥ ``thresholds.
                            spc_signals`` — 1 + log10(n / threshold)
``cpk_low``                 points whose Cpk is below their ``min_cpk`` — count
``calibration_expired``     instruments expired — count
``calibration_missing``     instruments without calibration — count
``calibration_due_soon``    instruments due soon — count
``tamper``                  ``tamper_counter`` events (counters changed) — count
``log_gaps``                event-log counters missing (``event_gap``), counters
                            that went back (``event_reset``, ``reset``), batch
                            sequence gaps, ``outbox_drop`` events — count
``security``                replayed, forged (incl. ``conflict``) or dead-lettered
                            messages, as the ingest filed them — count
``completeness``            batches received ÷ expected below ``thresholds.
                            completeness_target`` — shortfall / (1 − target)
``clock_unsynchronised``    a gateway whose last ``clock_sync`` says not
                            synchronised — count
==========================  =====================================================

Every factor is capped at 3, so no single indicator can hide all others. A site's
entry sums over its gateways, points and instruments; an instrument's entry covers
the points that carry its id (and the tamper counters of their device). Each
indicator keeps its numbers and a link to the evidence, so the score is explained.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from supervision.config import RiskConfig
from supervision.console.store import SecurityMark
from supervision.report import Completeness, InstrumentStatus

__all__ = ["Evidence", "Indicator", "RiskEntry", "RiskInputs", "rank"]

CAP = 3.0


def _p(s: str) -> str:
    return quote(s, safe="")


@dataclass(frozen=True, slots=True)
class Indicator:
    key: str
    contribution: float
    fields: dict[str, Any]
    link: str


@dataclass(slots=True)
class RiskEntry:
    kind: str  # site | instrument
    name: str  # site id, or gateway/instrument
    site: str
    indicators: list[Indicator] = field(default_factory=list)

    @property
    def score(self) -> float:
        return round(sum(i.contribution for i in self.indicators), 1)


@dataclass(slots=True)
class Evidence:
    """What one entry's indicators are computed from (filled in by :func:`rank`)."""

    readings: int = 0
    fail: int = 0
    conditional: int = 0
    spc: int = 0
    worst_point: str | None = None
    worst_fail_rate: float = -1.0
    spc_point: str | None = None
    spc_max: int = 0
    cpk_low: list[tuple[str, float, float]] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    due_soon: list[str] = field(default_factory=list)
    tamper: list[str] = field(default_factory=list)  # gateways, one per change
    gaps: list[tuple[str, str]] = field(default_factory=list)  # (gateway, what)
    security: list[str] = field(default_factory=list)
    received: int = 0
    expected: int = 0
    completeness_gw: str | None = None
    unsynced: list[str] = field(default_factory=list)


@dataclass(slots=True)
class RiskInputs:
    """The store's evidence over the window, as the console's store readers give it."""

    point_counts: list[dict[str, Any]]
    instruments: list[InstrumentStatus]
    days: list[Completeness]
    clocks: Mapping[str, str | None]  # gateway → last clock_sync state
    sites: Mapping[str, str]  # gateway → site
    tamper: Mapping[str, list[str]]  # gateway → device of each tamper_counter event
    # gateway → descriptions of event-log / batch-number gaps and resets, outbox drops
    log_gaps: Mapping[str, list[str]]
    security: Mapping[str, int]  # gateway → replays + forgeries + dead letters
    cpk: Mapping[tuple[str, str, str], tuple[float, float]]  # (g, d, p) → (cpk, min)


def _rate(
    key: str, n: int, total: int, threshold: float, weight: float, link: str
) -> list[Indicator]:
    if total <= 0 or n <= 0:
        return []
    rate = n / total
    if rate < threshold:
        return []
    factor = min(CAP, rate / threshold) if threshold > 0 else CAP
    return [
        Indicator(
            key,
            round(weight * factor, 1),
            {"n": n, "total": total, "rate": f"{100 * rate:.2f} %"},
            link,
        )
    ]


def _count(key: str, items: list[Any], weight: float, link: str, what: str) -> list[Indicator]:
    if not items:
        return []
    factor = min(CAP, float(len(items)))
    return [Indicator(key, round(weight * factor, 1), {"n": len(items), "what": what}, link)]


def _indicators(ev: Evidence, cfg: RiskConfig, *, site_link: str) -> list[Indicator]:
    w, th = cfg.weights, cfg.thresholds
    out: list[Indicator] = []
    point_link = f"/point/{ev.worst_point}" if ev.worst_point else "/points"
    out += _rate(
        "out_of_tolerance",
        ev.fail,
        ev.readings,
        th.out_of_tolerance_rate,
        w.out_of_tolerance,
        point_link,
    )
    out += _rate(
        "conditional", ev.conditional, ev.readings, th.conditional_rate, w.conditional, point_link
    )
    if ev.spc >= th.spc_signals:
        factor = min(CAP, 1 + math.log10(ev.spc / th.spc_signals))
        link = f"/point/{ev.spc_point}" if ev.spc_point else "/points"
        out.append(Indicator("spc_signals", round(w.spc_signals * factor, 1), {"n": ev.spc}, link))
    if ev.cpk_low:
        worst = min(ev.cpk_low, key=lambda c: c[1])
        factor = min(CAP, float(len(ev.cpk_low)))
        out.append(
            Indicator(
                "cpk_low",
                round(w.cpk_low * factor, 1),
                {"cpk": f"{worst[1]:.2f}", "min": f"{worst[2]:.2f}", "n": len(ev.cpk_low)},
                f"/point/{worst[0]}",
            )
        )
    out += _count(
        "calibration_expired",
        ev.expired,
        w.calibration_expired,
        "/instruments?status=expired",
        ", ".join(ev.expired[:5]),
    )
    out += _count(
        "calibration_missing",
        ev.missing,
        w.calibration_missing,
        "/instruments?status=missing",
        ", ".join(ev.missing[:5]),
    )
    out += _count(
        "calibration_due_soon",
        ev.due_soon,
        w.calibration_due_soon,
        "/instruments?status=due_soon",
        ", ".join(ev.due_soon[:5]),
    )
    if ev.tamper:
        gw = ev.tamper[0]
        out += _count("tamper", ev.tamper, w.tamper, f"/audit/{_p(gw)}?type=tamper_counter", gw)
    if ev.gaps:
        gw = ev.gaps[0][0]
        out += _count(
            "log_gaps",
            ev.gaps,
            w.log_gaps,
            f"/audit/{_p(gw)}",
            "; ".join(f"{g}: {what}" for g, what in ev.gaps[:3]),
        )
    if ev.security:
        out += _count("security", ev.security, w.security, "/fleet", ", ".join(ev.security[:3]))
    if ev.expected > 0:
        ratio = ev.received / ev.expected
        target = th.completeness_target
        if ratio < target:
            factor = min(CAP, (target - ratio) / (1 - target)) if target < 1 else CAP
            out.append(
                Indicator(
                    "completeness",
                    round(w.completeness * factor, 1),
                    {"ratio": f"{100 * ratio:.2f} %", "target": f"{100 * target:.2f} %"},
                    site_link,
                )
            )
    if ev.unsynced:
        gw = ev.unsynced[0]
        out += _count(
            "clock_unsynchronised",
            ev.unsynced,
            w.clock_unsynchronised,
            f"/audit/{_p(gw)}?type=clock_sync",
            ", ".join(ev.unsynced),
        )
    return [i for i in out if i.contribution > 0]


def _add_point(ev: Evidence, p: dict[str, Any]) -> None:
    key = f"{_p(p['gateway'])}/{_p(p['device'])}/{_p(p['point'])}"
    ev.readings += p["count"]
    ev.fail += p["fail"]
    ev.conditional += p["conditional"]
    ev.spc += p["spc"]
    rate = (p["fail"] + p["conditional"]) / p["count"] if p["count"] else 0.0
    if rate > ev.worst_fail_rate:
        ev.worst_fail_rate, ev.worst_point = rate, key
    if p["spc"] > ev.spc_max:
        ev.spc_max, ev.spc_point = p["spc"], key


def rank(inputs: RiskInputs, cfg: RiskConfig) -> list[RiskEntry]:
    """Sites and instruments, highest score first; entries with no indicator are left out."""
    site_ev: dict[str, Evidence] = defaultdict(Evidence)
    inst_ev: dict[tuple[str, str], Evidence] = defaultdict(Evidence)
    inst_site: dict[tuple[str, str], str] = {}
    inst_devices: dict[tuple[str, str], set[str]] = defaultdict(set)
    sites = dict(inputs.sites)
    for p in inputs.point_counts:
        sites.setdefault(p["gateway"], p["site"])
        _add_point(site_ev[p["site"]], p)
        if p.get("instrument"):
            k = (p["gateway"], p["instrument"])
            _add_point(inst_ev[k], p)
            inst_site[k] = p["site"]
            inst_devices[k].add(p["device"])
        cp = inputs.cpk.get((p["gateway"], p["device"], p["point"]))
        if cp is not None and cp[0] < cp[1]:
            key = f"{_p(p['gateway'])}/{_p(p['device'])}/{_p(p['point'])}"
            site_ev[p["site"]].cpk_low.append((key, cp[0], cp[1]))
            if p.get("instrument"):
                inst_ev[(p["gateway"], p["instrument"])].cpk_low.append((key, cp[0], cp[1]))
    for status in inputs.instruments:
        site = sites.get(status.gateway, "")
        ik = (status.gateway, status.instrument)
        inst_site.setdefault(ik, site)
        if status.status not in ("expired", "missing", "due_soon"):
            continue
        for ev in (site_ev[site], inst_ev[ik]):
            getattr(ev, status.status).append(status.instrument)
    for gw, devices in inputs.tamper.items():
        site = sites.get(gw, "")
        site_ev[site].tamper += [gw] * len(devices)
        for k, devs in inst_devices.items():
            if k[0] == gw:
                inst_ev[k].tamper += [gw for d in devices if d in devs]
    for gw, gaps in inputs.log_gaps.items():
        site_ev[sites.get(gw, "")].gaps += [(gw, g) for g in gaps]
    for day in inputs.days:
        sev = site_ev[sites.get(day.gateway, "")]
        sev.received += day.received
        sev.expected += day.expected
        for a, b in day.missing:
            sev.gaps.append((day.gateway, f"seq {a}–{b}" if a != b else f"seq {a}"))
    for gw, n in inputs.security.items():
        if n:
            site_ev[sites.get(gw, "")].security += [gw] * n
    for gw, state in inputs.clocks.items():
        if state == "unsynchronised":
            site_ev[sites.get(gw, "")].unsynced.append(gw)
    entries: list[RiskEntry] = []
    for site, ev in site_ev.items():
        e = RiskEntry("site", site, site, _indicators(ev, cfg, site_link="/fleet"))
        entries.append(e)
    for (gw, inst), ev in inst_ev.items():
        e = RiskEntry(
            "instrument",
            f"{gw}/{inst}",
            inst_site.get((gw, inst), ""),
            _indicators(ev, cfg, site_link="/fleet"),
        )
        entries.append(e)
    entries = [e for e in entries if e.indicators]
    entries.sort(key=lambda e: (-e.score, e.kind != "site", e.name))  # sites first on a tie
    return entries


def numbering_gaps(marks: Iterable[SecurityMark]) -> dict[str, list[str]]:
    """Per gateway, what the ingest filed of its numbering (docs/ingest.md, Security
    events), in words of no language: ``log n…`` event-log counters missing from ``n``
    (``event_gap``), ``log ↺n`` the event log numbered again from ``n``
    (``event_reset``), ``seq ↺n`` batch numbers went back to ``n`` (``reset``)."""
    what = {"event_gap": "log {}…", "event_reset": "log ↺{}", "reset": "seq ↺{}"}
    out: dict[str, list[str]] = defaultdict(list)
    for m in marks:
        if m.kind in what:
            out[m.gateway].append(what[m.kind].format(m.seq))
    return dict(out)
