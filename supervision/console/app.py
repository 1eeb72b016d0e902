"""The supervision console: an aiohttp application over the platform's store.

``metrogate console -c ingest.yaml`` serves it on ``console.listen``. Every page but
the login page needs a session; every form (login and logout included) carries a
CSRF token checked against the session (or, for the login form, a short-lived
cookie), and a POST from another origin is refused. Pages read the store in a thread
with a deadline; a store that is down gives a page that says so and reloads itself.
Alarm actions are signed operator commands (:mod:`gateway.wire.commands`) published
to the gateway, which verifies them; the console itself changes nothing. Views,
roles and config keys: docs/supervision.md.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import aiomqtt
from aiohttp import web

from gateway.wire.commands import CommandError, build_command
from gateway.wire.encoding import topic_base
from gateway.wire.keys import KeyStoreError
from supervision.config import IngestConfig
from supervision.console import views
from supervision.console.analysis import control_chart, cpk
from supervision.console.audit import verify_entries
from supervision.console.auth import Session
from supervision.console.html import esc, page
from supervision.console.i18n import Tr
from supervision.console.service import DAY_NS, Console, compute_risk
from supervision.console.store import SecurityCounts, StoreDown

__all__ = ["Console", "make_app", "serve"]

log = logging.getLogger("metrogate.console")

T = TypeVar("T")
SESSION_COOKIE = "mg_session"
LOGIN_COOKIE = "mg_login"
RETRY_S = 10
COMMAND_TIMEOUT_S = 10.0
STATIC = Path(__file__).resolve().parent / "static"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CONSOLE_KEY: web.AppKey[Console] = web.AppKey("console")
SESSION_KEY: web.RequestKey[Session] = web.RequestKey("session", Session)
FORM_KEY: web.RequestKey[dict[str, str]] = web.RequestKey("form", dict)


class PageError(Exception):
    """A page that cannot be shown: status, title key and text."""

    def __init__(self, status: int, title_key: str, text: str) -> None:
        super().__init__(text)
        self.status, self.title_key, self.text = status, title_key, text


# -- middleware -----------------------------------------------------------------------


def _tr(request: web.Request) -> Tr:
    s: Session | None = request.get(SESSION_KEY)
    c = request.app[CONSOLE_KEY]
    return Tr(s.language if s else c.cfg.console.language)


LIVE_PAGES = frozenset({"/fleet", "/points", "/alarms", "/risk"})


def _render(
    request: web.Request,
    title: str,
    body: str,
    *,
    status: int = 200,
    active: str | None = None,
    charts: bool = False,
    refresh_s: int | None = None,
) -> web.Response:
    s: Session | None = request.get(SESSION_KEY)
    flash: list[str] = []
    if s is not None:
        flash, s.flash = s.flash, []
    html = page(
        _tr(request),
        title,
        body,
        user=s.user if s else None,
        role=s.role if s else None,
        csrf=s.csrf if s else None,
        active=active,
        charts=charts,
        refresh_s=refresh_s,
        flash=flash,
        live_s=request.app[CONSOLE_KEY].cfg.console.refresh
        if status == 200 and active in LIVE_PAGES
        else 0,
    )
    return web.Response(text=html, content_type="text/html", charset="utf-8", status=status)


SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """404 and friends as pages, a store that is down as a page that retries, no tracebacks."""
    tr = _tr(request)
    try:
        resp = await handler(request)
    except PageError as exc:
        resp = _render(
            request, tr(exc.title_key), f'<p class="error">{esc(exc.text)}</p>', status=exc.status
        )
    except StoreDown as exc:
        text = tr(
            "error.store_down_text",
            store=exc.store,
            detail=str(exc).split(": ", 1)[-1],
            seconds=RETRY_S,
        )
        resp = _render(
            request,
            tr("error.store_down"),
            f'<p class="error" id="store-down">{esc(text)}</p>',
            status=503,
            refresh_s=RETRY_S,
        )
    except web.HTTPNotFound:
        text = tr("error.not_found_text", what=tr("error.what.page"), name=request.path)
        resp = _render(
            request, tr("error.not_found"), f'<p class="error">{esc(text)}</p>', status=404
        )
    except web.HTTPMethodNotAllowed:
        resp = _render(request, tr("error.bad_request"), "", status=405)
    except web.HTTPException:
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("console: %s %s failed", request.method, request.path)
        resp = _render(request, tr("error.internal"), "", status=500)
    for k, v in SECURITY_HEADERS.items():
        if k == "Cache-Control" and request.path.startswith("/static/"):
            continue
        resp.headers.setdefault(k, v)
    return resp


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if not origin or origin == "null":
        return origin is None
    u = urlsplit(origin)
    return u.netloc == request.host


@web.middleware
async def sessions(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Login required except for the login page and static files; CSRF on every POST."""
    c = request.app[CONSOLE_KEY]
    session = c.sessions.get(request.cookies.get(SESSION_COOKIE))
    if session is not None:
        request[SESSION_KEY] = session
    public = request.path in ("/login", "/favicon.ico") or request.path.startswith("/static/")
    if session is None and not public:
        if request.method == "GET":
            raise web.HTTPSeeOther("/login")
        raise web.HTTPForbidden(text="login required")
    if request.method == "POST":
        form = await _posted_form(request)
        if form is None:
            tr = _tr(request)
            return _render(
                request,
                tr("error.bad_request"),
                f'<p class="error" id="form-error">{esc(tr("error.bad_request"))}</p>',
                status=400,
            )
        given = form.get("csrf")
        given_s = given if isinstance(given, str) else None
        if request.path == "/login":
            cookie = request.cookies.get(LOGIN_COOKIE)
            ok = (
                bool(cookie)
                and given_s is not None
                and secrets.compare_digest(cookie or "", given_s)
            )
        else:
            ok = session is not None and session.csrf_ok(given_s)
        if not ok or not _same_origin(request):
            tr = _tr(request)
            return _render(
                request,
                tr("error.bad_request"),
                f'<p class="error" id="csrf-error">{esc(tr("error.csrf"))}</p>',
                status=403,
            )
        request[FORM_KEY] = form
    return await handler(request)


async def _posted_form(request: web.Request) -> dict[str, str] | None:
    """The posted form, or None when it is none the console's pages send: another
    content type, bytes that are not UTF-8, a field given twice. (A body above
    ``client_max_size`` raises 413 before this.)"""
    if request.content_type != "application/x-www-form-urlencoded":
        return None
    try:
        form = await request.post()
    except ValueError:  # UnicodeDecodeError and the parser's own complaints
        return None
    out: dict[str, str] = {}
    for k, v in form.items():
        if not isinstance(v, str) or k in out:
            return None
        out[k] = v
    return out


def _session(request: web.Request) -> Session:
    s: Session | None = request.get(SESSION_KEY)
    assert s is not None  # the middleware lets no request without one through
    return s


def _form(request: web.Request) -> dict[str, str]:
    return request.get(FORM_KEY) or {}


# -- login ----------------------------------------------------------------------------


def _cookie_args(c: Console) -> dict[str, Any]:
    return {
        "httponly": True,
        "samesite": "Strict",
        "secure": c.cfg.console.secure_cookies,
        "path": "/",
    }


async def login_get(
    request: web.Request, *, error: str | None = None, user: str = "", status: int = 200
) -> web.Response:
    c = request.app[CONSOLE_KEY]
    tr = _tr(request)
    # one token per browser until it logs in: a second login page (another tab, a
    # redirected favicon request) must not invalidate the form already shown
    token = request.cookies.get(LOGIN_COOKIE) or ""
    if len(token) != 43:
        token = secrets.token_urlsafe(32)
    resp = _render(
        request, tr("login.title"), views.login_page(tr, token, error, user), status=status
    )
    resp.set_cookie(LOGIN_COOKIE, token, max_age=3600, **_cookie_args(c))
    return resp


async def login_post(request: web.Request) -> web.Response:
    c = request.app[CONSOLE_KEY]
    form = _form(request)
    name, password = form.get("user", ""), form.get("password", "")
    tr = _tr(request)
    if c.users.throttled(name):
        return await login_get(request, error=tr("login.throttled"), user=name, status=429)
    user = await asyncio.to_thread(c.users.verify, name, password)
    if user is None:
        log.warning("console: failed login for %r from %s", name[:64], request.remote)
        return await login_get(request, error=tr("login.failed"), user=name, status=401)
    s = c.sessions.create(user, c.cfg.console.language)
    log.info("console: %s logged in (%s)", user.name, user.role)
    resp = web.HTTPSeeOther("/fleet")
    resp.set_cookie(SESSION_COOKIE, s.token, **_cookie_args(c))
    resp.del_cookie(LOGIN_COOKIE, path="/")
    raise resp


async def logout(request: web.Request) -> web.Response:
    c = request.app[CONSOLE_KEY]
    c.sessions.drop(_session(request).token)
    resp = web.HTTPSeeOther("/login")
    resp.del_cookie(SESSION_COOKIE, path="/")
    raise resp


async def language(request: web.Request) -> web.Response:
    s = _session(request)
    s.language = "en" if s.language == "zh" else "zh"
    back = urlsplit(request.headers.get("Referer", "/fleet"))
    path = back.path if back.path.startswith("/") and not back.path.startswith("//") else ""
    # only a path of this console: never a redirect to another host
    raise web.HTTPSeeOther((path + (f"?{back.query}" if back.query else "")) if path else "/fleet")


async def favicon(request: web.Request) -> web.Response:
    return web.Response(status=204)


async def index(request: web.Request) -> web.Response:
    raise web.HTTPSeeOther("/fleet")


# -- views ------------------------------------------------------------------------------


async def _security(c: Console, since_ns: int) -> dict[str, SecurityCounts]:
    """Per gateway, the security events the ingest filed in the store (docs/ingest.md)."""
    rows = await c.ask(c.reader.security, since_ns)
    return {gw: SecurityCounts.of(kinds) for gw, kinds in rows.items()}


async def fleet(request: web.Request) -> web.Response:
    c = request.app[CONSOLE_KEY]
    tr = _tr(request)
    now = c.clock_ns()
    week = (now // DAY_NS - 6) * DAY_NS
    gateways = await c.ask(c.reader.gateways)
    days = await c.ask(c.reader.completeness, week)
    security = await _security(c, week)
    body = views.fleet_page(tr, gateways, days, c.key_ids(), security, views.today_utc(now))
    return _render(request, tr("fleet.title"), body, active="/fleet")


async def points(request: web.Request) -> web.Response:
    c = request.app[CONSOLE_KEY]
    tr = _tr(request)
    refs = await c.ask(c.reader.points, c.clock_ns() - 30 * DAY_NS)
    return _render(request, tr("points.title"), views.points_page(tr, refs), active="/points")


def _not_found(tr: Tr, what: str, name: str) -> PageError:
    return PageError(
        404, "error.not_found", tr("error.not_found_text", what=tr(f"error.what.{what}"), name=name)
    )


async def point(request: web.Request) -> web.Response:
    c = request.app[CONSOLE_KEY]
    tr = _tr(request)
    gw, dev, pt = (request.match_info[k] for k in ("gateway", "device", "point"))
    rng = request.query.get("range", "24h")
    if rng not in views.RANGES:
        rng = "24h"
    ref = await c.ask(c.reader.point_ref, gw, dev, pt)
    if ref is None:
        raise _not_found(tr, "point", f"{gw}/{dev}/{pt}")
    end = c.clock_ns()
    start = end - views.RANGES[rng] * 10**9
    max_points = c.cfg.console.max_points
    series = await c.ask(c.reader.series, gw, dev, pt, start, end, max_points)
    stats = await c.ask(c.reader.stats, gw, dev, pt, start, end)
    spec = c.spec(gw, dev, pt)
    sigma = stats.mean_moving_range / 1.128 if stats.mean_moving_range else None
    chart = control_chart(
        [(s.ts_ns, s.value, s.n) for s in series.samples],
        kind=spec.chart if spec else "individuals",
        subgroup=spec.subgroup if spec else 1,
        sigma_within=sigma,
    )
    capability = cpk(stats.mean, sigma, spec.lower if spec else None, spec.upper if spec else None)
    body = views.point_page(tr, ref, rng, series, stats, spec, chart, capability)
    return _render(request, tr("point.title", point=ref.key), body, active="/points", charts=True)


async def instruments(request: web.Request) -> web.Response:
    c = request.app[CONSOLE_KEY]
    tr = _tr(request)
    since = c.clock_ns() - 30 * DAY_NS
    items = await c.ask(c.reader.instruments, since)
    events = await c.ask(
        c.reader.events, c.clock_ns() - 400 * DAY_NS, types=CALIBRATION_EVENTS, limit=5000
    )
    labs: dict[str, str] = {}
    for e in events:
        d = e.data_dict()
        if d.get("certificate") and d.get("lab"):
            labs[str(d["certificate"])] = str(d["lab"])
    q = request.query
    body = views.instruments_page(
        tr,
        items,
        labs,
        sort=q.get("sort", "status"),
        status=q.get("status", ""),
        q=q.get("q", "")[:100],
    )
    return _render(request, tr("inst.title"), body, active="/instruments")


CALIBRATION_EVENTS = (
    "calibration_expired",
    "calibration_due_soon",
    "calibration_missing",
    "calibration_valid",
)


async def alarms(request: web.Request) -> web.Response:
    c = request.app[CONSOLE_KEY]
    tr = _tr(request)
    s = _session(request)
    rows = await c.ask(c.reader.alarms, c.clock_ns() - 30 * DAY_NS)
    latest: dict[tuple[str, str], Any] = {}
    for a in rows:  # newest first
        latest.setdefault((a.gateway, a.alarm), a)
    current = sorted(
        latest.values(), key=lambda a: (a.state == "normal" and not a.shelved, a.gateway, a.alarm)
    )
    body = views.alarms_page(tr, current, rows[:200], operator=s.role == "operator", csrf=s.csrf)
    return _render(request, tr("alarms.title"), body, active="/alarms")


async def alarm_history(request: web.Request) -> web.Response:
    c = request.app[CONSOLE_KEY]
    tr = _tr(request)
    gw, alarm = request.match_info["gateway"], request.match_info["alarm"]
    rows = [
        a
        for a in await c.ask(c.reader.alarms, c.clock_ns() - 90 * DAY_NS, gateway=gw)
        if a.alarm == alarm
    ]
    if not rows:
        raise _not_found(tr, "alarm", f"{gw}/{alarm}")
    body = views.alarm_history_page(tr, rows)
    return _render(request, f"{tr('alarms.history')}: {alarm}", body, active="/alarms")


async def alarm_action(request: web.Request) -> web.Response:
    c = request.app[CONSOLE_KEY]
    tr = _tr(request)
    s = _session(request)
    action = request.match_info["action"]
    if s.role != "operator":
        raise PageError(403, "error.forbidden", tr("error.forbidden_text"))
    form = _form(request)
    gw, alarm = form.get("gateway", ""), form.get("alarm", "")
    rows = await c.ask(c.reader.alarms, c.clock_ns() - 90 * DAY_NS, gateway=gw)
    known = next((a for a in rows if a.alarm == alarm), None)
    if known is None:
        raise _not_found(tr, "alarm", f"{gw}/{alarm}")
    try:
        signed = c.signer_of(s.user)
    except KeyStoreError as exc:
        log.error("console: operator key of %s: %s", s.user, exc)
        signed = None
    if signed is None:
        s.flash.append(tr("alarms.no_key"))
        raise web.HTTPSeeOther("/alarms")
    operator, signer = signed
    duration: float | None = None
    if action == "shelve":
        try:
            duration = max(1.0, min(10080.0, float(form.get("minutes", "60")))) * 60
        except ValueError:
            raise PageError(400, "error.bad_request", tr("error.bad_request")) from None
    try:
        payload = build_command(
            signer,
            action="ack" if action == "ack" else "shelve",
            gateway=gw,
            site=known.site,
            alarm=alarm,
            operator=operator,
            ts_us=c.clock_ns() // 1000,
            duration_s=duration,
        )
        await send_command(c.cfg, known.site, gw, action, payload)
    except (CommandError, aiomqtt.MqttError, OSError, TimeoutError) as exc:
        log.error("console: %s %s/%s by %s not sent: %s", action, gw, alarm, operator, exc)
        s.flash.append(tr("alarms.send_failed", detail=str(exc)))
        raise web.HTTPSeeOther("/alarms") from None
    log.info(
        "console: %s %s/%s signed by %s (key %s) sent", action, gw, alarm, operator, signer.kid
    )
    s.flash.append(
        tr("alarms.sent", action=tr(f"alarms.{action}"), alarm=alarm, operator=operator, gateway=gw)
    )
    raise web.HTTPSeeOther("/alarms")


async def send_command(
    cfg: IngestConfig, site: str, gateway: str, action: str, payload: bytes
) -> None:
    """Publish one signed command (QoS 1) on the gateway's ``cmd/{action}`` topic, with the
    broker settings of the ingest's ``mqtt`` section."""
    m = cfg.mqtt
    u = urlsplit(m.url)
    tls_context: ssl.SSLContext | None = None
    if u.scheme == "mqtts" or m.tls is not None:
        tls_context = ssl.create_default_context(
            cafile=str(m.tls.ca) if m.tls and m.tls.ca else None
        )
        if m.tls and m.tls.cert:
            tls_context.load_cert_chain(str(m.tls.cert), str(m.tls.key) if m.tls.key else None)
        if m.tls and m.tls.insecure:
            tls_context.check_hostname = False
    topic = f"{topic_base(m.prefix, site, gateway)}/cmd/{action}"
    own = cfg.console.mqtt_username is not None
    user = cfg.console.mqtt_username if own else m.username
    password = cfg.console.mqtt_password if own else m.password
    async with (
        asyncio.timeout(COMMAND_TIMEOUT_S),
        aiomqtt.Client(
            u.hostname or "127.0.0.1",
            u.port or (8883 if u.scheme == "mqtts" else 1883),
            identifier=f"{m.client_id}-console-{secrets.token_hex(4)}",
            username=user,
            password=password.get_secret_value() if password else None,
            tls_context=tls_context,
        ) as client,
    ):
        await client.publish(topic, payload, qos=1)


async def risk(request: web.Request) -> web.Response:
    c = request.app[CONSOLE_KEY]
    tr = _tr(request)
    entries = await compute_risk(c)
    window = views._duration(int(c.cfg.console.risk.window))
    return _render(request, tr("risk.title"), views.risk_page(tr, entries, window), active="/risk")


async def audit(request: web.Request) -> web.Response:
    c = request.app[CONSOLE_KEY]
    tr = _tr(request)
    gw = request.match_info["gateway"]
    gws = {g.gateway for g in await c.ask(c.reader.gateways)}
    if gw not in gws and gw not in c.key_ids():
        raise _not_found(tr, "gateway", gw)
    typ = request.query.get("type")
    entries = await c.ask(c.reader.events, 0, gateway=gw, limit=5000)
    checked = verify_entries(entries, c.gateway_keys(gw))
    if typ:
        checked = [x for x in checked if x.entry.type == typ]
    checked = checked[::-1]  # newest first
    return _render(
        request, tr("audit.title", gateway=gw), views.audit_page(tr, checked), active="/fleet"
    )


async def report_page(request: web.Request) -> web.Response:
    c = request.app[CONSOLE_KEY]
    tr = _tr(request)
    sites = sorted({g.site for g in await c.ask(c.reader.gateways)})
    return _render(request, tr("report.title"), views.report_form(tr, sites), active="/report")


async def report_html(request: web.Request) -> web.Response:
    from supervision.console.report_html import build_report

    c = request.app[CONSOLE_KEY]
    s = _session(request)
    rng = request.query.get("range", "7d")
    seconds = views.RANGES.get(rng, 7 * 86400)
    site = request.query.get("site") or None
    end = c.clock_ns()
    html = await build_report(
        c, start_ns=end - seconds * 10**9, end_ns=end, site=site, lang=s.language, user=s.user
    )
    return web.Response(text=html, content_type="text/html", charset="utf-8")


# the files the console serves, fixed when it starts: a request names one of them or gets
# a 404 (the file system is never asked about a name from outside, so an over-long or
# odd one cannot turn into a server error)
STATIC_FILES: Final = {
    p.relative_to(STATIC).as_posix(): p for p in sorted(STATIC.rglob("*")) if p.is_file()
}


async def static_file(request: web.Request) -> web.StreamResponse:
    path = STATIC_FILES.get(request.match_info["path"])
    if path is None:
        raise web.HTTPNotFound()
    return web.FileResponse(path)


def make_app(console: Console) -> web.Application:
    """The aiohttp application (routes, middlewares, static files)."""
    app = web.Application(middlewares=[errors, sessions], client_max_size=64 * 1024)
    app[CONSOLE_KEY] = console
    app.router.add_get("/login", login_get)
    app.router.add_post("/login", login_post)
    app.router.add_post("/logout", logout)
    app.router.add_post("/language", language)
    app.router.add_get("/", index)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/fleet", fleet)
    app.router.add_get("/points", points)
    app.router.add_get("/point/{gateway}/{device}/{point}", point)
    app.router.add_get("/instruments", instruments)
    app.router.add_get("/alarms", alarms)
    app.router.add_get("/alarm/{gateway}/{alarm:.+}", alarm_history)
    app.router.add_post("/alarms/{action:ack|shelve}", alarm_action)
    app.router.add_get("/risk", risk)
    app.router.add_get("/audit/{gateway}", audit)
    app.router.add_get("/report", report_page)
    app.router.add_get("/report/html", report_html)
    app.router.add_get("/static/{path:.+}", static_file)
    return app


async def serve(console: Console, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving; returns the runner (``await runner.cleanup()`` to stop) and the port."""
    runner = web.AppRunner(make_app(console), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, int(bound)
