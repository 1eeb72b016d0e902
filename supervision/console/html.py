"""Small HTML building blocks: escaping, the page frame, tables, times and numbers.

Everything the console prints goes through :func:`esc` (or is built from escaped
parts), so stored text — alarm messages, event data, ids — can never become markup.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote

from supervision.console.i18n import Tr

__all__ = [
    "Raw",
    "esc",
    "fmt_num",
    "fmt_pct",
    "fmt_ts",
    "json_script",
    "link",
    "page",
    "table",
    "url_part",
]


class Raw(str):
    """Text that is already HTML."""

    __slots__ = ()


def esc(x: object) -> Raw:
    if isinstance(x, Raw):
        return x
    return Raw(html.escape("" if x is None else str(x), quote=True))


def url_part(s: str) -> str:
    return quote(s, safe="")


def link(href: str, text: object, **attrs: str) -> Raw:
    extra = "".join(f' {k.rstrip("_")}="{esc(v)}"' for k, v in attrs.items())
    return Raw(f'<a href="{esc(href)}"{extra}>{esc(text)}</a>')


def fmt_ts(ns: int | None, tr: Tr | None = None) -> str:
    if ns is None:
        return tr("none") if tr else "—"
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def fmt_num(v: Any, digits: int = 4) -> str:
    if isinstance(v, bool) or v is None:
        return "—" if v is None else str(v)
    if isinstance(v, int | float):
        return f"{v:.{digits}g}"
    return str(v)


def fmt_pct(ratio: float | None) -> str:
    return "—" if ratio is None else f"{100 * ratio:.2f} %"


def json_script(element_id: str, data: Any) -> Raw:
    """Data for the page's script, in a non-executed JSON block (``</`` escaped)."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Raw(f'<script type="application/json" id="{esc(element_id)}">{text}</script>')


def table(
    headers: Sequence[object],
    rows: Iterable[Sequence[object]],
    *,
    table_id: str | None = None,
    classes: str = "",
    row_attrs: Iterable[dict[str, str]] | None = None,
) -> Raw:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    attrs_iter = iter(row_attrs) if row_attrs is not None else None
    body = []
    for r in rows:
        attrs = next(attrs_iter) if attrs_iter is not None else {}
        a = "".join(f' {k}="{esc(v)}"' for k, v in attrs.items())
        body.append(f"<tr{a}>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>")
    tid = f' id="{esc(table_id)}"' if table_id else ""
    cls = f' class="{esc(classes)}"' if classes else ""
    return Raw(
        f"<table{tid}{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


NAV = (
    ("/fleet", "nav.fleet"),
    ("/points", "nav.points"),
    ("/instruments", "nav.instruments"),
    ("/alarms", "nav.alarms"),
    ("/risk", "nav.risk"),
    ("/report", "nav.report"),
)


def page(
    tr: Tr,
    title: str,
    body: str,
    *,
    user: str | None = None,
    role: str | None = None,
    csrf: str | None = None,
    active: str | None = None,
    charts: bool = False,
    refresh_s: int | None = None,
    flash: Sequence[str] = (),
    live_s: float = 0,
) -> str:
    """A whole page in the frame: navigation (when logged in), flash messages, body.

    ``refresh_s``: the page reloads itself (an error page that retries); ``live_s``: the
    page's script reloads it that often while nobody is typing in it.
    """
    lang = "zh-CN" if tr.lang == "zh" else "en"
    head_extra = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    nav = ""
    if user is not None and csrf is not None:
        items = "".join(
            f'<a href="{href}"{" class=active" if href == active else ""}>{esc(tr(key))}</a>'
            for href, key in NAV
        )
        role_text = tr(f"role.{role}") if role in ("viewer", "operator") else str(role)
        nav = (
            f'<header><span class="brand">{esc(tr("app.title"))}</span><nav>{items}</nav>'
            f'<span class="user" id="who">{esc(tr("user.signed_in", user=user, role=role_text))}'
            "</span>"
            f'<form method="post" action="/language" class="inline">'
            f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
            f'<button type="submit" id="language">{esc(tr("nav.language"))}</button></form>'
            f'<form method="post" action="/logout" class="inline">'
            f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
            f'<button type="submit" id="logout">{esc(tr("nav.logout"))}</button></form>'
            "</header>"
        )
    flashes = "".join(f'<p class="flash">{esc(f)}</p>' for f in flash)
    scripts = (
        '<script src="/static/vendor/echarts.min.js"></script>'
        '<script src="/static/console.js"></script>'
        if charts
        else '<script src="/static/console.js"></script>'
    )
    return (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">{head_extra}'
        f"<title>{esc(title)} · metrogate</title>"
        '<link rel="stylesheet" href="/static/console.css"></head>'
        f'<body data-live="{live_s:g}">{nav}<main><h1>{esc(title)}</h1>{flashes}{body}</main>'
        f"{scripts}</body></html>"
    )
