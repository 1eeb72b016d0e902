"""Located YAML loading: YAML → a pydantic model, every problem as ``FILE:LINE:COL``.

The machinery both the gateway and the platform load their files with. It reads
YAML with ruamel.yaml (which remembers where each node stood), substitutes
``${ENV}`` references, validates with a pydantic model and reports *all* problems at
once as ``FILE:LINE:COL: dotted.path: message``; unknown keys get a "did you mean".

Secrets: ``${NAME}`` takes environment variable NAME (``${NAME:-default}`` gives a
default), ``${file:PATH}`` takes the content of a file (trailing newline
stripped); a relative PATH is taken from the directory of the YAML file that holds
the reference, not from the working directory. Substituted values are never
echoed in messages.

Bounds. A file is refused before it can cost the process much: larger than
:data:`MAX_FILE_BYTES`; nested deeper than :data:`MAX_DEPTH` levels (checked while
scanning, before the parser's own recursion or its quadratic look-ahead over deep
flow collections could begin); or whose aliases would expand into more than
:data:`MAX_ALIAS_NODES` nodes (a few hundred bytes of nested aliases — the "billion
laughs" — otherwise grow into billions of nodes while the document is converted).
Each refusal is an ordinary located :class:`Problem`.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from gateway.common.types import ID_PATTERN, shorten

PathKey = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)

_ENV = re.compile(r"\$\{([^}]*)\}")

MAX_FILE_BYTES = 16 * 1024 * 1024
"""Largest configuration file read (a 5,000-point site is well under 1 MiB)."""
MAX_DEPTH = 64
"""Deepest nesting of mappings and sequences (a gateway config needs fewer than 10)."""
MAX_ALIAS_NODES = 100_000
"""Most nodes that aliases (``*name``) may add to a document by repeating what they name."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One located finding. ``severity`` is ``error`` or ``warning``."""

    file: str
    line: int
    col: int
    path: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        tag = "" if self.severity == "error" else "warning: "
        return f"{self.file}:{self.line}:{self.col}: {self.path or '(top)'}: {tag}{self.message}"


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists every error found."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems

    def __reduce__(self) -> tuple[type[ConfigError], tuple[list[Problem]]]:
        return (ConfigError, (self.problems,))


@dataclass
class Where:
    """Where each node of the merged document came from (1-based line/col)."""

    spots: dict[PathKey, tuple[str, int, int]] = field(default_factory=dict)
    # values that came from ${...}: they may be secrets, so messages never show them
    substituted: set[PathKey] = field(default_factory=set)

    def at(self, path: PathKey) -> tuple[str, int, int]:
        for cut in range(len(path), -1, -1):
            spot = self.spots.get(path[:cut])
            if spot is not None:
                return spot
        return next(iter(self.spots.values()), ("<config>", 1, 1))


def dotted(path: PathKey) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _substitute(text: str, problems: list[str], base: Path) -> str:
    """``text`` with every ``${...}`` replaced; ``${file:PATH}`` relative to ``base``."""

    def one(m: re.Match[str]) -> str:
        ref = m.group(1)
        if ref.startswith("file:"):
            secret = base / ref[5:]
            try:
                return secret.read_text(encoding="utf-8").rstrip("\n")
            except OSError as exc:
                problems.append(f"cannot read secret file {str(secret)!r}: {exc.strerror}")
                return ""
        name, sep, default = ref.partition(":-")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            problems.append(f"bad substitution ${{{ref}}}: use ${{NAME}} or ${{file:PATH}}")
            return ""
        value = os.environ.get(name)
        if value is None:
            if sep:
                return default
            problems.append(f"environment variable {name} is not set")
            return ""
        return value

    return _ENV.sub(one, text)


class _Walk:
    """One document's conversion: what aliases have added so far, and where they began."""

    def __init__(self, file: str, where: Where, errors: list[Problem]) -> None:
        from ruamel.yaml.comments import CommentedMap, CommentedSeq

        self.mapping, self.sequence = CommentedMap, CommentedSeq
        self.file = file
        self.where = where
        self.errors = errors
        self.seen: set[int] = set()  # containers converted once (the tree keeps them alive)
        self.expanded = 0

    def refuse(self, path: PathKey, message: str) -> ConfigError:
        f, line, col = self.where.at(path)
        problems = [*self.errors, Problem(f, line, col, dotted(path), message)]
        return ConfigError(sorted(problems, key=lambda e: (e.file, e.line, e.col)))

    def count(self, alias: PathKey | None) -> None:
        if alias is None:
            return
        self.expanded += 1
        if self.expanded > MAX_ALIAS_NODES:
            raise self.refuse(alias, f"aliases expand beyond {MAX_ALIAS_NODES} nodes")

    def convert(self, node: Any, path: PathKey, alias: PathKey | None) -> Any:
        """``alias``: where the alias being expanded was written (None outside one)."""
        where, file = self.where, self.file
        is_map, is_seq = isinstance(node, self.mapping), isinstance(node, self.sequence)
        if is_map or is_seq:
            if alias is None and id(node) in self.seen:
                alias = path  # a second visit: an alias repeats this node here
            if len(path) > MAX_DEPTH:
                if alias is None:
                    raise self.refuse(path, f"nested deeper than {MAX_DEPTH} levels")
                raise self.refuse(alias, f"aliases nest deeper than {MAX_DEPTH} levels")
            self.seen.add(id(node))
            self.count(alias)
        if is_map:
            out: dict[str, Any] = {}
            for key, value in node.items():
                try:
                    spot = node.lc.key(key)
                except KeyError:  # merged in by ``<<: *name``: located where the merge is
                    spot = None
                line, col = spot or _own_position(node)
                where.spots[(*path, str(key))] = (file, line + 1, col + 1)
                out[str(key)] = self.convert(value, (*path, str(key)), alias)
            return out
        if is_seq:
            items = []
            for i, value in enumerate(node):
                line, col = node.lc.item(i) or _own_position(node)
                where.spots[(*path, i)] = (file, line + 1, col + 1)
                items.append(self.convert(value, (*path, i), alias))
            return items
        self.count(alias)
        if isinstance(node, str):
            found: list[str] = []
            text = _substitute(str(node), found, Path(file).parent)
            if text != node:
                where.substituted.add(path)
            for message in found:
                f, line, col = where.at(path)
                self.errors.append(Problem(f, line, col, dotted(path), message))
            return text
        return node


def _own_position(node: Any) -> tuple[int, int]:
    """Where a mapping or sequence starts (0-based): the place of an item ruamel keeps
    no position for (a key merged in by ``<<: *name``, the items of ``!!omap``)."""
    return node.lc.line or 0, node.lc.col or 0


def plain(node: Any, path: PathKey, file: str, where: Where, errors: list[Problem]) -> Any:
    """ruamel node → plain Python data, recording positions and substituting ${...}.

    ``file`` is the path of the YAML file the node was read from: it locates
    problems, and relative ``${file:PATH}`` references are taken from its directory.
    Raises :class:`ConfigError` (with ``errors`` so far) when the tree, aliases
    expanded, is deeper than :data:`MAX_DEPTH` or aliases add more than
    :data:`MAX_ALIAS_NODES` nodes: the conversion stops there, so it stays cheap.
    """
    return _Walk(file, where, errors).convert(node, path, None)


def _depth_bounded_scanner() -> type[Any]:
    """ruamel's round-trip scanner, refusing nesting deeper than :data:`MAX_DEPTH`."""
    from ruamel.yaml.scanner import RoundTripScanner, ScannerError

    class BoundedScanner(RoundTripScanner):
        def _refuse(self) -> None:
            mark = self.reader.get_mark()
            raise ScannerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)

        def fetch_flow_collection_start(self, token_class: Any, to_push: str) -> None:
            if len(self.flow_context) >= MAX_DEPTH:
                self._refuse()
            super().fetch_flow_collection_start(token_class, to_push)

        def add_indent(self, column: int) -> bool:
            if len(self.indents) >= MAX_DEPTH:
                self._refuse()
            return bool(super().add_indent(column))

    return BoundedScanner


def _located_constructor() -> type[Any]:
    """ruamel's round-trip constructor, whose value errors say where they are.

    A scalar that looks like a date but is none (``valid_until: 2026-02-30``) or an
    integer past Python's digit limit raises a bare ``ValueError`` from inside ruamel;
    here it becomes a YAML error at the scalar's line and column.
    """
    from ruamel.yaml.constructor import ConstructorError, RoundTripConstructor

    class LocatedConstructor(RoundTripConstructor):
        def refuse_unknown_tag(self, node: Any) -> Any:
            # a tag such as ``!!python/object/apply:…`` or ``!custom``: never constructed
            # (nor executed), but refused here rather than passed on as a tagged value
            problem = f"unknown YAML tag {node.tag!r} (a configuration uses none)"
            raise ConstructorError(None, None, problem, node.start_mark)

        def construct_non_recursive_object(self, node: Any, tag: str | None = None) -> Any:
            try:
                return super().construct_non_recursive_object(node, tag)
            except (ValueError, OverflowError) as exc:
                value = node.value if isinstance(node.value, str) else ""
                problem = f"cannot read {shorten(value)!r}: {str(exc).split(';')[0]}"
                raise ConstructorError(None, None, problem, node.start_mark) from None

    LocatedConstructor.add_constructor(None, LocatedConstructor.refuse_unknown_tag)
    return LocatedConstructor


def read_yaml(path: Path, errors: list[Problem]) -> Any:
    # imported here: the daemon parses in a child process and never needs the parser itself
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError
    from ruamel.yaml.reader import ReaderError

    yaml = YAML(typ="rt")
    yaml.Scanner = _depth_bounded_scanner()
    yaml.Constructor = _located_constructor()
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            message = f"the file is {size} bytes; at most {MAX_FILE_BYTES} are read"
            errors.append(Problem(str(path), 1, 1, "", message))
            return None
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        errors.append(Problem(str(path), 1, 1, "", f"cannot read: {exc.strerror}"))
        return None
    except UnicodeDecodeError as exc:
        errors.append(Problem(str(path), 1, 1, "", f"not UTF-8 text: {exc.reason}"))
        return None
    try:
        return yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = " ".join(s for s in (exc.context, exc.problem) if s)
        errors.append(Problem(str(path), line, col, "", f"YAML: {what}"))
        return None
    except ReaderError as exc:  # a character YAML does not allow (control characters)
        before = text[: max(0, int(exc.position))]
        line, col = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        errors.append(Problem(str(path), line, col, "", f"YAML: {exc.reason}"))
        return None


def _field_names(model: type[BaseModel]) -> list[str]:
    """Every key ``model`` and the models inside it accept (for "did you mean")."""
    return sorted(_names(model, set()))


def _names(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[str]:
    if model in seen:
        return set()
    seen.add(model)
    names = set(model.model_fields)
    for f in model.model_fields.values():
        for sub in _models_in(f.annotation):
            names |= _names(sub, seen)
    return names


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        yield from _models_in(arg)
    meta = getattr(annotation, "__origin__", None)
    if meta is not None and meta is not annotation:
        yield from _models_in(meta)


_PATTERN_HELP = {
    ID_PATTERN: "use only letters, digits, '_', '.' and '-' (it becomes a topic level)",
    r"^mqtts?://[^/\s:]+(:\d+)?/?$": "write mqtt://host[:port] or mqtts://host[:port]",
}


def _real_path(loc: tuple[Any, ...], data: Any) -> PathKey:
    """Drop the discriminator tags pydantic puts into locations of union members."""
    out: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str) and part not in node:
            if part == node.get("driver") or part == node.get("kind"):
                continue  # the union tag, not a key
            # pydantic names function validators and union members too
            if any(part.startswith(p) for p in ("function-", "tagged-union[")):
                continue
        if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str):
            node = node.get(part)
        out.append(part)
    return tuple(out)


def _message(err: Any, path: PathKey, *, show_input: bool = True, model: type[BaseModel]) -> str:
    kind = err["type"]
    msg = str(err["msg"])
    if kind == "extra_forbidden":
        key = str(path[-1]) if path else "?"
        close = difflib.get_close_matches(key, _field_names(model), n=1, cutoff=0.75)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown key {key!r}{hint}"
    if kind == "missing":
        return f"missing required key {str(path[-1])!r}" if path else "missing"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx") or {}
        return f"unknown driver {ctx.get('tag')!r} (expected one of {ctx.get('expected_tags')})"
    if kind == "union_tag_not_found":
        return "missing required key 'driver'"
    if kind == "string_pattern_mismatch":
        pattern = str((err.get("ctx") or {}).get("pattern", ""))
        msg = _PATTERN_HELP.get(pattern, msg)
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    if show_input and "input" in err and kind not in ("model_type", "dict_type", "list_type"):
        shown = err["input"]
        if isinstance(shown, (str, int, float, bool)) and len(repr(shown)) <= 40:
            msg = f"{msg} (got {shown!r})"
    return msg


def _locate(where: Where, path: PathKey, kind: str) -> tuple[str, int, int]:
    # a missing key is reported where its parent mapping starts
    return where.at(path[:-1] if kind == "missing" else path)


def read_mapping(cfg_path: Path, where: Where, errors: list[Problem], what: str) -> dict[str, Any]:
    """The YAML file as plain data with ``${...}`` substituted; ConfigError if unusable."""
    tree = read_yaml(cfg_path, errors)
    if errors:
        raise ConfigError(errors)
    data = plain(tree, (), str(cfg_path), where, errors)
    where.spots.setdefault((), (str(cfg_path), 1, 1))
    if not isinstance(data, dict):
        got = "the file is empty" if data is None else f"got a {type(data).__name__}"
        message = f"the config must be a YAML mapping of sections ({what}); {got}"
        raise ConfigError([Problem(str(cfg_path), 1, 1, "", message)])
    return data


def validate(model: type[M], data: dict[str, Any], where: Where, errors: list[Problem]) -> M:
    """``model.model_validate(data)``; every problem (and earlier ones) as ConfigError."""
    try:
        result = model.model_validate(data)
    except ValidationError as exc:
        # a value whose ${...} failed is already reported; its validation error is noise
        reported = {e.path for e in errors}
        for err in exc.errors():
            p = _real_path(err["loc"], data)
            if err["type"] == "union_tag_invalid":
                p = (*p, "driver")
            if dotted(p) in reported:
                continue
            f, line, col = _locate(where, p, err["type"])
            shown = p not in where.substituted
            msg = _message(err, p, show_input=shown, model=model)
            errors.append(Problem(f, line, col, dotted(p), msg))
        errors.sort(key=lambda e: (e.file, e.line, e.col))
        raise ConfigError(errors) from None
    if errors:
        raise ConfigError(errors)
    return result


def load_model(path: str | Path, model_cls: type[M]) -> M:
    """Read a YAML file into ``model_cls``: ``${...}`` substituted, every problem located.

    The same machinery as :func:`load_config` without its gateway specifics
    (profiles, cross-checks); used for the ingest configuration. Raises
    :class:`ConfigError` listing every problem as ``FILE:LINE:COL: path: message``.
    """
    cfg_path = Path(path)
    errors: list[Problem] = []
    where = Where()
    data = read_mapping(cfg_path, where, errors, ", ".join(model_cls.model_fields))
    return validate(model_cls, data, where, errors)
