"""Every example config, broken at random: refused with file:line:col, or loaded — never
a traceback, a hang or an error without a place.

The mutations are what a technician's editor, a bad copy or a hostile file does to a
YAML file: a line lost or doubled, a value replaced (huge numbers, NaN, deep nesting,
aliases, tags, control characters, over-long text), stray text inserted, the file cut
short, bytes that are not UTF-8.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.common.yamlconf import ConfigError
from gateway.config.loader import load_config as load_gateway
from supervision.config import load_config as load_ingest

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"
NAMES = sorted(p.name for p in EXAMPLES.glob("*.yaml"))

HOSTILE_VALUES = [
    "9" * 400,
    "9" * 5000,
    "2026-02-30",
    "-9" + "9" * 40,
    "1e999",
    "-1e999",
    ".nan",
    ".inf",
    "-.inf",
    "0x7fffffffffffffff",
    "-1",
    "0",
    "~",
    "''",
    '"\\0\\x07\\u2028"',
    "[" * 200 + "]" * 200,
    "{a: " * 100 + "1" + "}" * 100,
    "*nowhere",
    "&a [*a]",
    "!!python/object/apply:os.system ['true']",
    "!!binary AAAA",
    "!!omap [a: 1, b: 2]",
    "!!pairs [a: 1]",
    "!!set {a, b}",
    "!custom 1",
    "2026-13-45",
    "${UNSET_VARIABLE_OF_THE_FUZZ_TEST}",
    "${file:/nonexistent/secret}",
    "${file:../../../../etc/shadow}",
    "x" * 20_000,
    "ü€𝄞",
    "'unterminated",
    "[1, 2",
    "{: }",
    "- a\n- b",
]


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


@st.composite
def mutated(draw: st.DrawFn, text: str) -> bytes:
    lines = _lines(text)
    kind = draw(st.sampled_from(["drop", "double", "value", "insert", "cut", "bytes", "indent"]))
    i = draw(st.integers(0, len(lines) - 1))
    if kind == "drop":
        del lines[i]
    elif kind == "double":
        lines.insert(i, lines[i])
    elif kind == "value":
        line = lines[i]
        colon = line.find(": ")
        head = line[: colon + 2] if colon >= 0 else line[: len(line) - len(line.lstrip())] + "- "
        value = draw(st.one_of(st.sampled_from(HOSTILE_VALUES), st.text(max_size=30)))
        lines[i] = head + value + "\n"
    elif kind == "insert":
        junk = draw(st.text(max_size=40))
        line = lines[i]
        at = draw(st.integers(0, len(line)))
        lines[i] = line[:at] + junk + line[at:]
    elif kind == "indent":
        lines[i] = " " * draw(st.integers(1, 5)) + lines[i]
    data = "".join(lines).encode()
    if kind == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif kind == "bytes":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    return data


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the examples (their profiles and key files beside them)."""
    root = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(EXAMPLES.parent, root / "config")
    yield root / "config" / "examples"


def _loader(name: str) -> Callable[[Path], Any]:
    return load_ingest if name == "ingest.yaml" else load_gateway


_PLACE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): ")


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), name=st.sampled_from(NAMES))
def test_a_broken_example_is_refused_with_its_place_or_loads(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, data: st.DataObject, name: str
) -> None:
    monkeypatch.delenv("METROGATE_PROFILES", raising=False)
    for var in ("MQTT_USER", "MQTT_PASSWORD", "UNSET_VARIABLE_OF_THE_FUZZ_TEST"):
        monkeypatch.delenv(var, raising=False)
    original = (EXAMPLES / name).read_text(encoding="utf-8")
    body = data.draw(mutated(original), label="file")
    path = workdir / f"fuzzed-{name}"
    path.write_bytes(body)
    try:
        _loader(name)(path)
    except ConfigError as exc:
        assert exc.problems, "a refusal without a problem"
        lines_in_file = body.count(b"\n") + 1
        for problem in exc.problems:
            text = str(problem)
            m = _PLACE.match(text)
            assert m, f"no file:line:col in {text!r}"
            assert problem.line >= 1 and problem.col >= 1, text
            if problem.file == str(path):
                assert problem.line <= lines_in_file + 1, text
            assert problem.message.strip(), text


def test_the_examples_themselves_load(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fuzz starts from files that load: what it finds is the mutation's doing."""
    monkeypatch.delenv("METROGATE_PROFILES", raising=False)
    for name in NAMES:
        _loader(name)(workdir / name)
