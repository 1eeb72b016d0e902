"""Reload on SIGHUP: a bad new file is refused (logged, recorded) and the old one kept."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.parameters import parameters_json
from gateway.config.loader import LoadedConfig
from gateway.ops.reload import (
    Reloaded,
    ReloadRefused,
    load_for_reload,
    reload_config,
    watch_sighup,
)
from gateway.ops.sdnotify import Notifier
from tests.eventually import eventually
from tests.unit.ops_support import NotifySocket, one_device_config


class Events:
    def __init__(self) -> None:
        self.recorded: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, type_: str, data: dict[str, Any]) -> None:
        self.recorded.append((type_, data))


async def test_bad_config_is_refused_with_every_problem(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    current = one_device_config(tmp_path)
    text = current.path.read_text()
    current.path.write_text(
        text.replace("poll: 1s", "poll: 1s\n    scael: 2").replace(
            "unit: bar", "unit: bar, typo: 1"
        )
    )
    events = Events()
    with caplog.at_level(logging.ERROR), pytest.raises(ReloadRefused) as refused:
        await reload_config(current, events)
    assert len(refused.value.problems) == 2
    assert any("scael" in p for p in refused.value.problems)
    assert all(p.startswith(str(current.path)) for p in refused.value.problems)  # file:line:col
    assert [t for t, _ in events.recorded] == ["config_reload_refused"]
    data = events.recorded[0][1]
    assert data["sha256"] == current.sha256 and data["problems"] == refused.value.problems
    assert sum("reload refused" in r.message for r in caplog.records) == 2


async def test_missing_file_is_refused(tmp_path: Path) -> None:
    current = one_device_config(tmp_path)
    current.path.unlink()
    events = Events()
    with pytest.raises(ReloadRefused):
        await reload_config(current, events)
    assert events.recorded[0][0] == "config_reload_refused"


async def test_valid_change_is_returned_and_sections_needing_restart_named(tmp_path: Path) -> None:
    current = one_device_config(tmp_path)
    events = Events()
    same = await reload_config(current, events)
    assert not same.changed and events.recorded == []
    current.path.write_text(
        current.path.read_text().replace("poll: 1s", "poll: 2s")
        + "mqtt: {url: 'mqtt://192.0.2.1:1883'}\n"
    )
    result = await reload_config(current, events)
    assert result.changed and result.loaded.config.devices[0].poll == 2.0
    assert result.restart_required == ("mqtt",)
    assert events.recorded[0][0] == "config_reloaded"
    assert events.recorded[0][1]["previous_sha256"] == current.sha256


async def test_sighup_with_bad_config_keeps_the_running_one(tmp_path: Path) -> None:
    running = one_device_config(tmp_path)
    good_text = running.path.read_text()
    events = Events()
    applied: list[Reloaded] = []
    notify = NotifySocket(tmp_path)
    state = {"loaded": running}

    async def apply(result: Reloaded) -> None:
        applied.append(result)
        state["loaded"] = result.loaded

    def current() -> LoadedConfig:
        return state["loaded"]

    async def hup_and_wait(n_events: int) -> None:
        os.kill(os.getpid(), signal.SIGHUP)  # a real signal to this process
        await eventually(lambda: len(events.recorded) >= n_events, f"event {n_events}", within=5)

    try:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(
                watch_sighup(current, events, apply, notifier=Notifier(str(notify.path))),
                name="sighup",
            )
            await asyncio.sleep(0)  # let it install the handler
            running.path.write_text(good_text.replace("poll: 1s", "pol: 1s"))
            await hup_and_wait(1)
            assert events.recorded[-1][0] == "config_reload_refused"
            assert applied == [] and state["loaded"] is running
            running.path.write_text(good_text.replace("poll: 1s", "poll: 3s"))
            await hup_and_wait(2)
            assert events.recorded[-1][0] == "config_reloaded"
            await eventually(lambda: bool(applied), "the new config applied", within=5)
            assert state["loaded"].config.devices[0].poll == 3.0
            task.cancel()
        messages = notify.messages()
        assert [m.split("\n")[0] for m in messages] == ["RELOADING=1", "READY=1"] * 2
        # the handler is removed again: SIGHUP is back to its default disposition
        assert signal.getsignal(signal.SIGHUP) in (signal.SIG_DFL, signal.default_int_handler)
    finally:
        notify.close()


async def test_the_file_is_loaded_off_the_event_loop_as_at_start_up(tmp_path: Path) -> None:
    current = one_device_config(tmp_path)
    current.path.write_text(current.path.read_text().replace("poll: 1s", "poll: 2s"))
    threads: list[int] = []

    def load(path: Path) -> LoadedConfig:
        threads.append(threading.get_ident())
        return load_for_reload(path)

    result = await reload_config(current, Events(), load=load)
    assert threads and threads[0] != threading.get_ident(), "not on the event loop's thread"
    # as at start-up: loaded in the child, the audit trail's parameter set computed there
    assert result.loaded.parameters == parameters_json(result.loaded.config)
    default = await reload_config(current, Events())
    assert default.loaded.parameters == result.loaded.parameters


async def test_a_load_past_its_time_is_refused(tmp_path: Path) -> None:
    current = one_device_config(tmp_path)
    events = Events()

    def load(path: Path) -> LoadedConfig:
        raise TimeoutError(f"{path}: loading took longer than 300.0 s")

    with pytest.raises(ReloadRefused) as refused:
        await reload_config(current, events, load=load)
    assert refused.value.problems == [f"{current.path}: loading took longer than 300.0 s"]
    assert events.recorded[0][0] == "config_reload_refused"


async def test_a_reload_that_fails_in_any_way_leaves_the_watcher_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    running = one_device_config(tmp_path)
    text = running.path.read_text()
    applied: list[Reloaded] = []
    calls: list[str] = []

    def failing_log(type_: str, data: dict[str, Any]) -> None:
        calls.append(type_)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")  # the audit trail cannot be written

    async def apply(result: Reloaded) -> None:
        applied.append(result)

    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(watch_sighup(lambda: running, failing_log, apply), name="sighup")
        await asyncio.sleep(0)  # let it install the handler
        running.path.write_text(text.replace("poll: 1s", "poll: 2s"))
        os.kill(os.getpid(), signal.SIGHUP)
        await eventually(lambda: calls == ["config_reloaded"], "the first reload", within=5)
        await eventually(
            lambda: any("reload failed" in r.getMessage() for r in caplog.records), "logged"
        )
        assert not task.done() and applied == []
        os.kill(os.getpid(), signal.SIGHUP)  # the next one goes through
        await eventually(lambda: bool(applied), "the second reload applied", within=5)
        task.cancel()
