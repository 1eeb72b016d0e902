"""What the console's pages and the HTML report share: config, store reader, users,
sessions and keys (:class:`Console`), and the risk ranking over the store."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, TypeVar

from gateway.wire.keys import KeyStoreError, load_signer
from gateway.wire.signing import Signer
from supervision.config import IngestConfig, PointSpec
from supervision.console.analysis import cpk
from supervision.console.auth import Sessions, Users
from supervision.console.risk import RiskEntry, RiskInputs, numbering_gaps, rank
from supervision.console.store import SecurityCounts, StoreDown, StoreReader, reader_for
from supervision.keyring import Keyring

__all__ = ["DAY_NS", "RISK_EVENTS", "Console", "compute_risk"]

log = logging.getLogger("metrogate.console")

T = TypeVar("T")
DAY_NS = 86_400 * 10**9
RISK_EVENTS = ("tamper_counter", "outbox_drop")


@dataclass(slots=True)
class Console:
    """What the handlers share: config, store reader, users, sessions, keys."""

    cfg: IngestConfig
    reader: StoreReader
    users: Users
    sessions: Sessions
    keyring: Keyring | None = None
    clock_ns: Callable[[], int] = time.time_ns
    _signers: dict[str, Signer] = field(default_factory=dict)
    # the last risk ranking (all sites) and when it was computed (monotonic s)
    _risk: tuple[float, list[RiskEntry]] | None = None

    @classmethod
    def from_config(cls, cfg: IngestConfig, *, reader: StoreReader | None = None) -> Console:
        c = cfg.console
        try:
            keyring: Keyring | None = Keyring.load(cfg.keys_dir)
        except KeyStoreError as exc:
            log.warning("gateway keys not loaded (%s): audit entries cannot be verified", exc)
            keyring = None
        return cls(
            cfg,
            reader or reader_for(cfg.store, timeout=c.query_timeout),
            Users(c.users),
            Sessions(c.session_ttl),
            keyring,
        )

    async def ask(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """Run a store question in a thread, bounded by ``console.query_timeout``."""
        try:
            async with asyncio.timeout(self.cfg.console.query_timeout):
                return await asyncio.to_thread(fn, *args, **kw)
        except TimeoutError:
            raise StoreDown(self.reader.name, "no answer in time") from None

    def spec(self, gateway: str, device: str, point: str) -> PointSpec | None:
        key = f"{gateway}/{device}/{point}"
        for s in self.cfg.console.points:
            if fnmatchcase(key, s.match):
                return s
        return None

    def key_ids(self) -> dict[str, str]:
        if self.keyring is None:
            return {}
        out: dict[str, str] = {}
        for kid, gw in self.keyring.gateway_of.items():
            out[gw] = kid
        return out

    def gateway_keys(self, gateway: str) -> dict[str, Any]:
        if self.keyring is None:
            return {}
        return {k: v for k, v in self.keyring.keys.items() if self.keyring.gateway_of[k] == gateway}

    def signer_of(self, user: str) -> tuple[str, Signer] | None:
        u = self.users.by_name.get(user)
        if u is None or u.role != "operator" or not u.operator_id or u.operator_key is None:
            return None
        if user not in self._signers:
            self._signers[user] = load_signer(u.operator_key)
        return u.operator_id, self._signers[user]


async def compute_risk(c: Console, *, site: str | None = None) -> list[RiskEntry]:
    """The ranked entries over ``console.risk.window`` (the risk view and the report),
    recomputed at most every ``console.risk.refresh`` seconds."""
    now = time.monotonic()
    cached = c._risk
    if cached is not None and now - cached[0] < c.cfg.console.risk.refresh:
        entries = cached[1]
    else:
        entries = await _rank_now(c)
        c._risk = (now, entries)
    return [e for e in entries if site is None or e.site == site]


async def _rank_now(c: Console) -> list[RiskEntry]:
    since = c.clock_ns() - int(c.cfg.console.risk.window * 1e9)
    counts = await c.ask(c.reader.point_counts, since)
    insts = await c.ask(c.reader.instruments, since)
    days = await c.ask(c.reader.completeness, since)
    gws = await c.ask(c.reader.gateways)
    events = await c.ask(c.reader.events, since, types=RISK_EVENTS, limit=20000)
    security = await c.ask(c.reader.security, since)
    marks = await c.ask(c.reader.security_marks, since)
    sites = {g.gateway: g.site for g in gws}
    tamper: dict[str, list[str]] = {}
    drops: dict[str, list[str]] = numbering_gaps(marks)
    for e in events:
        if e.type == "tamper_counter":
            d = e.data_dict()
            # the first reading of a meter is logged with no previous value: not a change
            if isinstance(d.get("previous"), dict) and d.get("previous") != d.get("counters"):
                tamper.setdefault(e.gateway, []).append(str(d.get("device", "")))
        elif e.type == "outbox_drop":
            drops.setdefault(e.gateway, []).append("outbox_drop")
    cpks: dict[tuple[str, str, str], tuple[float, float]] = {}
    specs = {
        (p["gateway"], p["device"], p["point"]): c.spec(p["gateway"], p["device"], p["point"])
        for p in counts
    }
    if any(
        sp is not None and (sp.lower is not None or sp.upper is not None) for sp in specs.values()
    ):
        moments = await c.ask(c.reader.moments, since)  # one request for every point
        for key, spec in specs.items():
            st = moments.get(key)
            if spec is None or st is None or (spec.lower is None and spec.upper is None):
                continue
            sigma = st.mean_moving_range / 1.128 if st.mean_moving_range else None
            value = cpk(st.mean, sigma, spec.lower, spec.upper)
            if value is not None:
                cpks[key] = (value, spec.min_cpk)
    inputs = RiskInputs(
        point_counts=counts,
        instruments=insts,
        days=days,
        clocks={g.gateway: g.clock for g in gws},
        sites=sites,
        tamper=tamper,
        log_gaps=drops,
        security={g: SecurityCounts.of(v).messages for g, v in security.items()},
        cpk=cpks,
    )
    return rank(inputs, c.cfg.console.risk)
