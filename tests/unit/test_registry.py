"""The driver registry: one table of kinds, and nothing else dispatching on them."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import importlib
import logging
import pickle
import typing
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from gateway.acquisition.build import build_drivers
from gateway.acquisition.poller import DevicePoller
from gateway.cli.simulate import simulator_factory
from gateway.config.loader import load_config, load_config_compact
from gateway.config.models.registry import KINDS, PlanProblem
from gateway.metrology.pipeline import DeviceMetrology

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "config" / "examples"
PACKAGES = ("gateway", "drivers", "simulators", "supervision")
REGISTRY = ROOT / "gateway" / "config" / "models" / "registry.py"
# ingest.yaml configures the platform ingest service, not a gateway
GATEWAY_EXAMPLES = sorted(p for p in EXAMPLES.glob("*.yaml") if p.name != "ingest.yaml")


def test_the_kinds() -> None:
    assert list(KINDS) == [
        "modbus_tcp",
        "modbus_rtu",
        "modbus_ascii",
        "mtsics",
        "toledo_continuous",
        "ascii",
        "dlt645",
        "cjt188",
        "opcua",
    ]
    for name, kind in KINDS.items():
        assert kind.name == name
        assert kind.model.model_fields["driver"].annotation == typing.Literal[name]


def test_the_config_union_is_the_registry() -> None:
    from gateway.config.schema import Config

    schema = Config.model_json_schema()
    mapping = schema["properties"]["devices"]["items"]["discriminator"]["mapping"]
    assert {tag: ref.rsplit("/", 1)[1] for tag, ref in mapping.items()} == {
        name: kind.model.__name__ for name, kind in KINDS.items()
    }


def test_every_kind_has_an_example() -> None:
    shown = {d.driver for p in GATEWAY_EXAMPLES for d in load_config(p).config.devices}
    assert shown == set(KINDS)


def test_simulator_references_resolve() -> None:
    for kind in KINDS.values():
        factory = simulator_factory(kind)
        assert (factory is None) == (kind.simulator is None)
        assert factory is None or callable(factory)
    assert KINDS["ascii"].simulator is None  # replies cannot be derived from a regex


# -- nothing outside the registry dispatches on a device model -------------------------------


def _kind_classes() -> dict[str, type]:
    """Every class a kind's model is made of, except what all device models share."""
    mros = [set(kind.model.__mro__) for kind in KINDS.values()]
    common = set.intersection(*mros)
    return {c.__name__: c for c in set.union(*mros) - common}


def _sources() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "__main__.py":
                continue  # runs the command line when imported
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            yield module.removesuffix(".__init__"), path


def _classes_in(node: ast.expr, namespace: dict[str, Any]) -> Iterator[object]:
    """What a class argument (a name, a dotted name, a tuple or a ``|`` union) stands for."""
    if isinstance(node, ast.Tuple):
        for element in node.elts:
            yield from _classes_in(element, namespace)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        yield from _classes_in(node.left, namespace)
        yield from _classes_in(node.right, namespace)
    elif isinstance(node, ast.Name | ast.Attribute):
        try:
            value = eval(compile(ast.Expression(node), "<arg>", "eval"), namespace)
        except Exception:
            return  # a local name: not a module-level class or alias
        if isinstance(value, tuple):
            yield from value
        elif isinstance(value, type):
            yield value
        else:
            yield from typing.get_args(value)


def _class_tests(tree: ast.AST) -> Iterator[tuple[int, ast.expr]]:
    """Every class tested in ``isinstance``/``issubclass`` or matched in a ``case``."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("isinstance", "issubclass")
            and len(node.args) == 2
        ):
            yield node.lineno, node.args[1]
        elif isinstance(node, ast.MatchClass):
            yield node.lineno, node.cls


def test_no_class_tests_on_device_models_outside_the_registry() -> None:
    kinds = set(_kind_classes().values())
    found = []
    for module, path in _sources():
        if path == REGISTRY:
            continue
        namespace = vars(importlib.import_module(module))
        for line, arg in _class_tests(ast.parse(path.read_text(encoding="utf-8"))):
            hits = [c for c in _classes_in(arg, namespace) if c in kinds]
            found += [f"{path.relative_to(ROOT)}:{line}: {c.__name__}" for c in hits]
    assert found == [], "dispatch on driver kinds belongs in gateway/config/models/registry.py"


def test_device_models_are_named_only_by_the_registry() -> None:
    """Outside the models and the registry nothing imports a kind's model."""
    names = set(_kind_classes())
    found = []
    for _module, path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        if path == REGISTRY or rel.startswith("gateway/config/models/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                found += [f"{rel}:{node.lineno}: {a.name}" for a in node.names if a.name in names]
    assert found == []


def test_the_scan_sees_an_isinstance_chain() -> None:
    """The scan above finds what the old code had (so it can fail)."""
    namespace = vars(importlib.import_module("gateway.config.models.serial"))
    tree = ast.parse(
        "isinstance(d, ModbusRtuDevice | ModbusAsciiDevice)\n"
        "match d:\n"
        "    case Dlt645Device():\n"
        "        pass\n"
    )
    tested = [c for _, arg in _class_tests(tree) for c in _classes_in(arg, namespace)]
    assert {c.__name__ for c in tested} == {"ModbusRtuDevice", "ModbusAsciiDevice", "Dlt645Device"}
    assert set(tested) <= set(_kind_classes().values())


# -- plans: compiled once, carried with the config, used by the builders ---------------------


def test_plans_are_compiled_once_and_travel_with_the_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    direct = load_config(EXAMPLES / "serial-line.yaml")
    compact = load_config_compact(EXAMPLES / "serial-line.yaml")
    assert set(direct.plans) == {d.id for d in direct.config.devices}
    assert compact.plans == direct.plans  # pickled from the loading child
    assert pickle.loads(pickle.dumps(direct.plans)) == direct.plans

    def compile_again(device: object) -> object:
        raise AssertionError("the plan is compiled again")

    for name, kind in KINDS.items():
        monkeypatch.setitem(KINDS, name, dataclasses.replace(kind, plan=compile_again))

    async def build() -> list[str]:
        async with AsyncExitStack() as stack:
            return list(await build_drivers(compact, stack))

    assert asyncio.run(build()) == [d.id for d in compact.config.devices if d.enabled]


@pytest.mark.parametrize("example", GATEWAY_EXAMPLES, ids=[p.name for p in GATEWAY_EXAMPLES])
async def test_describe_is_what_the_driver_prints_and_is_logged_once(
    example: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="metrogate.acquisition")
    loaded = load_config(example)
    async with AsyncExitStack() as stack:
        drivers = await build_drivers(loaded, stack)
    assert list(drivers) == [d.id for d in loaded.config.devices if d.enabled]
    logged = [(r.levelno, r.getMessage()) for r in caplog.records]
    for dev in loaded.config.devices:
        if dev.id not in drivers:
            continue
        described = KINDS[dev.driver].describe(dev, loaded.plans[dev.id])
        assert described == drivers[dev.id].describe_plan() != []
        assert [(level, m) for level, m in logged if m.startswith(f"device {dev.id} (")] == [
            (
                logging.INFO,
                f"device {dev.id} ({dev.driver}, {drivers[dev.id].endpoint}): "
                f"{len(described)} request(s) per poll, every {dev.poll:g}s",
            )
        ]
        assert [(level, m) for level, m in logged if m.startswith(f"device {dev.id}:")] == [
            (logging.DEBUG, f"device {dev.id}: {line}") for line in described
        ]


def test_modbus_plan_problem_is_relative_to_the_device() -> None:
    loaded = load_config(EXAMPLES / "modbus-tcp.yaml")
    analyser = loaded.config.devices[0]
    kind = KINDS[analyser.driver]
    hole = analyser.holes[0]
    inside = analyser.points[0].model_copy(
        update={"id": "inside", "table": hole.table, "address": hole.start, "ref": None}
    )
    broken = analyser.model_copy(update={"points": [*analyser.points, inside]})
    with pytest.raises(PlanProblem) as err:
        kind.plan(broken)
    assert err.value.path == ("points", len(analyser.points), "address")
    assert "lies in a hole" in err.value.message


# -- evidence points --------------------------------------------------------------------------


def test_tamper_counters_and_tamper_bits_are_evidence() -> None:
    cfg = load_config(EXAMPLES / "serial-line.yaml").config
    devices = {d.id: d for d in cfg.devices}
    meter = devices["kwh-102"]
    assert KINDS["dlt645"].evidence(meter) == {"cover_open_count"}
    # a CJ/T 188 meter's manufacturer bit declared `tamper: true`, not its other bits
    assert KINDS["cjt188"].evidence(devices["water-1"]) == {"magnet_tamper"}
    assert KINDS["cjt188"].evidence(devices["heat-1"]) == frozenset()
    for dev in cfg.devices:
        if dev.driver not in ("dlt645", "cjt188"):
            assert KINDS[dev.driver].evidence(dev) == frozenset()

    class Quiet:
        endpoint = "x"

        def describe_plan(self) -> list[str]:
            return []

    metro = DeviceMetrology(meter.id, [], meter, {}, lambda: 0)
    poller = DevicePoller(meter, Quiet(), metro, lambda kind, records: None)
    assert poller.tamper_points == {"cover_open_count"}
