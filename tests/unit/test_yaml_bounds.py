"""Hostile YAML costs a located refusal, not seconds and hundreds of MiB.

Each load runs in a forked child with a deadline: a loader without the bounds
would expand the aliases below into ~400 million nodes (minutes, gigabytes), so
the child is killed and the test fails quickly instead of taking the machine down.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.common.yamlconf import MAX_ALIAS_NODES, MAX_DEPTH, MAX_FILE_BYTES, ConfigError
from gateway.config.loader import load_config
from supervision.config import load_config as load_ingest_config

DEADLINE_S = 5.0

LAUGHS = "\n".join(
    ["a: &a [" + ",".join(["lol"] * 9) + "]"]
    + [
        f"{b}: &{b} [" + ",".join([f"*{a}"] * 9) + "]"
        for a, b in ("ab", "bc", "cd", "de", "ef", "fg", "gh", "hi")
    ]
)
"""A "billion laughs": nine lines, under 400 bytes, 9^9 scalars once expanded."""


def _load_in_child(
    load: Callable[[Path], object], path: Path, out: multiprocessing.connection.Connection
) -> None:
    try:
        load(path)
    except ConfigError as exc:
        out.send(("refused", [str(p) for p in exc.problems]))
    except BaseException as exc:  # reported to the test, which fails on it
        out.send(("crashed", [f"{type(exc).__name__}: {exc}"[:500]]))
    else:
        out.send(("loaded", []))


def load_bounded(load: Callable[[Path], object], path: Path) -> tuple[str, list[str]]:
    """``load(path)`` in a forked child: its outcome, or a failure after DEADLINE_S."""
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_load_in_child, args=(load, path, send), daemon=True)
    child.start()
    send.close()
    try:
        if not receive.poll(DEADLINE_S):
            pytest.fail(f"loading {path.name} took longer than {DEADLINE_S} s")
        outcome: tuple[str, list[str]] = receive.recv()
        return outcome
    finally:
        child.kill()
        child.join(5)
        receive.close()


@pytest.mark.parametrize("load", [load_config, load_ingest_config], ids=["gateway", "ingest"])
def test_billion_laughs_is_refused_at_a_location(
    tmp_path: Path, load: Callable[[Path], object]
) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(LAUGHS + "\n")
    assert path.stat().st_size < 400
    outcome, problems = load_bounded(load, path)
    assert outcome == "refused", problems
    assert len(problems) == 1
    # where the repeated anchor stands, and what it would have cost
    assert problems[0].startswith(f"{path}:")
    assert problems[0].endswith(f": aliases expand beyond {MAX_ALIAS_NODES} nodes")
    line, col = (int(n) for n in problems[0][len(str(path)) + 1 :].split(":")[:2])
    assert 1 <= line <= 9 and col >= 1


def test_aliases_within_the_bound_still_work(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "gateway: {id: gw1, site: s1}\n"
        "devices:\n"
        "  - id: d1\n    driver: modbus_tcp\n    host: 127.0.0.1\n    points:\n"
        "      - &point {id: p0, table: holding, address: 0, type: float32, unit: bar}\n"
        "      - {<<: *point, id: p1, address: 2}\n"
        "      - {<<: *point, id: p2, address: 4, unti: bar}\n"
    )
    outcome, problems = load_bounded(load_config, path)
    # the merged keys expanded (and are located at their merge); the typo is found
    assert (outcome, problems) == (
        "refused",
        [f"{path}:9:42: devices[0].points[2].unti: unknown key 'unti' (did you mean 'unit'?)"],
    )


@pytest.mark.parametrize(
    "text",
    [
        "gateway: " + "[" * 5000 + "]" * 5000,
        "gateway: " + "{a: " * 5000 + "1" + "}" * 5000,
        "gateway:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 200)) + " " * 200 + "1\n",
        "gateway:\n  - " + "- " * 3000 + "x\n",
    ],
    ids=["flow-sequences", "flow-mappings", "block-mappings", "block-sequences"],
)
def test_deep_nesting_is_refused_where_it_goes_too_deep(tmp_path: Path, text: str) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    outcome, problems = load_bounded(load_config, path)
    assert outcome == "refused", problems
    assert len(problems) == 1 and problems[0].startswith(f"{path}:")
    assert problems[0].endswith(f"YAML: nested deeper than {MAX_DEPTH} levels")


def test_a_chain_of_aliases_cannot_nest_without_bound(tmp_path: Path) -> None:
    path = tmp_path / "chain.yaml"
    lines = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 3000)]
    path.write_text("\n".join(lines) + "\n")
    outcome, problems = load_bounded(load_ingest_config, path)
    assert outcome == "refused", problems
    assert len(problems) == 1 and problems[0].startswith(f"{path}:")
    assert problems[0].endswith(f"aliases nest deeper than {MAX_DEPTH} levels")


def test_an_oversize_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: nothing is written, nothing read
    outcome, problems = load_bounded(load_config, path)
    assert (outcome, problems) == (
        "refused",
        [
            f"{path}:1:1: (top): the file is {MAX_FILE_BYTES + 1} bytes; at most {MAX_FILE_BYTES}"
            " are read"
        ],
    )


def test_a_control_character_is_located(tmp_path: Path) -> None:
    path = tmp_path / "ctl.yaml"
    path.write_text("gateway:\n  id: g\x01w\n")
    outcome, problems = load_bounded(load_ingest_config, path)
    assert outcome == "refused", problems
    assert len(problems) == 1 and problems[0].startswith(f"{path}:2:8: (top): YAML: ")
