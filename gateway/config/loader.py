"""A gateway config file → validated :class:`~gateway.config.schema.Config`, every problem located.

On top of :mod:`gateway.common.yamlconf` (located YAML, ``${ENV}`` and ``${file:}``
secrets, all problems at once), this expands device profiles, compiles each
device's read plan once (by its driver kind, :mod:`gateway.config.models.registry`), runs
the cross-checks of :mod:`gateway.config.checks`, and loads compactly in a child
process for the daemon. Nothing is started before this passes.
"""

from __future__ import annotations

import gc
import hashlib
import os
import re
import select
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from gateway.common.yamlconf import (
    ConfigError,
    PathKey,
    Problem,
    Where,
    dotted,
    plain,
    read_mapping,
    read_yaml,
    validate,
)
from gateway.config.schema import Config
from gateway.wire.keys import resolve_key_text

__all__ = [
    "SHIPPED_PROFILES",
    "ConfigError",
    "LoadedConfig",
    "Problem",
    "load_config",
    "load_config_compact",
    "profile_dirs",
    "share_equal_values",
]


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
    plans: Mapping[str, Any] = field(default_factory=dict)
    """Each device's read plan by device id, compiled once while checking (its kind's
    ``plan``); the drivers are built with these. Plain data: it is pickled from the
    loading child like the rest."""
    where: Where | None = None
    """Where each node of the file stands, to locate what is found after loading
    (``check --online``); None when loaded compactly for the daemon."""

    def locate(self, path: PathKey, message: str, severity: str = "error") -> Problem:
        """A finding at ``path`` (``("devices", 3, "url")``) as a located problem."""
        f, line, col = (self.where or Where()).at(path)
        if self.where is None:
            f = str(self.path)
        return Problem(f, line, col, dotted(path), message, severity)


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
    data: dict[str, Any], config_path: Path, where: Where, errors: list[Problem]
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
        sub = Where()
        doc = plain(read_yaml(found, errors), (), str(found), sub, errors)
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
        defaults = doc.get("defaults") or {}
        merged = doc.get("points") or []
        for key, value, kind in (("defaults", defaults, dict), ("points", merged, list)):
            if not isinstance(value, kind):
                f, line, col = sub.at((key,))
                what = "a mapping of device keys" if kind is dict else "a list of points"
                errors.append(Problem(f, line, col, key, f"a profile's {key} is {what}"))
        if not isinstance(defaults, dict) or not isinstance(merged, list):
            continue
        for key, value in defaults.items():
            if key not in device:
                device[key] = value
                _graft(sub, ("defaults", key), where, (*dpath, key))
        own = device.get("points") or []
        if not isinstance(own, list):
            continue  # not a list of points: validation says so, at its place
        merged = list(merged)
        # the device's own points follow the profile's: shift their recorded positions
        # first (last one first), so the profile's positions do not overwrite them
        for j in range(len(own) - 1, -1, -1):
            _move(where, (*dpath, "points", j), (*dpath, "points", len(merged) + j))
        for j in range(len(merged)):
            _graft(sub, ("points", j), where, (*dpath, "points", j))
        device["points"] = merged + own


def _graft(src: Where, src_path: PathKey, dst: Where, dst_path: PathKey) -> None:
    n = len(src_path)
    for key, spot in src.spots.items():
        if key[:n] == src_path:
            dst.spots[dst_path + key[n:]] = spot
    dst.substituted |= {dst_path + key[n:] for key in src.substituted if key[:n] == src_path}


def _move(where: Where, old: PathKey, new: PathKey) -> None:
    n = len(old)
    moved = {k: v for k, v in where.spots.items() if k[:n] == old}
    for k in moved:
        del where.spots[k]
    for k, v in moved.items():
        where.spots[new + k[n:]] = v


def _anchor_device_paths(model: BaseModel, base: Path) -> None:
    """Every path in a device's settings (an OPC UA certificate, key, trust list), taken
    from ``base``: found by type, so no driver kind needs naming here."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, Path) and not value.is_absolute():
            setattr(model, name, base / value)
        elif isinstance(value, BaseModel):
            _anchor_device_paths(value, base)
        elif isinstance(value, list):
            for k, item in enumerate(value):
                if isinstance(item, Path) and not item.is_absolute():
                    value[k] = base / item
                elif isinstance(item, BaseModel):
                    _anchor_device_paths(item, base)


def _anchor_paths(config: Config, base: Path) -> None:
    """Take the relative paths of ``config`` from ``base`` (the config file's directory).

    ``gateway.state_dir``, ``outbox.path``, ``signing.key``, ``mqtt.tls.ca/cert/key``
    and every path of a device (an OPC UA ``security.certificate``, ``private_key``,
    ``trusted_servers``) mean the same file whatever the working directory of the
    process that loads them.
    """
    for device in config.devices:
        _anchor_device_paths(device, base)
    tls = config.mqtt.tls
    keys: list[tuple[BaseModel, str]] = [
        (config.gateway, "state_dir"),
        (config.outbox, "path"),
        (config.signing, "key"),
        *((tls, key) for key in ("ca", "cert", "key") if tls is not None),
    ]
    for section, key in keys:
        value = getattr(section, key)
        if isinstance(value, Path) and not value.is_absolute():
            setattr(section, key, base / value)


def load_config(path: str | Path, *, today: Any = None) -> LoadedConfig:
    """Read, validate and cross-check a config file; raise :class:`ConfigError`."""
    from gateway.config.checks import compile_plans, cross_checks

    cfg_path = Path(path)
    errors: list[Problem] = []
    where = Where()
    data = read_mapping(cfg_path, where, errors, "gateway, devices, ...")
    _expand_profiles(data, cfg_path, where, errors)
    config = validate(Config, data, where, errors)
    _anchor_paths(config, cfg_path.resolve().parent)
    for op in config.operators:
        op.public_key = resolve_key_text(op.public_key, cfg_path.resolve().parent)
    warnings: list[Problem] = []
    plans, findings = compile_plans(config.devices)
    findings += cross_checks(config, plans, today=today)
    for p, message, severity in findings:
        f, line, col = where.at(p)
        (errors if severity == "error" else warnings).append(
            Problem(f, line, col, dotted(p), message, severity)
        )
    if errors:
        errors.sort(key=lambda e: (e.file, e.line, e.col))
        raise ConfigError(errors)
    digest = hashlib.sha256(cfg_path.read_bytes()).hexdigest()
    return LoadedConfig(config, cfg_path, digest, warnings, plans=plans, where=where)


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
    timeout: float | None = None,
    nice: int = 0,
) -> LoadedConfig:
    """:func:`load_config` in a short-lived child process (where ``fork`` exists).

    Parsing a large YAML file leaves the Python heap fragmented: a 5,000-point
    config costs the daemon ~85 MB of resident memory that it never gives back. The
    child parses and validates, the parent receives the compact result (or the
    :class:`ConfigError`) pickled through a pipe, equal values shared
    (:func:`share_equal_values`) — ~4 MB for the same config. ``parameters``, when
    given, is applied to the config in the child too (its transient objects stay
    there); the result comes back as :attr:`LoadedConfig.parameters`.

    The parent only waits on the pipe, so a reload can call this from a worker
    thread (``asyncio.to_thread``) while the event loop goes on. ``timeout`` bounds
    the child: past it the child is killed and :class:`TimeoutError` raised.
    ``nice`` lowers the child's CPU priority (a reload is background work: where
    cores are scarce, the running daemon goes first). The result is unpickled with
    the cyclic garbage collector paused: its collections among hundreds of thousands
    of new objects would only cost time (and, in a worker thread, hold the GIL the
    event loop waits for).
    """

    def load() -> LoadedConfig:
        loaded = replace(load_config(path, today=today), where=None)  # the daemon's is lean
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
            _detach_signals()
            if nice:
                os.nice(nice)
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
    try:
        payload = _read_all(read_fd, None if timeout is None else time.monotonic() + timeout)
    except TimeoutError:
        os.kill(pid, signal.SIGKILL)
        raise TimeoutError(f"{path}: loading took longer than {timeout} s") from None
    finally:
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
    if status != 0 or not payload:
        return load()  # the child failed oddly: do it here
    collecting = gc.isenabled()
    gc.disable()
    try:
        result = pickle.loads(payload)
    finally:
        if collecting:
            gc.enable()
    if isinstance(result, ConfigError):
        raise result
    assert isinstance(result, LoadedConfig)
    return result


def _detach_signals() -> None:
    """In the loading child: signals no longer reach the parent's event loop.

    The child inherits the asyncio signal handlers and their wake-up pipe, which is
    the parent's; a signal meant for the child (systemd stops the whole unit) must
    end the child, not wake the parent's loop a second time.
    """
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
    except (ValueError, OSError):
        pass  # not the main thread of the interpreter: nothing was installed here


def _read_all(fd: int, deadline: float | None) -> bytes:
    """Everything until end of file from ``fd``; TimeoutError past ``deadline``."""
    chunks: list[bytes] = []
    while True:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
