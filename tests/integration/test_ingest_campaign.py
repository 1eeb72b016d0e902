"""A campaign of hostile and broken messages against a running ingest *process*.

``python -m gateway ingest -c FILE`` runs as a subprocess on a temporary config (a
SQLite store, a real Mosquitto). Hypothesis throws, per example, a few messages
among: random topics under the prefix, random and adversarial bytes, 10^5 nested
brackets, numbers such as 10**400, -1 and 2**70 where integers belong, oversize
payloads, invalid UTF-8, retained poison on status topics, floods of QoS 0, and
validly signed batches with wrong content (malformed readings, another gateway
named, an old batch replayed, a used number with other bytes, one sealed later). After
each example a real batch sealed by the gateway's own sealer must land in the
store, and the process must be alive. At the end its resident memory must not have
grown beyond a bound, and after a restart (the retained poison delivered again) a
real batch still lands. Bounded in examples and in time.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.wire.signing import Signer
from gateway.wire.verify import MAX_SEQ, MAX_TS_US
from tests.eventually import eventually_blocking
from tests.ingest_support import (
    PREFIX,
    T0_US,
    Publisher,
    RealGateway,
    make_reading,
    new_signer,
    register,
    topic,
)
from tests.services import Mosquitto

pytestmark = pytest.mark.services  # the test command installs the servers: never skipped
ROOT = Path(__file__).resolve().parents[2]
MAX_PAYLOAD = 65_536
RSS_GROWTH_KB = 64 * 1024  # generous: a Python process, paho and SQLite; but bounded
DEEP = 100_000

HUGE = [10**400, -1, 2**70, 2**63, -(2**63) - 1, 10**20, MAX_TS_US + 1, MAX_SEQ + 1, 0]
ADVERSARIAL = [
    b"",
    b"\n",
    b"\n" * 1000,
    b"[" * DEEP,  # above max_payload: refused by size
    b"[" * 60_000,  # below it: refused by the depth scan
    b'{"a":' * 12_000,
    b'["' + b"[" * 50_000 + b'"]',  # brackets in a string: not nesting
    b"\xff\xfe\xfd" * 100,  # not UTF-8
    b'{"v":1,"state":"online"}\n\xc3\x28',
    b'{"alg":"Ed25519","kid":"0000000000000000","sig":"AAAA"}',
    b"x" * (MAX_PAYLOAD + 1),
    b'{"v":1,"x":NaN}',
    b'{"v":1,"x":Infinity}',
    b"1" * 5000,  # a number beyond Python's digit limit for int()
]
KINDS = ["data", "alarm", "event", "status"]
SEG = st.text(alphabet=string.ascii_letters + string.digits + "_.-", min_size=1, max_size=8)
# what a broker takes in a topic level (Mosquitto disconnects a client that sends control
# characters, surrogates or non-characters: MQTT 5, 1.5.4)
ANY_SEG = st.text(
    st.characters(whitelist_categories=("L", "N", "P", "S", "Zs"), blacklist_characters="/+#"),
    max_size=10,
)


def _topic(site: str, gateway: str, kind: str) -> str:
    return f"{PREFIX}/v1/{site}/{gateway}/{kind}"


TOPICS = st.one_of(
    st.builds(_topic, ANY_SEG, st.sampled_from(["gw1", "gw2", "gw9"]) | ANY_SEG,
              st.sampled_from(KINDS) | ANY_SEG),
    st.lists(ANY_SEG, max_size=6).map(lambda levels: "/".join([PREFIX, *levels])),
)  # fmt: skip
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.sampled_from(HUGE), st.integers(),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
)  # fmt: skip
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=8,
)  # fmt: skip
# a change that makes a reading invalid for sure, plus optional random ones
BREAK_LIST: list[tuple[str, Any]] = [
    ("quality", "excellent"), ("ts", 10**20), ("ts", 10**400), ("ts", -1), ("value", [1]),
    ("value", 10**400), ("raw", 2**1100), ("U", 10**400), ("extra", 1), ("flags", "x"),
    ("value", [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]),
    ("device", None), ("k", True),
]  # fmt: skip
BREAK = st.sampled_from(BREAK_LIST)
# never a valid new number: a signed batch with one would be the gateway's own
SEQ_INVALID = [v for v in HUGE if not 1 <= v <= MAX_SEQ] + ["7", 1.5, None, True, [1]]


def status_since(since: Any) -> bytes:
    doc = {"v": 1, "state": "online", "gateway": "gw1", "site": "site1", "since": since}
    return json.dumps(doc).encode()


# what one hostile message is made of (built against the campaign's state)
RECIPES = st.one_of(
    st.tuples(st.just("junk"), TOPICS, st.binary(max_size=300) | st.sampled_from(ADVERSARIAL),
              st.sampled_from([0, 1])),
    st.tuples(st.just("status"), st.sampled_from(["gw1", "gw9"]),
              st.sampled_from(ADVERSARIAL) | st.builds(status_since, st.sampled_from(HUGE) | JSON),
              st.booleans()),
    st.tuples(st.just("bad_readings"), BREAK, st.lists(st.tuples(st.text(max_size=8), JSON),
                                                       max_size=3)),
    st.tuples(st.just("bad_header"), st.just("seq"), st.sampled_from(SEQ_INVALID) | JSON.filter(
        lambda v: not (type(v) is int and 1 <= v <= MAX_SEQ))),
    st.tuples(st.just("bad_header"), st.sampled_from(["sealed", "v"]),
              st.sampled_from(HUGE) | JSON),
    st.tuples(st.just("other_gateway"), st.booleans()),
    st.tuples(st.just("replay"), st.integers(min_value=0)),
    st.tuples(st.just("same_seq_other_bytes"), st.integers(min_value=0), st.booleans()),
    st.tuples(st.just("deep_signed"), st.integers(min_value=33, max_value=5000)),
    st.tuples(st.just("flood"), st.integers(min_value=50, max_value=400)),
)  # fmt: skip


class IngestProcess:
    """``python -m gateway ingest -c FILE`` as a subprocess, its log in a file."""

    def __init__(self, tmp: Path, cfg: dict[str, Any]) -> None:
        self.path = tmp / "ingest.yaml"
        self.path.write_text(json.dumps(cfg))  # JSON is YAML
        self.log = tmp / "ingest.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "ingest", "-c", str(self.path)],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                env=os.environ | {"PYTHONPATH": str(ROOT)},
            )  # fmt: skip
        eventually_blocking(
            lambda: self.log.read_text().count("MQTT connected") >= self.starts,
            "ingest connected",
            within=20,
        )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_kb(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def terminate(self) -> dict[str, int]:
        """SIGTERM, wait for a clean exit, and the final counters from the log."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(30) == 0, self.log.read_text()[-3000:]
        for line in reversed(self.log.read_text().splitlines()):
            if "ingest stopped:" in line:
                # a logfmt line: msg="..." holds the message as a JSON string
                msg, _ = json.JSONDecoder().raw_decode(line, line.index("msg=") + 4)
                counts: dict[str, int] = json.loads(msg.split("ingest stopped:", 1)[1])
                return counts
        raise AssertionError("no final counters in the log")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class Campaign:
    """The state the recipes are built against: the real gateway and what it sent."""

    signer: Signer
    other: Signer
    gw: RealGateway
    store: Path
    sent: list[bytes] = field(default_factory=list)

    def real_batch(self) -> tuple[str, bytes, int]:
        seq = self.gw.seq + 1
        sealed = T0_US + seq * 1_000_000
        rs = [make_reading(sealed + i, f"dev{i % 2}", f"p{i}", 20.0 + i) for i in range(3)]
        t, payload = self.gw.data(rs, sealed)
        self.sent.append(payload)
        return t, payload, seq

    def stored(self, seq: int) -> bool:
        with sqlite3.connect(f"file:{self.store}?mode=ro", uri=True, timeout=5) as db:
            return bool(
                db.execute("SELECT 1 FROM batches WHERE gateway='gw1' AND seq=?", (seq,)).fetchall()
            )

    def body(
        self,
        seq: int,
        readings: list[Any],
        *,
        gateway: str = "gw1",
        over: dict[str, Any] | None = None,
    ) -> bytes:
        doc = {"v": 1, "type": "data", "gateway": gateway, "site": "site1", "seq": seq,
               "sealed": T0_US + seq * 1_000_000, "readings": readings} | (over or {})  # fmt: skip
        return json.dumps(doc, separators=(",", ":")).encode()

    def reading(self, seq: int) -> dict[str, Any]:
        return {"ts": T0_US + seq * 1_000_000 + 7, "device": "dev0", "point": "p0",
                "value": 1.0, "quality": "good"}  # fmt: skip

    def build(self, recipe: tuple[Any, ...]) -> list[tuple[str, bytes, int, bool]]:
        """(topic, payload, qos, retain) of one recipe."""
        kind = recipe[0]
        used = max(1, self.gw.seq)
        if kind == "junk":
            _, t, payload, qos = recipe
            return [(t, payload, qos, False)]
        if kind == "status":
            _, gateway, payload, retain = recipe
            return [(topic(gateway, "status"), payload, 1, retain)]
        if kind == "bad_readings":
            _, (key, value), more = recipe
            r = self.reading(used) | dict(more) | {key: value}
            payload = self.signer.sign_payload(self.body(used, [r]))
            return [(topic("gw1"), payload, 1, False)]
        if kind == "bad_header":
            _, key, value = recipe
            if key == "v" and value == 1:
                value = 2
            body = self.body(used, [self.reading(used)], over={key: value})
            return [(topic("gw1"), self.signer.sign_payload(body), 1, False)]
        if kind == "other_gateway":
            _, on_own_topic = recipe
            if on_own_topic:  # gw1's key, a body naming gw2, on gw1's topic
                body = self.body(used, [self.reading(used)], gateway="gw2")
                return [(topic("gw1"), self.signer.sign_payload(body), 1, False)]
            # gw1's key on gw2's topic, naming gw2 (gw2 has its own key)
            body = self.body(used, [self.reading(used)], gateway="gw2")
            return [(topic("gw2"), self.signer.sign_payload(body), 1, False)]
        if kind == "replay":
            _, i = recipe
            return [(topic("gw1"), self.sent[i % len(self.sent)], 1, False)]
        if kind == "same_seq_other_bytes":
            _, i, later = recipe
            seq = 1 + i % used
            r = self.reading(seq) | {"value": 99.5}
            over = {"sealed": T0_US + 10**12 + seq} if later else {}  # later: a reset
            payload = self.signer.sign_payload(self.body(seq, [r], over=over))
            return [(topic("gw1"), payload, 1, False)]
        if kind == "deep_signed":
            _, depth = recipe
            r = self.reading(used) | {"value": None}
            body = self.body(used, [r]).replace(b'"value":null', b'"value":' + b"[" * depth
                                                + b"]" * depth)  # fmt: skip
            return [(topic("gw1"), self.signer.sign_payload(body), 1, False)]
        assert kind == "flood"
        _, n = recipe
        return [(topic("gw1"), b"q" * 10_000, 0, False)] * n


@pytest.fixture
def campaign(tmp_path: Path) -> Iterator[tuple[Mosquitto, IngestProcess, Campaign]]:
    signer, other = new_signer(), new_signer()
    register(tmp_path / "keys", "gw1", signer)
    register(tmp_path / "keys", "gw2", other)
    store = tmp_path / "store.sqlite"
    gw = RealGateway(signer, "gw1", "site1", tmp_path / "gw")
    with Mosquitto(tmp_path / "mosquitto") as broker:
        cfg = {
            "mqtt": {"url": broker.url, "client_id": "campaign", "shared": False,
                     "max_payload": MAX_PAYLOAD, "qos0_max_messages": 100,
                     "qos0_max_bytes": 1_048_576},
            "keys_dir": str(tmp_path / "keys"),
            "store": {"kind": "sqlite", "path": str(store)},
            "batch": {"max_lines": 5000, "max_delay": 0.05, "retry_initial": 0.1,
                      "retry_max": 1},
            "stats_interval": 0,
            "ops": {"enabled": False},
        }  # fmt: skip
        proc = IngestProcess(tmp_path, cfg)
        try:
            proc.start()
            yield broker, proc, Campaign(signer, other, gw, store)
        finally:
            proc.close()
            gw.close()


def test_hostile_campaign_against_a_running_ingest_process(
    campaign: tuple[Mosquitto, IngestProcess, Campaign],
) -> None:
    broker, proc, c = campaign
    started = time.monotonic()
    pub = Publisher(broker.port)
    try:

        def land_a_real_batch() -> None:
            t, payload, seq = c.real_batch()
            pub.publish([(t, payload)])
            eventually_blocking(
                lambda: c.stored(seq) or not proc.alive, f"real batch {seq} stored", within=15
            )
            assert proc.alive, proc.log.read_text()[-3000:]
            assert c.stored(seq), f"batch {seq} not stored"

        for _ in range(3):  # warm up: imports, the store, the caches
            land_a_real_batch()
        rss_before = proc.rss_kb()

        # every named kind of hostile input at least once, then generated mixes
        @example(
            [
                ("junk", topic("gw1", kind), payload, 1)
                for payload in ADVERSARIAL
                for kind in ("data", "event")
            ]
        )
        @example(
            [
                ("status", gw, payload, True)
                for gw in ("gw1", "gw9")
                for payload in [*ADVERSARIAL, *(status_since(v) for v in HUGE)]
            ]
        )
        @example(
            [("bad_readings", b, []) for b in BREAK_LIST]
            + [("bad_header", "seq", v) for v in SEQ_INVALID]
            + [("bad_header", "sealed", v) for v in HUGE]
            + [("bad_header", "v", 2)]
        )
        @example(
            [
                ("other_gateway", True),
                ("other_gateway", False),
                ("replay", 0),
                ("replay", 1),
                ("same_seq_other_bytes", 1, False),
                ("same_seq_other_bytes", 2, True),
                ("deep_signed", 2000),
                ("flood", 2000),
            ]
        )
        @settings(
            max_examples=100,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(st.lists(RECIPES, min_size=1, max_size=5))
        def campaign_example(recipes: list[tuple[Any, ...]]) -> None:
            for recipe in recipes:
                for t, payload, qos, retain in c.build(recipe):
                    pub.publish([(t, payload)], qos=qos, retain=retain)
            land_a_real_batch()

        campaign_example()
        rss_after = proc.rss_kb()
        assert proc.alive
        counts = proc.terminate()
        # the retained poison comes again at the next subscription; still a real batch lands
        proc.start()
        land_a_real_batch()
        again = proc.terminate()
    finally:
        pub.close()
    elapsed = time.monotonic() - started
    print(
        f"\ncampaign: {counts.get('received', 0)} messages, RSS {rss_before} kB before, "
        f"{rss_after} kB after; {elapsed:.1f} s; " + json.dumps(dict(sorted(counts.items())))
    )
    assert rss_after - rss_before < RSS_GROWTH_KB, (rss_before, rss_after)
    assert counts.get("internal_error", 0) == 0 and again.get("internal_error", 0) == 0, counts
    assert counts["dead_letter"] > 0 and counts["verified"] > 0
    assert counts["acked"] + counts.get("unacknowledged", 0) <= counts["received"]
    assert c.gw.seq == len(c.sent)
    with sqlite3.connect(c.store) as db:
        ((n,),) = db.execute("SELECT count(*) FROM batches WHERE gateway='gw1'").fetchall()
        ((bad,),) = db.execute("SELECT count(*) FROM readings WHERE value = 99.5").fetchall()
    assert n == len(c.sent) and bad == 0  # every real batch, and nothing else, stored
