"""YAML → validated :class:`~gateway.config.schema.Config`, every problem located.

The loader reads YAML with ruamel.yaml (which remembers where each node stood),
substitutes ``${ENV}`` references and expands device profiles, validates with the
pydantic models, runs the cross-checks, and reports *all* problems at once as
``FILE:LINE:COL: dotted.path: message``. Nothing is started before this passes.

Secrets: ``${NAME}`` takes environment variable NAME (``${NAME:-default}`` gives a
default), ``${file:PATH}`` takes the content of a file (trailing newline
stripped). Substituted values are never echoed in messages.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from gateway.config.schema import Config

PathKey = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)

_ENV = re.compile(r"\$\{([^}]*)\}")


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
class _Where:
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


@dataclass(frozen=True)
class LoadedConfig:
    """A valid configuration with what ``check`` reports beside it."""

    config: Config
    path: Path
    sha256: str
    warnings: list[Problem]
    parameters: bytes | None = None
    """What ``load_config_compact(..., parameters=f)`` computed as ``f(config)`` while
    loading (the audit trail's canonical parameter set); None when not asked for."""


def dotted(path: PathKey) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _substitute(text: str, problems: list[str]) -> str:
    def one(m: re.Match[str]) -> str:
        ref = m.group(1)
        if ref.startswith("file:"):
            try:
                return Path(ref[5:]).read_text(encoding="utf-8").rstrip("\n")
            except OSError as exc:
                problems.append(f"cannot read secret file {ref[5:]!r}: {exc.strerror}")
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


def _plain(node: Any, path: PathKey, file: str, where: _Where, errors: list[Problem]) -> Any:
    """ruamel node → plain Python data, recording positions and substituting ${...}."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(node, CommentedMap):
        out: dict[str, Any] = {}
        for key, value in node.items():
            line, col = node.lc.key(key)
            where.spots[(*path, str(key))] = (file, line + 1, col + 1)
            out[str(key)] = _plain(value, (*path, str(key)), file, where, errors)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for i, value in enumerate(node):
            line, col = node.lc.item(i)
            where.spots[(*path, i)] = (file, line + 1, col + 1)
            items.append(_plain(value, (*path, i), file, where, errors))
        return items
    if isinstance(node, str):
        found: list[str] = []
        text = _substitute(str(node), found)
        if text != node:
            where.substituted.add(path)
        for message in found:
            f, line, col = where.at(path)
            errors.append(Problem(f, line, col, dotted(path), message))
        return text
    return node


def _read_yaml(path: Path, errors: list[Problem]) -> Any:
    # imported here: the daemon parses in a child process and never needs the parser itself
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError

    yaml = YAML(typ="rt")
    try:
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


SHIPPED_PROFILES = Path(__file__).resolve().parent / "profiles"
"""The profiles that ship with metrogate (package data; ``config/profiles`` links here)."""


def profile_dirs(config_path: Path) -> list[Path]:
    """Where ``profile: NAME`` is looked up, in order."""
    dirs = [config_path.parent / "profiles", config_path.parent.parent / "profiles"]
    env = os.environ.get("METROGATE_PROFILES")
    if env:
        dirs = [Path(p) for p in env.split(os.pathsep)] + dirs
    dirs.append(SHIPPED_PROFILES)
    return dirs


def _expand_profiles(
    data: dict[str, Any], config_path: Path, where: _Where, errors: list[Problem]
) -> None:
    """Merge each device's ``profile:`` (points first, then the device's own keys)."""
    devices = data.get("devices")
    if not isinstance(devices, list):
        return
    for i, device in enumerate(devices):
        if not isinstance(device, dict) or not isinstance(device.get("profile"), str):
            continue
        name = device["profile"]
        dpath: PathKey = ("devices", i)
        found = next(
            (
                d / f"{name}.yaml"
                for d in profile_dirs(config_path)
                if (d / f"{name}.yaml").is_file()
            ),
            None,
        )
        if found is None or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            f, line, col = where.at((*dpath, "profile"))
            known = sorted(
                {p.stem for d in profile_dirs(config_path) if d.is_dir() for p in d.glob("*.yaml")}
            )
            errors.append(
                Problem(
                    f,
                    line,
                    col,
                    dotted((*dpath, "profile")),
                    f"unknown profile {name!r} (known: {', '.join(known) or 'none'})",
                )
            )
            continue
        sub = _Where()
        doc = _plain(_read_yaml(found, errors), (), str(found), sub, errors)
        if not isinstance(doc, dict):
            if doc is not None:
                errors.append(Problem(str(found), 1, 1, "", "a profile is a mapping"))
            continue
        extra = set(doc) - {"description", "driver", "defaults", "points"}
        for key in sorted(extra):
            f, line, col = sub.at((key,))
            errors.append(
                Problem(
                    f,
                    line,
                    col,
                    key,
                    "unknown profile key (allowed: description, driver, defaults, points)",
                )
            )
        if "driver" in doc and "driver" in device and doc["driver"] != device["driver"]:
            f, line, col = where.at((*dpath, "driver"))
            errors.append(
                Problem(
                    f,
                    line,
                    col,
                    dotted((*dpath, "driver")),
                    f"profile {name!r} is for driver {doc['driver']!r}",
                )
            )
        del device["profile"]
        for key, value in (doc.get("defaults") or {}).items():
            if key not in device:
                device[key] = value
                _graft(sub, ("defaults", key), where, (*dpath, key))
        own = device.get("points") or []
        merged = list(doc.get("points") or [])
        # the device's own points follow the profile's: shift their recorded positions
        # first (last one first), so the profile's positions do not overwrite them
        for j in range(len(own) - 1, -1, -1):
            _move(where, (*dpath, "points", j), (*dpath, "points", len(merged) + j))
        for j in range(len(merged)):
            _graft(sub, ("points", j), where, (*dpath, "points", j))
        device["points"] = merged + own


def _graft(src: _Where, src_path: PathKey, dst: _Where, dst_path: PathKey) -> None:
    n = len(src_path)
    for key, spot in src.spots.items():
        if key[:n] == src_path:
            dst.spots[dst_path + key[n:]] = spot
    dst.substituted |= {dst_path + key[n:] for key in src.substituted if key[:n] == src_path}


def _move(where: _Where, old: PathKey, new: PathKey) -> None:
    n = len(old)
    moved = {k: v for k, v in where.spots.items() if k[:n] == old}
    for k in moved:
        del where.spots[k]
    for k, v in moved.items():
        where.spots[new + k[n:]] = v


def _field_names(model: type[BaseModel], seen: set[type[BaseModel]] | None = None) -> set[str]:
    seen = seen if seen is not None else set()
    if model in seen:
        return set()
    seen.add(model)
    names = set(model.model_fields)
    for f in model.model_fields.values():
        for sub in _models_in(f.annotation):
            names |= _field_names(sub, seen)
    return names


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        yield from _models_in(arg)
    meta = getattr(annotation, "__origin__", None)
    if meta is not None and meta is not annotation:
        yield from _models_in(meta)


_KNOWN_KEYS: dict[type[BaseModel], list[str]] = {}

_PATTERN_HELP = {
    r"^[A-Za-z0-9_.-]+$": "use only letters, digits, '_', '.' and '-' (it becomes a topic level)",
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


def _message(
    err: Any, path: PathKey, *, show_input: bool = True, model: type[BaseModel] = Config
) -> str:
    kind = err["type"]
    msg = str(err["msg"])
    if kind == "extra_forbidden":
        key = str(path[-1]) if path else "?"
        if model not in _KNOWN_KEYS:
            _KNOWN_KEYS[model] = sorted(_field_names(model))
        close = difflib.get_close_matches(key, _KNOWN_KEYS[model], n=1, cutoff=0.75)
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


def _locate(where: _Where, path: PathKey, kind: str) -> tuple[str, int, int]:
    # a missing key is reported where its parent mapping starts
    return where.at(path[:-1] if kind == "missing" else path)


def _read_mapping(
    cfg_path: Path, where: _Where, errors: list[Problem], what: str
) -> dict[str, Any]:
    """The YAML file as plain data with ``${...}`` substituted; ConfigError if unusable."""
    tree = _read_yaml(cfg_path, errors)
    if errors:
        raise ConfigError(errors)
    data = _plain(tree, (), str(cfg_path), where, errors)
    where.spots.setdefault((), (str(cfg_path), 1, 1))
    if not isinstance(data, dict):
        got = "the file is empty" if data is None else f"got a {type(data).__name__}"
        message = f"the config must be a YAML mapping of sections ({what}); {got}"
        raise ConfigError([Problem(str(cfg_path), 1, 1, "", message)])
    return data


def _validate(model: type[M], data: dict[str, Any], where: _Where, errors: list[Problem]) -> M:
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
    where = _Where()
    data = _read_mapping(cfg_path, where, errors, ", ".join(model_cls.model_fields))
    return _validate(model_cls, data, where, errors)


def load_config(path: str | Path, *, today: Any = None) -> LoadedConfig:
    """Read, validate and cross-check a config file; raise :class:`ConfigError`."""
    from gateway.config.checks import cross_checks

    cfg_path = Path(path)
    errors: list[Problem] = []
    where = _Where()
    data = _read_mapping(cfg_path, where, errors, "gateway, devices, ...")
    _expand_profiles(data, cfg_path, where, errors)
    config = _validate(Config, data, where, errors)
    base = cfg_path.resolve().parent
    if not config.gateway.state_dir.is_absolute():
        config.gateway.state_dir = base / config.gateway.state_dir
    warnings: list[Problem] = []
    for p, message, severity in cross_checks(config, today=today):
        f, line, col = where.at(p)
        (errors if severity == "error" else warnings).append(
            Problem(f, line, col, dotted(p), message, severity)
        )
    if errors:
        errors.sort(key=lambda e: (e.file, e.line, e.col))
        raise ConfigError(errors)
    digest = hashlib.sha256(cfg_path.read_bytes()).hexdigest()
    return LoadedConfig(config, cfg_path, digest, warnings)


def share_equal_values(model: BaseModel) -> None:
    """Make equal strings and numbers in ``model``'s tree one object each, in place.

    Pickling keeps shared objects shared, so a big site's thousands of ``"bar"``,
    ``"sine"`` or ``1.0`` cost one object each in the daemon. Models of one class
    with the same set fields also share one (frozen) fields-set record, so the
    result is read-only: assigning to one of its models raises ``AttributeError``
    (the daemon never does; values and equality are unchanged).
    """
    leaves: dict[tuple[type, object], object] = {}
    field_sets: dict[tuple[type, frozenset[str]], frozenset[str]] = {}

    def one(value: Any) -> Any:
        kind = type(value)
        if kind is str or kind is int:
            return leaves.setdefault((kind, value), value)
        if kind is float:  # by bits: -0.0 and NaN stay what they are
            return leaves.setdefault((kind, value.hex()), value)
        if isinstance(value, BaseModel):
            fields = value.__dict__
            for key, item in fields.items():
                fields[key] = one(item)
            own = frozenset(value.__pydantic_fields_set__)
            shared = field_sets.setdefault((type(value), own), own)
            # frozen: assigning to a shared model would now fail loudly, never leak
            object.__setattr__(value, "__pydantic_fields_set__", shared)
        elif kind is list:
            value[:] = [one(item) for item in value]
        elif kind is dict:
            items = [(one(k), one(v)) for k, v in value.items()]
            value.clear()
            value.update(items)
        return value

    one(model)


def load_config_compact(
    path: str | Path,
    *,
    today: Any = None,
    parameters: Callable[[Config], bytes] | None = None,
) -> LoadedConfig:
    """:func:`load_config` in a short-lived child process (where ``fork`` exists).

    Parsing a large YAML file leaves the Python heap fragmented: a 5,000-point
    config costs the daemon ~85 MB of resident memory that it never gives back. The
    child parses and validates, the parent receives the compact result (or the
    :class:`ConfigError`) pickled through a pipe, equal values shared
    (:func:`share_equal_values`) — ~4 MB for the same config. ``parameters``, when
    given, is applied to the config in the child too (its transient objects stay
    there); the result comes back as :attr:`LoadedConfig.parameters`.
    """

    def load() -> LoadedConfig:
        loaded = load_config(path, today=today)
        if parameters is None:
            return loaded
        return replace(loaded, parameters=parameters(loaded.config))

    if not hasattr(os, "fork"):
        return load()
    import pickle

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            os.close(read_fd)
            try:
                loaded = load()
                share_equal_values(loaded.config)
                result: object = loaded
            except ConfigError as exc:
                result = exc
            with os.fdopen(write_fd, "wb") as out:
                pickle.dump(result, out, protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        payload = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not payload:
        return load()  # the child failed oddly: do it here
    result = pickle.loads(payload)
    if isinstance(result, ConfigError):
        raise result
    assert isinstance(result, LoadedConfig)
    return result
