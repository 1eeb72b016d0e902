"""The committed JSON Schema is current, and it accepts every example config."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no types-jsonschema in the dev deps
import pytest
from ruamel.yaml import YAML

from gateway.cli import app as cli
from gateway.config.schema import Config

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "config" / "metrogate.schema.json"
EXAMPLES = sorted(
    p for p in (REPO / "config" / "examples").glob("*.yaml") if p.name != "ingest.yaml"
)


def generated() -> dict[str, Any]:
    return cli.config_json_schema(Config)


def test_committed_schema_is_current(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    assert cli.main(["schema", "-o", str(out)]) == 0
    assert json.loads(out.read_text(encoding="utf-8")) == generated()
    # regenerate with: python -m gateway schema -o config/metrogate.schema.json
    assert SCHEMA.read_text(encoding="utf-8") == out.read_text(encoding="utf-8")


def test_schema_is_a_valid_json_schema() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["title"] == "metrogate configuration"


def as_json(node: Any) -> Any:
    """YAML data as an editor would see it in JSON (dates as ISO strings)."""
    if isinstance(node, dict):
        return {str(k): as_json(v) for k, v in node.items()}
    if isinstance(node, list):
        return [as_json(v) for v in node]
    if isinstance(node, dt.date | dt.datetime):
        return node.isoformat()
    return node


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_schema_accepts_example(path: Path) -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    data = as_json(YAML(typ="safe").load(path.read_text(encoding="utf-8")))
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data), key=str)
    assert [f"{list(e.absolute_path)}: {e.message}" for e in errors] == []


def test_schema_rejects_what_check_rejects() -> None:
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))
    base = {"gateway": {"id": "gw", "site": "s"}}
    assert validator.is_valid(base)
    assert not validator.is_valid({"gateway": {"id": "gw"}})
    assert not validator.is_valid(base | {"mqtt": {"keepalvie": 30}})
    device = {"id": "m", "driver": "modbus_tcp", "host": "h", "points": []}
    assert validator.is_valid(base | {"devices": [device]})
    assert not validator.is_valid(base | {"devices": [device | {"order": "ABDC"}]})
    assert not validator.is_valid(base | {"devices": [device | {"driver": "nope"}]})


# ----------------------------------------------------------- the ingest and console file

INGEST_SCHEMA = REPO / "config" / "ingest.schema.json"


def test_committed_ingest_schema_is_current(tmp_path: Path) -> None:
    from supervision.config import IngestConfig

    out = tmp_path / "ingest.schema.json"
    assert cli.main(["schema", "--ingest", "-o", str(out)]) == 0
    assert json.loads(out.read_text(encoding="utf-8")) == cli.config_json_schema(
        IngestConfig, cli.INGEST_SCHEMA_TITLE
    )
    # regenerate with: metrogate schema --ingest -o config/ingest.schema.json
    assert INGEST_SCHEMA.read_text(encoding="utf-8") == out.read_text(encoding="utf-8")


def test_ingest_schema_accepts_the_example_and_rejects_what_the_ingest_rejects() -> None:
    from supervision.config import IngestConfig

    schema = json.loads(INGEST_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["title"] == cli.INGEST_SCHEMA_TITLE
    validator = jsonschema.Draft202012Validator(schema)
    example = REPO / "config" / "examples" / "ingest.yaml"
    data = as_json(YAML(typ="safe").load(example.read_text(encoding="utf-8")))
    assert sorted(str(e) for e in validator.iter_errors(data)) == []
    base = {
        "mqtt": {"url": "mqtt://127.0.0.1", "client_id": "ingest-1"},
        "keys_dir": "keys",
        "store": {"kind": "sqlite", "path": "x.db"},
    }
    IngestConfig.model_validate(base)  # what the schema takes, the ingest takes
    assert validator.is_valid(base)
    assert not validator.is_valid({k: v for k, v in base.items() if k != "keys_dir"})
    assert not validator.is_valid(base | {"stoer": {}})
    assert not validator.is_valid(base | {"store": {"kind": "mongodb"}})
    assert not validator.is_valid(base | {"console": {"users": [{"name": "a", "role": "root"}]}})
    assert not validator.is_valid(base | {"console": {"language": "fr"}})
