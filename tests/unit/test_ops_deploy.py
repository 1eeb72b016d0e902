"""Deployment files: they parse, and reference only things that exist.

No Docker engine runs here, so the compose stack, the Grafana dashboard, the
Mosquitto ACL and the systemd units are checked statically: against the real
line-protocol schema (lines written by the ingest code from real batches), the
metric names the collectors emit, the CLI's commands and the config models.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from gateway.cli.app import build_parser
from gateway.config.loader import load_config
from gateway.config.models.metrology import AlarmSeverity
from gateway.config.ops import OpsConfig
from gateway.config.schema import Config
from gateway.metrology.alarms import Alarm
from gateway.ops.metrics import GATEWAY_METRICS
from gateway.wire.encoding import topic_base
from supervision.config import load_config as load_ingest_config
from supervision.metrics import INGEST_METRICS
from supervision.model import parse_batch
from supervision.sinks.line_protocol import batch_lines

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "metrogate.json"
SECRETS = {
    "MQTT_GATEWAY_PASSWORD": "pw-gateway",
    "MQTT_INGEST_PASSWORD": "pw-ingest",
    "INFLUX_TOKEN": "token",
}


def yaml_load(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text())


# -- the InfluxDB schema, from lines the ingest really writes ---------------------------


def _split_unescaped(s: str, sep: str) -> list[str]:
    out, cur, quoted, i = [], "", False, 0
    while i < len(s):
        ch = s[i]
        if ch == "\\" and i + 1 < len(s):
            cur += s[i : i + 2]
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            out.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    out.append(cur)
    return out


def line_schema(lines: list[str]) -> dict[str, dict[str, set[str]]]:
    """measurement → {"tags": {...}, "fields": {...}} from line-protocol lines."""
    schema: dict[str, dict[str, set[str]]] = {}
    for line in lines:
        series, fields, _ts = _split_unescaped(line, " ")
        measurement, *tags = _split_unescaped(series, ",")
        entry = schema.setdefault(measurement, {"tags": set(), "fields": set()})
        entry["tags"] |= {t.split("=", 1)[0] for t in tags}
        entry["fields"] |= {f.split("=", 1)[0] for f in _split_unescaped(fields, ",")}
    return schema


def body(kind: str, key: str, records: list[dict[str, Any]], seq: int) -> bytes:
    doc = {"v": 1, "type": kind, "gateway": "gw1", "site": "s1", "seq": seq,
           "sealed": 1_795_000_000_000_000, key: records}  # fmt: skip
    return json.dumps(doc).encode()


@pytest.fixture(scope="module")
def influx_schema() -> dict[str, dict[str, set[str]]]:
    ts = 1_795_000_000_000_000
    reading = {"ts": ts, "device": "oven-1", "point": "temperature", "value": 180.2,
               "raw": 18020, "unit": "degC", "quality": "uncertain",
               "reason": "calibration_expired", "flags": ["calibration_expired"], "U": 0.05,
               "k": 2.0, "instrument": "TT-101", "certificate": "CAL-1",
               "verdict": "pass"}  # fmt: skip
    alarm = Alarm("oven-1/temperature/high", device="oven-1", point="temperature",
                  rule="high", severity=next(iter(AlarmSeverity)))  # fmt: skip
    alarms = alarm.update(True, ts, 186.0, 184.0)
    assert alarms, "a raised alarm gives a state-change record"
    lines: list[str] = []
    for kind, key, records, seq in (
        ("data", "readings", [reading], 1),
        ("alarm", "alarms", alarms, 2),
    ):  # the dashboard reads no events
        lines += batch_lines(parse_batch(body(kind, key, records, seq), "s1", "gw1", kind))
    return line_schema(lines)


def flux_queries(dashboard: dict[str, Any]) -> list[str]:
    queries = [
        t["query"] for p in dashboard["panels"] for t in p.get("targets", []) if "query" in t
    ]
    queries += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return queries


def test_dashboard_flux_uses_only_written_measurements_fields_and_tags(
    influx_schema: dict[str, dict[str, set[str]]],
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = flux_queries(dashboard)
    assert len(queries) >= 8
    all_tags = set().union(*(e["tags"] for e in influx_schema.values()))
    checked = 0
    for q in queries:
        measurements = re.findall(r'_measurement == "([^"]+)"', q)
        fields = re.findall(r'_field == "([^"]+)"', q)
        for m in measurements:
            assert m in influx_schema, f"measurement {m!r} is never written"
            for f in fields:
                checked += 1
                assert f in set().union(*(influx_schema[m]["fields"] for m in measurements)), (
                    f"field {f!r} is not written to {measurements}"
                )
        fields_of = set().union(*(influx_schema[m]["fields"] for m in measurements))
        for clause in re.findall(r"filter\(fn: \(r\) => (.*)\)$", q, re.MULTILINE):
            for name in re.findall(r"\br\.([a-zA-Z_]+)\b", clause):
                if not name.startswith("_"):  # a tag, or a field column after pivot()
                    assert name in all_tags | fields_of, f"{name!r} is never written"
        for names in re.findall(r"(?:columns|rowKey): \[([^]]*)\]", q):
            for name in re.findall(r'"([^"]+)"', names):
                if not name.startswith("_"):
                    assert name in all_tags | fields_of, f"column {name!r} is never written"
        for tag in re.findall(r'tag: "([a-z_]+)"', q):
            assert tag in all_tags
    assert checked >= 10


def test_the_schema_check_catches_a_wrong_field(
    influx_schema: dict[str, dict[str, set[str]]],
) -> None:
    assert "value" in influx_schema["reading"]["fields"]
    assert "valeu" not in influx_schema["reading"]["fields"]
    assert {"device", "point", "instrument", "gateway", "site"} <= influx_schema["reading"]["tags"]
    assert "state" in influx_schema["alarm"]["fields"] and "alarm" in influx_schema["alarm"]["tags"]
    assert "seq" in influx_schema["batch"]["fields"]


def test_documented_schema_mentions_what_the_dashboard_reads() -> None:
    text = (REPO / "docs" / "ingest.md").read_text()
    for name in ("reading", "alarm", "batch", "value", "certificate", "verdict", "seq", "state"):
        assert name in text, f"docs/ingest.md does not mention {name!r}"


def test_dashboard_promql_uses_only_emitted_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", []) if "expr" in t]
    assert exprs
    known = set(GATEWAY_METRICS) | set(INGEST_METRICS)
    for expr in exprs:
        for name in re.findall(r"\bmetrogate_[a-z_]+", expr):
            assert name in known, f"{name} is not a metric"


def test_dashboard_datasources_are_provisioned() -> None:
    provisioned = yaml_load(DEPLOY / "grafana/provisioning/datasources/metrogate.yaml")
    uids = {d["uid"] for d in provisioned["datasources"]}
    dashboard = json.loads(DASHBOARD.read_text())
    used = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert used <= uids and len(used) == 2
    providers = yaml_load(DEPLOY / "grafana/provisioning/dashboards/metrogate.yaml")
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Alarm timeline", "Calibration status", "Outbox per gateway"} <= titles


def test_documented_metrics_are_the_emitted_ones() -> None:
    text = (REPO / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"^\| `(metrogate_[a-z_]+)` \|", text, re.MULTILINE))
    assert documented == set(GATEWAY_METRICS) | set(INGEST_METRICS)


# -- compose ------------------------------------------------------------------------------


def test_compose_stack_is_complete_and_consistent() -> None:
    compose = yaml_load(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert set(services) == {
        "mosquitto", "influxdb", "simulators", "gateway", "ingest", "prometheus", "grafana",
    }  # fmt: skip
    declared_volumes = set(compose["volumes"])
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            if src.startswith("."):
                assert (DEPLOY / src).exists(), f"{name}: {src} does not exist"
            else:
                assert src in declared_volumes, f"{name}: volume {src} not declared"
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    build = services["gateway"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).exists()
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    commands = set(sub.choices)
    for name in ("simulators", "ingest"):
        assert services[name]["command"][1] in commands
    entry = "\n".join(services["gateway"]["entrypoint"])
    assert "metrogate run -c /etc/metrogate/gateway.yaml" in entry
    assert "metrogate keygen" in entry and "keygen" in commands
    assert services["gateway"]["network_mode"] == "service:simulators"
    prom = yaml_load(DEPLOY / "prometheus/prometheus.yml")
    targets = [
        t for job in prom["scrape_configs"] for s in job["static_configs"] for t in s["targets"]
    ]
    assert "simulators:9108" in targets


def test_compose_configs_validate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    raw = yaml_load(DEPLOY / "config/gateway.yaml")
    ops = OpsConfig.model_validate(raw["ops"])
    assert (ops.host, ops.port) == ("0.0.0.0", 9108)
    path = DEPLOY / "config/gateway.yaml"
    if "ops" not in Config.model_fields:
        # until Config carries the ops section, validate the rest of the file
        text = re.sub(r"(?ms)^ops:\n(  .*\n)+", "", path.read_text())
        path = tmp_path / "gateway.yaml"
        path.write_text(text)
    loaded = load_config(path)
    cfg = loaded.config
    assert cfg.mqtt.username == cfg.gateway.id  # the ACL keys on the user name
    ingest = load_ingest_config(DEPLOY / "config/ingest.yaml")
    assert ingest.mqtt.username == "ingest"
    compose = yaml_load(DEPLOY / "compose.yaml")
    passwd = "\n".join(compose["services"]["mosquitto"]["entrypoint"])
    assert f"passwd {cfg.gateway.id} " in passwd and "passwd ingest " in passwd


# -- mosquitto ACL ------------------------------------------------------------------------


def acl_allows(acl: str, user: str, access: str, topic: str) -> bool:
    """Mosquitto's rule: patterns for all users, plus the user's own ``topic`` lines."""
    current: str | None = None
    rules: list[tuple[str, str]] = []
    for line in acl.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, rest = line.split(None, 1)
        if word == "user":
            current = rest
        elif word == "pattern":
            acc, pat = rest.split(None, 1)
            rules.append((acc, pat.replace("%u", user)))
        elif word == "topic" and current == user:
            acc, pat = rest.split(None, 1)
            rules.append((acc, pat))

    def match(pat: str, t: str) -> bool:
        p_parts, t_parts = pat.split("/"), t.split("/")
        for i, p in enumerate(p_parts):
            if p == "#":
                return True
            if i >= len(t_parts) or (p != "+" and p != t_parts[i]):
                return False
        return len(p_parts) == len(t_parts)

    return any(acc in (access, "readwrite") and match(pat, topic) for acc, pat in rules)


def test_acl_lets_each_gateway_write_only_its_own_topics() -> None:
    acl = (DEPLOY / "mosquitto/acl").read_text()
    base = topic_base("metrogate", "demo-plant", "gw-demo")
    for kind in ("data", "alarm", "event", "status"):
        assert acl_allows(acl, "gw-demo", "write", f"{base}/{kind}")
        assert not acl_allows(acl, "gw-other", "write", f"{base}/{kind}")
    assert acl_allows(acl, "gw-demo", "read", f"{base}/cmd/ack")
    assert not acl_allows(acl, "gw-demo", "read", "metrogate/v1/demo-plant/gw-other/data")
    assert not acl_allows(acl, "gw-demo", "write", f"{base}/cmd/ack")  # no self-commanding
    assert acl_allows(acl, "ingest", "read", f"{base}/data")
    assert acl_allows(acl, "ingest", "write", "metrogate/deadletter")
    assert not acl_allows(acl, "ingest", "write", f"{base}/data")
    conf = (DEPLOY / "mosquitto/mosquitto.conf").read_text()
    assert "allow_anonymous false" in conf and "acl_file" in conf and "password_file" in conf


# -- systemd, Dockerfile, Pi --------------------------------------------------------------


def unit_settings(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            k, v = line.split("=", 1)
            out.setdefault(k, []).append(v)
    return out


def test_gateway_unit_notify_watchdog_reload_and_hardening() -> None:
    s = unit_settings(DEPLOY / "systemd/metrogate.service")
    assert s["Type"] == ["notify"] and s["WatchdogSec"] and s["NotifyAccess"] == ["main"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["ExecStart"][0].endswith("metrogate run -c /etc/metrogate/gateway.yaml")
    assert "check -c" in s["ExecStartPre"][0]
    assert s["User"] == ["metrogate"] and s["SupplementaryGroups"] == ["dialout"]
    assert s["StateDirectory"] == ["metrogate"] and s["ProtectSystem"] == ["strict"]
    assert s["NoNewPrivileges"] == ["yes"] and s["CapabilityBoundingSet"] == [""]
    assert "ProtectClock" not in s  # it would deny adjtimex, the clock-sync probe
    ingest = unit_settings(DEPLOY / "systemd/metrogate-ingest.service")
    assert ingest["ExecStart"][0].endswith("metrogate ingest -c /etc/metrogate/ingest.yaml")
    console = unit_settings(DEPLOY / "systemd/metrogate-console.service")
    assert console["ExecStart"][0].endswith("metrogate console -c /etc/metrogate/ingest.yaml")
    assert console["User"] == ["metrogate"] and console["ProtectSystem"] == ["strict"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_units_pass_systemd_analyze() -> None:
    for unit in ("metrogate.service", "metrogate-ingest.service", "metrogate-console.service"):
        r = subprocess.run(
            ["systemd-analyze", "verify", str(DEPLOY / "systemd" / unit)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        # the binaries live on the target, not here
        problems = [ln for ln in r.stderr.splitlines() if ln and "is not executable" not in ln]
        assert not problems, problems


def test_dockerfile_needs_no_toolchain() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "PIP_ONLY_BINARY=:all:" in text
    for tool in ("gcc", "build-essential", "rustc", "cargo", "apt-get install"):
        assert tool not in text
    assert re.search(r"^USER metrogate$", text, re.MULTILINE)
    # profiles and the demo config come with the wheel (package data), not as copies
    # (the comments may say so)
    instructions = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    assert "profiles" not in instructions and "METROGATE_PROFILES" not in instructions
    for copied in re.findall(r"^COPY (?!--from)(.+) /", text, re.MULTILINE):
        for src in copied.split():
            if src != "README.md":  # pyproject's readme, written beside it
                assert (REPO / src).exists(), src


def test_pi_install_script_and_udev_rule() -> None:
    script = DEPLOY / "pi/install.sh"
    subprocess.run(["sh", "-n", str(script)], check=True, timeout=30)
    text = script.read_text()
    for needed in ("useradd --system", "dialout", "/opt/metrogate/venv", "metrogate.service",
                   "99-metrogate-serial.rules", "check -c"):  # fmt: skip
        assert needed in text
    for ref in re.findall(r'"\$HERE/([^"]+)"', text):
        assert (DEPLOY / "pi" / ref).exists(), ref
    # installed as a wheel (built from the tree), whose package data holds the profiles:
    # no copy of them anywhere else, where nothing would look them up
    assert re.search(r'"\$PIP" wheel .*--no-deps', text) and re.search(
        r'"\$PIP" install .*"\$WHEEL"', text
    )
    assert "profiles" not in text
    rules = (DEPLOY / "pi/99-metrogate-serial.rules").read_text()
    assert 'GROUP="dialout"' in rules and 'SYMLINK+="metrogate/' in rules
    if shutil.which("udevadm"):
        r = subprocess.run(["udevadm", "verify", str(DEPLOY / "pi/99-metrogate-serial.rules")],
                           capture_output=True, text=True, timeout=30)  # fmt: skip
        if "Unknown command" not in r.stderr and "unrecognized" not in r.stderr:
            assert r.returncode == 0, r.stderr
