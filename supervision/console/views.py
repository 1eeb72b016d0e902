"""The console's pages as HTML, from what the store readers returned (pure rendering).

Each function takes the data and a :class:`~supervision.console.i18n.Tr` and returns
the body of a page; :func:`supervision.console.html.page` puts it in the frame.
Chart data travels to the browser as JSON blocks that ``static/console.js`` draws
with ECharts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from supervision.config import PointSpec
from supervision.console.analysis import Chart
from supervision.console.audit import Checked
from supervision.console.html import (
    Raw,
    esc,
    fmt_num,
    fmt_pct,
    fmt_ts,
    json_script,
    link,
    table,
    url_part,
)
from supervision.console.i18n import Tr
from supervision.console.risk import RiskEntry
from supervision.console.store import (
    AlarmRow,
    GatewayRow,
    PointRef,
    PointStats,
    SecurityCounts,
    Series,
)
from supervision.model import UNREGISTERED
from supervision.report import Completeness, InstrumentStatus

__all__ = [
    "RANGES",
    "alarms_page",
    "audit_page",
    "fleet_page",
    "instruments_page",
    "login_page",
    "point_page",
    "points_page",
    "report_form",
    "risk_page",
]

RANGES: dict[str, int] = {
    "1h": 3600,
    "6h": 6 * 3600,
    "24h": 86400,
    "7d": 7 * 86400,
    "30d": 30 * 86400,
    "90d": 90 * 86400,
}


def csrf_field(csrf: str) -> Raw:
    return Raw(f'<input type="hidden" name="csrf" value="{esc(csrf)}">')


def login_page(tr: Tr, csrf: str, error: str | None, user: str = "") -> str:
    err = f'<p class="error" id="login-error">{esc(error)}</p>' if error else ""
    return (
        f'{err}<form method="post" action="/login" class="login">{csrf_field(csrf)}'
        f'<label>{esc(tr("login.user"))}<input name="user" id="user" autocomplete="username" '
        f'value="{esc(user)}" required></label>'
        f'<label>{esc(tr("login.password"))}<input name="password" id="password" '
        'type="password" autocomplete="current-password" required></label>'
        f'<button type="submit" id="login">{esc(tr("login.submit"))}</button></form>'
    )


def _state(tr: Tr, state: str | None) -> str:
    if state in ("online", "offline"):
        return tr(f"fleet.{state}")
    return tr("fleet.unknown")


def _clock(tr: Tr, clock: str | None) -> str:
    return (
        tr(f"clock.{clock}") if clock in ("synchronised", "unsynchronised") else tr("clock.unknown")
    )


def _ratio(days: Sequence[Completeness]) -> float | None:
    exp = sum(c.expected for c in days)
    return sum(c.received for c in days) / exp if exp else None


def fleet_page(
    tr: Tr,
    gateways: Sequence[GatewayRow],
    days: Sequence[Completeness],
    key_ids: Mapping[str, str],
    security: Mapping[str, SecurityCounts],
    today: str,
) -> str:
    # messages whose topic names no registered gateway belong to no row: a line of their own
    stray = security.get(UNREGISTERED)
    unregistered = ""
    if stray is not None and (stray.forgeries or stray.dead_letters):
        text = tr("fleet.unregistered", forgeries=stray.forgeries, dead_letters=stray.dead_letters)
        unregistered = f'<p class="warning" id="unregistered">{esc(text)}</p>'
    if not gateways:
        return f'<p class="empty">{esc(tr("fleet.empty"))}</p>' + unregistered
    rows, attrs = [], []
    for g in gateways:
        mine = [c for c in days if c.gateway == g.gateway]
        missing = [r for c in mine for r in c.missing]
        gaps = ", ".join(f"{a}" if a == b else f"{a}–{b}" for a, b in missing[:5]) or "0"
        sec = security.get(g.gateway, SecurityCounts())
        state = g.state or "unknown"
        rows.append(
            [
                g.site,
                link(f"/audit/{url_part(g.gateway)}", g.gateway),
                Raw(f'<span class="state {esc(state)}">{esc(_state(tr, g.state))}</span>'),
                fmt_ts(g.last_seen_ns, tr),
                fmt_pct(_ratio([c for c in mine if c.day == today])),
                fmt_pct(_ratio(mine)),
                gaps,
                f"{sec.replays} / {sec.forgeries} / {sec.dead_letters}",
                f"{sec.resets} / {sec.event_gaps}",
                g.software or g.version or tr("none"),
                key_ids.get(g.gateway, tr("none")),
                Raw(
                    f'<span class="clock {esc(g.clock or "unknown")}">{esc(_clock(tr, g.clock))}'
                    "</span>"
                ),
            ]
        )
        attrs.append({"data-gateway": g.gateway, "data-state": state})
    headers = [
        tr(k)
        for k in (
            "col.site",
            "col.gateway",
            "fleet.state",
            "fleet.last_seen",
            "fleet.today",
            "fleet.week",
            "fleet.gaps",
            "fleet.security",
            "fleet.numbering",
            "fleet.software",
            "fleet.key",
            "fleet.clock",
        )
    ]
    return table(headers, rows, table_id="fleet", row_attrs=attrs) + unregistered


def points_page(tr: Tr, points: Sequence[PointRef]) -> str:
    if not points:
        return f'<p class="empty">{esc(tr("points.empty"))}</p>'
    rows = [
        [
            p.site,
            p.gateway,
            p.device,
            link(f"/point/{url_part(p.gateway)}/{url_part(p.device)}/{url_part(p.point)}", p.point),
            p.unit or "",
            p.instrument or "",
        ]
        for p in points
    ]
    headers = [
        tr(k)
        for k in (
            "col.site",
            "col.gateway",
            "col.device",
            "col.point",
            "col.unit",
            "col.instrument",
        )
    ]
    return table(headers, rows, table_id="points")


def _range_links(tr: Tr, base: str, current: str) -> str:
    items = []
    for r in RANGES:
        cls = ' class="active"' if r == current else ""
        items.append(f'<a href="{esc(base)}?range={r}"{cls} data-range="{r}">{r}</a>')
    return f'<p class="ranges">{esc(tr("range"))}: {" ".join(items)}</p>'


def point_page(
    tr: Tr,
    ref: PointRef,
    rng: str,
    series: Series,
    stats: PointStats,
    spec: PointSpec | None,
    chart: Chart,
    cpk_value: float | None,
) -> str:
    base = f"/point/{url_part(ref.gateway)}/{url_part(ref.device)}/{url_part(ref.point)}"
    parts = [_range_links(tr, base, rng)]
    if not series.samples:
        parts.append(f'<p class="empty" id="no-data">{esc(tr("point.no_data"))}</p>')
    elif series.raw:
        parts.append(
            f'<p class="note" id="sampling">{esc(tr("point.raw", total=series.total))}</p>'
        )
    else:
        bucket = _duration(series.bucket_s or 0)
        text = tr("point.downsampled", total=series.total, n=len(series.samples), bucket=bucket)
        parts.append(
            f'<p class="note" id="sampling" data-bucket="{series.bucket_s}">{esc(text)}</p>'
        )
    lower = spec.lower if spec else None
    upper = spec.upper if spec else None
    U, k = stats.last_U, stats.last_k
    data: dict[str, Any] = {
        "unit": ref.unit or "",
        "raw": series.raw,
        "samples": [[s.ts_ns // 1_000_000, s.value, s.lo, s.hi, s.n] for s in series.samples],
        "markers": [
            [m.ts_ns // 1_000_000, m.value, m.verdict or "", m.flags or ""] for m in series.markers
        ],
        "lower": lower,
        "upper": upper,
        "U": U,
        "k": k,
        "labels": {
            "value": tr("col.value"),
            "lower": tr("point.lower"),
            "upper": tr("point.upper"),
            "guard": tr("point.guard", U=fmt_num(U), k=fmt_num(k)),
            "centre": tr("point.centre"),
            "ucl": tr("point.ucl"),
            "lcl": tr("point.lcl"),
            "fail": tr("verdict.fail"),
            "conditional": tr("verdict.conditional_pass"),
            "rule": tr("point.rule", n="{n}"),
            "range": tr("point.range_chart"),
            "minmax": "min–max",
        },
        "chart": {
            "kind": chart.kind,
            "centre": chart.centre,
            "ucl": chart.ucl,
            "lcl": chart.lcl,
            "points": [[ts // 1_000_000, x] for ts, x in chart.points],
            "violations": [[ts // 1_000_000, x, rules] for ts, x, rules in chart.violations],
            "ranges": [[ts // 1_000_000, r] for ts, r in chart.ranges],
            "r_centre": chart.r_centre,
            "r_ucl": chart.r_ucl,
            "r_lcl": chart.r_lcl,
        },
    }
    parts.append(json_script("point-data", data))
    parts.append(f"<h2>{esc(tr('point.value_chart'))}</h2>")
    if lower is None and upper is None:
        parts.append(f'<p class="note">{esc(tr("point.no_limits"))}</p>')
    parts.append('<div class="chart" id="value-chart"></div>')
    kind = tr(f"chart.{chart.kind}") if chart.kind in ("individuals", "xbar_r", "xbar") else ""
    parts.append(f"<h2>{esc(tr('point.control_chart', kind=kind))}</h2>")
    parts.append('<div class="chart" id="control-chart"></div>')
    if chart.ranges:
        parts.append(
            f'<h2>{esc(tr("point.range_chart"))}</h2><div class="chart small" '
            'id="range-chart"></div>'
        )
    sigma = stats.mean_moving_range / 1.128 if stats.mean_moving_range is not None else None
    cpk_text = fmt_num(cpk_value, 3)
    if spec is not None and cpk_value is not None:
        cls = "low" if cpk_value < spec.min_cpk else "ok"
        cpk_text = f'<span class="cpk {cls}" id="cpk">{esc(cpk_text)}</span> ' + esc(
            tr("point.cpk_min", min=fmt_num(spec.min_cpk, 3))
        )
    else:
        cpk_text = f'<span class="cpk" id="cpk">{esc(cpk_text)}</span>'
    facts = [
        (tr("point.count"), str(stats.count)),
        (tr("point.mean"), fmt_num(stats.mean, 6)),
        (tr("point.sigma"), fmt_num(sigma, 4)),
        (tr("point.cpk"), Raw(cpk_text)),
        (tr("point.lower"), fmt_num(lower, 6)),
        (tr("point.upper"), fmt_num(upper, 6)),
        ("U / k", f"{fmt_num(U)} / {fmt_num(k)}"),
        (tr("point.centre"), fmt_num(chart.centre, 6)),
        (
            tr("point.ucl") + " / " + tr("point.lcl"),
            f"{fmt_num(chart.ucl, 6)} / {fmt_num(chart.lcl, 6)}",
        ),
    ]
    parts.append(
        '<dl class="facts" id="facts">'
        + "".join(f"<dt>{esc(a)}</dt><dd>{esc(b)}</dd>" for a, b in facts)
        + "</dl>"
    )
    verdicts = ", ".join(
        f"{tr('verdict.' + v) if tr.has('verdict.' + v) else v}: {n}"
        for v, n in sorted(stats.verdicts.items())
    ) or tr("none")
    qualities = ", ".join(
        f"{tr('quality.' + q) if tr.has('quality.' + q) else q}: {n}"
        for q, n in sorted(stats.qualities.items())
    ) or tr("none")
    reasons = ", ".join(f"{r}: {n}" for r, n in sorted(stats.reasons.items())) or tr("none")
    parts.append(
        f'<dl class="facts" id="quality"><dt>{esc(tr("point.verdicts"))}</dt>'
        f'<dd id="verdicts">{esc(verdicts)}</dd><dt>{esc(tr("point.qualities"))}</dt>'
        f"<dd>{esc(qualities)}</dd><dt>{esc(tr('point.reasons'))}</dt><dd>{esc(reasons)}</dd>"
        "</dl>"
    )
    parts.append(f"<h2>{esc(tr('point.violations'))}</h2>")
    if chart.violations:
        rows = [
            [fmt_ts(ts), fmt_num(x, 6), ", ".join(tr("point.rule", n=r) for r in rules)]
            for ts, x, rules in chart.violations[-200:]
        ]
        parts.append(
            table(
                [tr("col.time"), tr("col.value"), tr("point.violations")],
                rows,
                table_id="violations",
            )
        )
    else:
        parts.append(f'<p class="empty" id="no-violations">{esc(tr("point.no_violations"))}</p>')
    if series.markers:
        parts.append(f"<h2>{esc(tr('point.markers'))}</h2>")
        rows = [
            [
                fmt_ts(m.ts_ns),
                fmt_num(m.value, 6),
                tr("verdict." + m.verdict)
                if m.verdict and tr.has("verdict." + m.verdict)
                else (m.verdict or ""),
                m.flags or "",
            ]
            for m in series.markers[-200:]
        ]
        parts.append(
            table(
                [tr("col.time"), tr("col.value"), tr("point.verdicts"), tr("point.flagged")],
                rows,
                table_id="markers",
            )
        )
    return "".join(parts)


def _duration(s: int) -> str:
    if s % 86400 == 0:
        return f"{s // 86400} d"
    if s % 3600 == 0:
        return f"{s // 3600} h"
    if s % 60 == 0:
        return f"{s // 60} min"
    return f"{s} s"


def instruments_page(
    tr: Tr,
    instruments: Sequence[InstrumentStatus],
    labs: Mapping[str, str],
    *,
    sort: str,
    status: str,
    q: str,
) -> str:
    statuses = ("expired", "missing", "due_soon", "valid", "unknown")
    opts = "".join(
        f'<option value="{s}"{" selected" if s == status else ""}>'
        f"{esc(tr('all') if s == '' else tr('status.' + s))}</option>"
        for s in ("", *statuses)
    )
    form = (
        '<form method="get" action="/instruments" class="filter" id="inst-filter">'
        f'<label>{esc(tr("filter"))} <input name="q" value="{esc(q)}" id="inst-q"></label>'
        f'<label>{esc(tr("inst.status"))} <select name="status" id="inst-status">{opts}</select>'
        f'</label><input type="hidden" name="sort" value="{esc(sort)}">'
        f'<button type="submit">{esc(tr("apply"))}</button></form>'
    )
    items = [
        i
        for i in instruments
        if (not status or i.status == status)
        and (not q or q.lower() in f"{i.gateway} {i.instrument} {i.certificate or ''}".lower())
    ]
    order = {s: n for n, s in enumerate(statuses)}
    keys: dict[str, Any] = {
        "instrument": lambda i: (i.instrument, i.gateway),
        "gateway": lambda i: (i.gateway, i.instrument),
        "valid_until": lambda i: (i.valid_until or "9999", i.instrument),
        "days_left": lambda i: (i.days_left if i.days_left is not None else 10**9, i.instrument),
        "status": lambda i: (order.get(i.status, 9), i.instrument),
    }
    items.sort(key=keys.get(sort, keys["status"]))
    if not instruments:
        return form + f'<p class="empty">{esc(tr("inst.empty"))}</p>'

    def head(key: str, label: str) -> Raw:
        href = f"/instruments?sort={key}&status={url_part(status)}&q={url_part(q)}"
        return link(href, label, class_="sort" + (" active" if key == sort else ""))

    headers = [
        head("gateway", tr("col.gateway")),
        head("instrument", tr("col.instrument")),
        tr("inst.certificate"),
        tr("inst.lab"),
        head("valid_until", tr("inst.valid_until")),
        head("days_left", tr("inst.days_left")),
        head("status", tr("inst.status")),
        tr("inst.readings"),
    ]
    rows, attrs = [], []
    for i in items:
        rows.append(
            [
                i.gateway,
                i.instrument,
                i.certificate or tr("none"),
                labs.get(i.certificate or "", "") or tr("none"),
                i.valid_until or tr("none"),
                "" if i.days_left is None else str(i.days_left),
                Raw(f'<span class="status {esc(i.status)}">{esc(tr("status." + i.status))}</span>'),
                str(i.readings),
            ]
        )
        attrs.append({"data-instrument": i.instrument, "data-status": i.status})
    return form + table(headers, rows, table_id="instruments", row_attrs=attrs)


def _word(tr: Tr, prefix: str, value: str | None) -> str:
    """A stored identifier (severity, event) in the user's language when it is a known one."""
    if not value:
        return ""
    return tr(f"{prefix}.{value}") if tr.has(f"{prefix}.{value}") else value


def _alarm_state(tr: Tr, a: AlarmRow) -> str:
    s = "shelved" if a.shelved else (a.state or "normal")
    return tr(f"state.{s}") if tr.has(f"state.{s}") else s


def alarms_page(
    tr: Tr,
    current: Sequence[AlarmRow],
    history: Sequence[AlarmRow],
    *,
    operator: bool,
    csrf: str,
) -> str:
    parts = [f"<h2>{esc(tr('alarms.current'))}</h2>"]
    if not operator:
        parts.append(f'<p class="note" id="viewer-note">{esc(tr("alarms.viewer_note"))}</p>')
    if not current and not history:
        return "".join(parts) + f'<p class="empty">{esc(tr("alarms.empty"))}</p>'
    rows, attrs = [], []
    for a in current:
        actions: Raw | str = ""
        if operator and (a.state not in (None, "normal") or a.shelved):
            hidden = (
                f'{csrf_field(csrf)}<input type="hidden" name="gateway" value="{esc(a.gateway)}">'
                f'<input type="hidden" name="site" value="{esc(a.site)}">'
                f'<input type="hidden" name="alarm" value="{esc(a.alarm)}">'
            )
            ack = ""
            if a.state in ("active_unacknowledged", "returned_unacknowledged"):
                ack = (
                    f'<form method="post" action="/alarms/ack" class="inline">{hidden}'
                    f'<button type="submit" class="ack">{esc(tr("alarms.ack"))}</button></form>'
                )
            shelve = (
                f'<form method="post" action="/alarms/shelve" class="inline">{hidden}'
                f'<input type="number" name="minutes" value="60" min="1" max="10080" '
                f'class="minutes" aria-label="{esc(tr("alarms.minutes"))}">'
                f'<button type="submit" class="shelve">{esc(tr("alarms.shelve"))}</button></form>'
            )
            actions = Raw(ack + ("" if a.shelved else shelve))
        rows.append(
            [
                a.site,
                a.gateway,
                link(f"/alarm/{url_part(a.gateway)}/{url_part(a.alarm)}", a.alarm),
                Raw(
                    f'<span class="alarm-state {esc("shelved" if a.shelved else a.state or "")}">'
                    f"{esc(_alarm_state(tr, a))}</span>"
                ),
                _word(tr, "severity", a.severity),
                fmt_num(a.value, 6),
                fmt_num(a.limit, 6),
                a.message or "",
                fmt_ts(a.ts_ns),
                a.user or "",
                actions,
            ]
        )
        attrs.append(
            {
                "data-alarm": a.alarm,
                "data-gateway": a.gateway,
                "data-state": "shelved" if a.shelved else (a.state or ""),
            }
        )
    headers = [
        tr(k)
        for k in (
            "col.site",
            "col.gateway",
            "alarms.alarm",
            "alarms.state",
            "alarms.severity",
            "col.value",
            "alarms.limit",
            "alarms.message",
            "col.time",
            "alarms.user",
            "alarms.actions",
        )
    ]
    parts.append(table(headers, rows, table_id="alarms", row_attrs=attrs))
    parts.append(f"<h2>{esc(tr('alarms.history'))}</h2>")
    parts.append(_history(tr, history))
    return "".join(parts)


def _history(tr: Tr, history: Sequence[AlarmRow]) -> Raw:
    rows = [
        [
            fmt_ts(a.ts_ns),
            a.gateway,
            a.alarm,
            _word(tr, "event", a.event),
            _alarm_state(tr, a),
            a.user or "",
            fmt_num(a.value, 6),
        ]
        for a in history
    ]
    headers = [
        tr(k)
        for k in (
            "col.time",
            "col.gateway",
            "alarms.alarm",
            "alarms.event",
            "alarms.state",
            "alarms.user",
            "col.value",
        )
    ]
    return table(headers, rows, table_id="alarm-history")


def alarm_history_page(tr: Tr, history: Sequence[AlarmRow]) -> str:
    return _history(tr, history)


def risk_page(tr: Tr, entries: Sequence[RiskEntry], window: str) -> str:
    parts = [f'<p class="note">{esc(tr("risk.intro", window=window))}</p>']
    if not entries:
        return parts[0] + f'<p class="empty" id="risk-none">{esc(tr("risk.none"))}</p>'
    rows, attrs = [], []
    for n, e in enumerate(entries, 1):
        inds = "".join(
            f'<li data-indicator="{esc(i.key)}"><a href="{esc(i.link)}">'
            f"{esc(tr('ind.' + i.key, **i.fields))}</a> <span class=contrib>+{i.contribution:g}"
            "</span></li>"
            for i in sorted(e.indicators, key=lambda i: -i.contribution)
        )
        kind = tr("risk.kind.site") if e.kind == "site" else tr("risk.kind.instrument")
        rows.append(
            [
                str(n),
                Raw(f"{esc(e.name)} <small>({esc(kind)})</small>"),
                f"{e.score:g}",
                Raw(f"<ul>{inds}</ul>"),
            ]
        )
        attrs.append({"data-kind": e.kind, "data-name": e.name, "data-score": f"{e.score:g}"})
    headers = [tr("risk.rank"), tr("risk.subject"), tr("risk.score"), tr("risk.indicators")]
    parts.append(table(headers, rows, table_id="risk", row_attrs=attrs))
    return "".join(parts)


def audit_page(tr: Tr, checked: Sequence[Checked]) -> str:
    if not checked:
        return f'<p class="empty">{esc(tr("audit.empty"))}</p>'
    ok = sum(1 for c in checked if c.status == "ok")
    parts = [
        f'<p class="note" id="audit-summary">'
        f"{esc(tr('audit.summary', n=len(checked), ok=ok, bad=len(checked) - ok))}</p>"
    ]
    rows, attrs = [], []
    for c in checked:
        e = c.entry
        status = tr(f"check.{c.status}", **c.detail) if tr.has(f"check.{c.status}") else c.status
        rows.append(
            [
                "" if e.n is None else str(e.n),
                fmt_ts(e.ts_ns),
                e.type,
                e.source or "",
                _entry_content(e),
                Raw(f'<span class="check {esc(c.status)}">{esc(status)}</span>'),
            ]
        )
        attrs.append(
            {"data-n": "" if e.n is None else str(e.n), "data-type": e.type, "data-check": c.status}
        )
    headers = [
        tr(k)
        for k in ("audit.n", "col.time", "audit.type", "audit.source", "audit.data", "audit.check")
    ]
    parts.append(table(headers, rows, table_id="audit", row_attrs=attrs))
    return "".join(parts)


def _entry_content(e: Any) -> Raw:
    """An entry's content: a parameter change as ``param: old → new``, else its JSON."""
    d = e.data_dict() if hasattr(e, "data_dict") else {}
    if e.type == "parameter_changed" and "param" in d:
        return Raw(
            f'<span class="param"><b>{esc(d.get("param"))}</b>: '
            f"{esc(_short(_json(d.get('old')), 120))} → {esc(_short(_json(d.get('new')), 120))}"
            f" <small>({esc(d.get('change', ''))})</small></span>"
        )
    if e.type == "software_changed":
        return Raw(
            f"{esc(_short(_json(d.get('old')), 80))} → {esc(_short(_json(d.get('new')), 80))}"
        )
    return Raw(f"<code>{esc(_short(e.data))}</code>")


def _json(v: Any) -> str:
    import json

    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


def _short(text: str | None, limit: int = 400) -> str:
    s = text or ""
    return s if len(s) <= limit else s[:limit] + "…"


def report_form(tr: Tr, sites: Sequence[str]) -> str:
    site_opts = f'<option value="">{esc(tr("report.all_sites"))}</option>' + "".join(
        f'<option value="{esc(s)}">{esc(s)}</option>' for s in sites
    )
    range_opts = "".join(
        f'<option value="{r}"{" selected" if r == "7d" else ""}>{r}</option>' for r in RANGES
    )
    return (
        '<form method="get" action="/report/html" class="filter" id="report-form">'
        f'<label>{esc(tr("col.site"))} <select name="site">{site_opts}</select></label>'
        f'<label>{esc(tr("report.since"))} <select name="range">{range_opts}</select></label>'
        f'<button type="submit" id="report-download">{esc(tr("report.download"))}</button>'
        "</form>"
    )


def today_utc(now_ns: int) -> str:
    return dt.datetime.fromtimestamp(now_ns / 1e9, dt.UTC).strftime("%Y-%m-%d")
