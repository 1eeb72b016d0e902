"""The ingest configuration is loaded like the gateway's: every problem at FILE:LINE:COL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.common.yamlconf import ConfigError
from supervision.config import InfluxV2Store, SqliteStore, load_config

ROOT = Path(__file__).resolve().parents[2]

BAD = """\
mqtt:
  url: http://broker:1883
  client_id: w1
  recieve_maximum: 10
keys_dir: keys
store:
  kind: influxdb_v2
  url: http://127.0.0.1:8086
  bucket: mg
  token: ${MG_TEST_UNSET_TOKEN}
batch:
  max_lines: 0
"""


def test_every_problem_is_located(tmp_path: Path) -> None:
    path = tmp_path / "ingest.yaml"
    path.write_text(BAD)
    os.environ.pop("MG_TEST_UNSET_TOKEN", None)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    got = [str(p) for p in info.value.problems]
    assert got == [
        f"{path}:2:3: mqtt.url: String should match pattern '^mqtts?://[^/:]+(:\\d+)?/?$'"
        " (got 'http://broker:1883')",
        f"{path}:4:3: mqtt.recieve_maximum: unknown key 'recieve_maximum'"
        " (did you mean 'receive_maximum'?)",
        f"{path}:10:3: store.token: environment variable MG_TEST_UNSET_TOKEN is not set",
        f"{path}:12:3: batch.max_lines: Input should be greater than or equal to 1 (got 0)",
    ]


def test_yaml_syntax_error_is_located(tmp_path: Path) -> None:
    path = tmp_path / "ingest.yaml"
    path.write_text("mqtt:\n  client_id: [w1\nstore: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value.problems[0]).startswith(f"{path}:3:")


def test_secrets_from_env_and_paths_relative_to_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MG_TEST_TOKEN", "s3cret")
    path = tmp_path / "ingest.yaml"
    path.write_text(BAD.replace("MG_TEST_UNSET_TOKEN", "MG_TEST_TOKEN")
                    .replace("max_lines: 0", "max_lines: 10")
                    .replace("http://broker", "mqtt://broker")
                    .replace("recieve", "receive"))  # fmt: skip
    cfg = load_config(path)
    assert isinstance(cfg.store, InfluxV2Store) and cfg.store.token is not None
    assert cfg.store.token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(cfg)
    assert cfg.keys_dir == tmp_path / "keys"
    path.write_text("mqtt: {client_id: w}\nkeys_dir: k\nstore: {kind: sqlite, path: d/s.db}\n")
    cfg = load_config(path)
    assert isinstance(cfg.store, SqliteStore) and cfg.store.path == tmp_path / "d/s.db"


def test_relative_paths_are_taken_from_the_files_directory_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here, elsewhere = tmp_path / "etc", tmp_path / "cwd"
    for d, token in ((here, "beside-the-file"), (elsewhere, "in-the-cwd")):
        (d / "secrets").mkdir(parents=True)
        (d / "secrets" / "token").write_text(f"{token}\n")
    (here / "ingest.yaml").write_text(
        "mqtt:\n  client_id: w1\n  password: ${file:secrets/token}\n"
        "  tls: {ca: tls/ca.pem, cert: tls/w.pem, key: tls/w.key}\n"
        "keys_dir: keys\nstore: {kind: sqlite, path: db/store.sqlite}\n"
    )
    monkeypatch.chdir(elsewhere)
    cfg = load_config(Path("../etc/ingest.yaml"))
    base = here.resolve()
    assert cfg.keys_dir == base / "keys"
    assert isinstance(cfg.store, SqliteStore) and cfg.store.path == base / "db/store.sqlite"
    assert cfg.mqtt.tls is not None
    assert (cfg.mqtt.tls.ca, cfg.mqtt.tls.cert, cfg.mqtt.tls.key) == (
        base / "tls/ca.pem",
        base / "tls/w.pem",
        base / "tls/w.key",
    )
    assert cfg.mqtt.password is not None
    assert cfg.mqtt.password.get_secret_value() == "beside-the-file"


def test_cli_prints_located_problems_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    env = {k: v for k, v in os.environ.items() if k != "MG_TEST_UNSET_TOKEN"}
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "ingest", "-c", str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 4, proc.stderr
    assert lines[1].startswith(f"{path}:4:3: mqtt.recieve_maximum: unknown key")


def test_tls_and_ops_are_the_gateways_sections(tmp_path: Path) -> None:
    path = tmp_path / "ingest.yaml"
    path.write_text(
        "mqtt: {client_id: w1, tls: {cert: c.pem}}\n"
        "keys_dir: keys\n"
        "store: {kind: sqlite, path: s.db}\n"
        "ops: {listen: '[::1]:9200', watchdog: true}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [str(p) for p in info.value.problems] == [
        f"{path}:1:23: mqtt.tls: cert and key go together",
        f"{path}:4:29: ops.watchdog: unknown key 'watchdog'",  # the gateway's own
    ]
    path.write_text(
        "mqtt: {client_id: w1}\nkeys_dir: keys\nstore: {kind: sqlite, path: s.db}\n"
        "ops: {listen: '[::1]:9200'}\n"
    )
    cfg = load_config(path)
    assert (cfg.ops.host, cfg.ops.port, cfg.ops.enabled) == ("::1", 9200, True)


def test_example_console_section_loads() -> None:
    path = Path(__file__).resolve().parents[2] / "config" / "examples" / "ingest.yaml"
    cfg = load_config(path).console
    (user,) = cfg.users
    assert user.role == "operator" and user.operator_id == "inspector"
    assert user.operator_key == path.parent / "operators" / "inspector.key"
    assert cfg.points[0].lower == 175 and cfg.port == 8480


def test_console_operator_needs_a_key(tmp_path: Path) -> None:
    path = tmp_path / "ingest.yaml"
    path.write_text(
        "mqtt: {client_id: c}\nkeys_dir: k\nstore: {kind: sqlite, path: s.db}\n"
        "console:\n  users:\n    - {name: a, password_hash: x, role: operator}\n"
    )
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert "operator_id and operator_key" in str(exc.value.problems[0])
