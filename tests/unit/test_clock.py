"""Clock monitoring: sync state, jumps, flagged readings; jumps never reorder the log."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drivers.base import Quality, Reason
from gateway.acquisition.clock import (
    CLOCK_FLAG,
    ClockJump,
    ClockMonitor,
    ClockSyncChanged,
    SyncState,
    adjtimex_probe,
    flag_if_unsynchronised,
)
from gateway.audit.eventlog import EventLog
from gateway.audit.verify import verify_event_log
from gateway.wire.reading import Reading
from gateway.wire.signing import Signer


class Ticker:
    """A settable clock in µs."""

    def __init__(self, start: int) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now


class Probe:
    def __init__(self, state: SyncState) -> None:
        self.state = state

    def __call__(self) -> SyncState:
        return self.state


def _monitor(probe: Probe) -> tuple[ClockMonitor, Ticker, Ticker]:
    wall, mono = Ticker(1_700_000_000_000_000), Ticker(5_000_000)
    return ClockMonitor(probe=probe, wall_us=wall, mono_us=mono), wall, mono


def test_sync_state_is_reported_on_first_check_and_on_change() -> None:
    probe = Probe(SyncState.UNSYNCHRONISED)
    mon, _, _ = _monitor(probe)
    assert mon.check() == [ClockSyncChanged(None, SyncState.UNSYNCHRONISED)]
    assert not mon.synchronised
    assert mon.check() == []
    probe.state = SyncState.SYNCHRONISED
    events = mon.check()
    assert events == [ClockSyncChanged(SyncState.UNSYNCHRONISED, SyncState.SYNCHRONISED)]
    assert events[0].event_data() == {"old": "unsynchronised", "new": "synchronised"}
    assert mon.synchronised


def test_unknown_sync_state_counts_as_synchronised() -> None:
    mon, _, _ = _monitor(Probe(SyncState.UNKNOWN))
    mon.check()
    assert mon.synchronised


def test_steady_time_is_no_jump_and_jumps_are_measured() -> None:
    mon, wall, mono = _monitor(Probe(SyncState.SYNCHRONISED))
    mon.check()
    for _ in range(3):
        wall.now += 1_000_000
        mono.now += 1_000_000
        assert mon.check() == []
    wall.now += 1_050_000  # 50 ms of NTP slewing: noise, not a jump
    mono.now += 1_000_000
    assert mon.check() == []
    before = wall.now
    wall.now -= 3_600_000_000  # set back an hour
    mono.now += 1_000
    (jump,) = mon.check()
    assert isinstance(jump, ClockJump) and jump.backwards
    assert jump.step_us == -3_600_000_000 - 1_000
    assert jump.event_data()["direction"] == "backward"
    assert jump.wall_before_us == before
    wall.now += 86_400_000_000  # a Pi without RTC finally gets NTP: a day forward
    mono.now += 1_000_000
    (fwd,) = mon.check()
    assert isinstance(fwd, ClockJump) and not fwd.backwards
    assert fwd.step_us == 86_400_000_000 - 1_000_000


def test_readings_taken_unsynchronised_are_flagged() -> None:
    r = Reading(1, "dev", "p", 1.0, 1.0, "kg", Quality.GOOD)
    flag_if_unsynchronised(r, synchronised=True)
    assert (r.quality, r.flags) == (Quality.GOOD, [])
    flag_if_unsynchronised(r, synchronised=False)
    assert r.quality == Quality.UNCERTAIN
    assert r.reason is Reason.CLOCK_NOT_SYNCHRONISED
    assert r.flags == [CLOCK_FLAG]
    bad = Reading(1, "dev", "p", None, None, None, Quality.BAD, Reason.NO_COMMUNICATION)
    flag_if_unsynchronised(bad, synchronised=False)
    assert bad.quality is Quality.BAD and bad.reason is Reason.NO_COMMUNICATION
    assert bad.flags == [CLOCK_FLAG]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="adjtimex is Linux-only")
def test_adjtimex_probe_reads_the_kernel_state() -> None:
    assert adjtimex_probe() in (SyncState.SYNCHRONISED, SyncState.UNSYNCHRONISED)


def test_backward_clock_does_not_reorder_the_event_log(tmp_path: Path) -> None:
    signer = Signer.from_private_key(Ed25519PrivateKey.generate())
    wall = Ticker(1_700_000_000_000_000)
    with EventLog(tmp_path / "events.log", signer, software_id="x", clock_us=wall) as log:
        log.append("startup", {})
        wall.now -= 3_600_000_000
        log.append("clock_jump", {"step_us": -3_600_000_000})
        log.append("outbox_drop", {"batches": 1})
    rep = verify_event_log(tmp_path / "events.log", {signer.kid: signer.private_key.public_key()})
    assert rep.ok and rep.last_n == 3
