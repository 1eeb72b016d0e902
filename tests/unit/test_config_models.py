"""Both configuration files are built from one base (gateway/common/types.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from gateway.common.types import OpsEndpoint, Strict, TlsConfig
from gateway.config.loader import ConfigError, load_config
from gateway.config.ops import OpsConfig
from gateway.config.schema import Config, MqttConfig
from supervision.config import IngestConfig, IngestOpsConfig
from supervision.config import MqttConfig as IngestMqttConfig


def models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        yield from models_in(arg)


def every_model(root: type[BaseModel]) -> set[type[BaseModel]]:
    seen: set[type[BaseModel]] = set()
    todo = [root]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for field in model.model_fields.values():
            todo.extend(models_in(field.annotation))
    return seen


@pytest.mark.parametrize("root", [Config, IngestConfig], ids=["gateway", "ingest"])
def test_every_model_stands_on_the_strict_base(root: type[BaseModel]) -> None:
    models = every_model(root)
    assert len(models) > 5
    loose = sorted(m.__name__ for m in models if not issubclass(m, Strict))
    assert loose == []
    assert all(m.model_config.get("extra") == "forbid" for m in models)


def test_one_tls_section_and_one_ops_base() -> None:
    assert (
        MqttConfig.model_fields["tls"].annotation == IngestMqttConfig.model_fields["tls"].annotation
    )
    assert TlsConfig in every_model(Config) and TlsConfig in every_model(IngestConfig)
    assert issubclass(OpsConfig, OpsEndpoint) and issubclass(IngestOpsConfig, OpsEndpoint)
    own = set(OpsConfig.model_fields) - set(OpsEndpoint.model_fields)
    assert own == {"watchdog"} and set(IngestOpsConfig.model_fields) == {"listen", "enabled"}
    assert OpsConfig().listen == "127.0.0.1:9108" and IngestOpsConfig().listen == "127.0.0.1:9109"


def test_number_constraints_name_the_key_and_show_the_value_once(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        "gateway: {id: gw1, site: s1}\n"
        "instruments:\n"
        "  - id: i1\n"
        "    coverage: 0\n"
        "    calibrations:\n"
        "      - certificate: c1\n"
        "        date: 2024-01-01\n"
        "        valid_until: 2025-01-01\n"
        "        correction: {kind: polynomial, coefficients: [0, .inf]}\n"
        "      - {certificate: c2, date: 2024-01-01, valid_until: 2025-01-01, U: -1}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [str(p) for p in info.value.problems] == [
        f"{path}:4:5: instruments[0].coverage: coverage factor must be > 0 (got 0)",
        f"{path}:9:58: instruments[0].calibrations[0].correction.coefficients[1]: "
        "a coefficient must be a finite number (got inf)",
        f"{path}:10:70: instruments[0].calibrations[1].U: "
        "U (expanded uncertainty) must be ≥ 0 (got -1)",
    ]
