"""The supervision report as one self-contained, printable HTML file.

Charts are inline SVG drawn here from series downsampled in the database, so the
file needs nothing else (no script, no font, no network) and prints as it shows.
``metrogate report --html FILE`` and the console's report page both build it with
:func:`build_report`. Contents: gateways (state, completeness, gaps), points (count,
out-of-tolerance and conditional verdicts, SPC-flagged readings, Cpk, a chart with
the specification limits), instruments (calibration status), and the risk ranking.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from supervision.console.analysis import cpk
from supervision.console.html import Raw, esc, fmt_num, fmt_pct, fmt_ts, table
from supervision.console.i18n import Tr
from supervision.console.store import Series

if TYPE_CHECKING:
    from supervision.console.service import Console

__all__ = ["build_report", "svg_chart"]

MAX_CHARTS = 40
CHART_POINTS = 300

CSS = """
body{font:12px/1.4 system-ui,"Noto Sans CJK SC","Microsoft YaHei",sans-serif;color:#111;
margin:1.5em}
h1{font-size:1.5em;margin:0 0 .2em}h2{font-size:1.15em;margin:1.4em 0 .4em;
border-bottom:1px solid #999}
table{border-collapse:collapse;width:100%;margin:.3em 0 1em}
th,td{border:1px solid #bbb;padding:.2em .4em;text-align:left;vertical-align:top}
th{background:#eee}.chart{break-inside:avoid;margin:.3em 0 .8em}.meta{color:#444}
.bad{color:#a4001d;font-weight:600}.ok{color:#0b6b2b}
@media print{body{margin:0}h2{break-after:avoid}tr{break-inside:avoid}}
"""


def svg_chart(
    series: Series,
    *,
    lower: float | None,
    upper: float | None,
    width: int = 720,
    height: int = 160,
) -> Raw:
    """A line chart of a series (bucket means, or readings) with its limits, as SVG."""
    pts = [(s.ts_ns, s.value) for s in series.samples]
    if not pts:
        return Raw("")
    ys = [v for _, v in pts] + [x for x in (lower, upper) if x is not None]
    y0, y1 = min(ys), max(ys)
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad
    t0, t1 = pts[0][0], pts[-1][0]
    span = max(1, t1 - t0)
    left, right, top, bottom = 60, 10, 8, 20
    w, h = width - left - right, height - top - bottom

    def x(t: int) -> float:
        return left + (t - t0) / span * w

    def y(v: float) -> float:
        return top + (y1 - v) / (y1 - y0) * h

    path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img">',
        f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="#fff" stroke="#999"/>',
    ]
    for limit in (lower, upper):
        if limit is not None:
            parts.append(
                f'<line x1="{left}" x2="{left + w}" y1="{y(limit):.1f}" y2="{y(limit):.1f}" '
                f'stroke="#a4001d" stroke-dasharray="4 3"/>'
                f'<text x="{left - 4}" y="{y(limit) + 3:.1f}" font-size="9" text-anchor="end" '
                f'fill="#a4001d">{esc(fmt_num(limit))}</text>'
            )
    parts.append(f'<polyline fill="none" stroke="#12355b" stroke-width="1" points="{path}"/>')
    for v in (y0 + pad, y1 - pad):
        parts.append(
            f'<text x="{left - 4}" y="{y(v) + 3:.1f}" font-size="9" text-anchor="end">'
            f"{esc(fmt_num(v))}</text>"
        )
    parts.append(
        f'<text x="{left}" y="{height - 5}" font-size="9">{esc(fmt_ts(t0))}</text>'
        f'<text x="{left + w}" y="{height - 5}" font-size="9" text-anchor="end">'
        f"{esc(fmt_ts(t1))}</text></svg>"
    )
    return Raw("".join(parts))


async def build_report(
    c: Console, *, start_ns: int, end_ns: int, site: str | None, lang: str, user: str
) -> str:
    """The whole report document for ``[start_ns, end_ns)``, one site or all."""
    from supervision.console.service import compute_risk

    tr = Tr(lang)
    gws = [g for g in await c.ask(c.reader.gateways) if site is None or g.site == site]
    names = {g.gateway for g in gws}
    days = [d for d in await c.ask(c.reader.completeness, start_ns) if d.gateway in names]
    counts = [p for p in await c.ask(c.reader.point_counts, start_ns)
              if site is None or p["site"] == site]  # fmt: skip
    insts = [i for i in await c.ask(c.reader.instruments, start_ns) if i.gateway in names]
    body: list[str] = []
    period = tr("report.period", start=fmt_ts(start_ns), end=fmt_ts(end_ns))
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    body.append(
        f"<h1>{esc(tr('report.title'))}</h1><p class=meta>{esc(period)}<br>"
        f"{esc(tr('report.site', site=site or tr('report.all_sites')))}<br>"
        f"{esc(tr('report.generated', ts=now, user=user))}</p>"
    )
    body.append(f"<h2>{esc(tr('nav.fleet'))}</h2>")
    rows = []
    for g in gws:
        mine = [d for d in days if d.gateway == g.gateway]
        exp = sum(d.expected for d in mine)
        ratio = sum(d.received for d in mine) / exp if exp else None
        missing = ", ".join(f"{a}–{b}" if a != b else str(a) for d in mine for a, b in d.missing)
        rows.append(
            [
                g.site,
                g.gateway,
                g.state or "—",
                fmt_ts(g.last_seen_ns),
                fmt_pct(ratio),
                missing[:200] or "0",
                g.software or g.version or "—",
            ]
        )
    body.append(
        table(
            [
                tr("col.site"),
                tr("col.gateway"),
                tr("fleet.state"),
                tr("fleet.last_seen"),
                tr("fleet.week"),
                tr("fleet.gaps"),
                tr("fleet.software"),
            ],
            rows,
        )
    )
    body.append(f"<h2>{esc(tr('report.points'))}</h2>")
    prow = []
    charts: list[str] = []
    for p in counts:
        spec = c.spec(p["gateway"], p["device"], p["point"])
        lower = spec.lower if spec else None
        upper = spec.upper if spec else None
        st = await c.ask(c.reader.stats, p["gateway"], p["device"], p["point"], start_ns, end_ns)
        sigma = st.mean_moving_range / 1.128 if st.mean_moving_range else None
        value = cpk(st.mean, sigma, lower, upper)
        low = spec is not None and value is not None and value < spec.min_cpk
        oot = p["fail"] / p["count"] if p["count"] else None
        key = f"{p['gateway']}/{p['device']}/{p['point']}"
        prow.append(
            [
                key,
                str(p["count"]),
                Raw(f'<span class="{"bad" if p["fail"] else "ok"}">{esc(fmt_pct(oot))}</span>'),
                str(p["conditional"]),
                str(p["spc"]),
                Raw(f'<span class="{"bad" if low else "ok"}">{esc(fmt_num(value, 3))}</span>'),
                fmt_num(st.mean, 6),
            ]
        )
        if len(charts) < MAX_CHARTS:
            series = await c.ask(
                c.reader.series,
                p["gateway"],
                p["device"],
                p["point"],
                start_ns,
                end_ns,
                CHART_POINTS,
            )
            charts.append(
                f"<div class=chart><b>{esc(key)}</b><br>"
                f"{svg_chart(series, lower=lower, upper=upper)}</div>"
            )
    body.append(
        table(
            [
                "",
                tr("point.count"),
                tr("report.oot"),
                tr("verdict.conditional_pass"),
                tr("ind.spc_signals", n="").rstrip(": "),
                "Cpk",
                tr("point.mean"),
            ],
            prow,
        )
    )
    body.extend(charts)
    body.append(f"<h2>{esc(tr('inst.title'))}</h2>")
    body.append(
        table(
            [
                tr("col.gateway"),
                tr("col.instrument"),
                tr("inst.certificate"),
                tr("inst.valid_until"),
                tr("inst.days_left"),
                tr("inst.status"),
            ],
            [
                [
                    i.gateway,
                    i.instrument,
                    i.certificate or "—",
                    i.valid_until or "—",
                    "" if i.days_left is None else str(i.days_left),
                    Raw(
                        f'<span class="{"ok" if i.status == "valid" else "bad"}">'
                        f"{esc(tr('status.' + i.status))}</span>"
                    ),
                ]
                for i in insts
            ],
        )
    )
    body.append(f"<h2>{esc(tr('risk.title'))}</h2>")
    entries = (await compute_risk(c, site=site))[:20]
    body.append(
        table(
            [tr("risk.rank"), tr("risk.subject"), tr("risk.score"), tr("risk.indicators")],
            [
                [
                    str(n),
                    e.name,
                    f"{e.score:g}",
                    Raw("<br>".join(esc(tr("ind." + i.key, **i.fields)) for i in e.indicators)),
                ]
                for n, e in enumerate(entries, 1)
            ],
        )
    )
    body.append(f"<p class=meta>{esc(tr('report.print'))}</p>")
    lang_attr = "zh-CN" if tr.lang == "zh" else "en"
    return (
        f'<!doctype html><html lang="{lang_attr}"><head><meta charset="utf-8">'
        f"<title>{esc(tr('report.title'))} {esc(site or '')}</title><style>{CSS}</style>"
        f"</head><body>{''.join(body)}</body></html>"
    )
