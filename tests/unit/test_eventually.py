"""The tests' one wait-for-a-condition helper (tests/eventually.py)."""

from __future__ import annotations

import threading
import time

import pytest

from tests.eventually import eventually, eventually_blocking


class Becomes:
    """A condition that turns true at its n-th check (never when n is 0); counts checks."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.checks = 0
        self.threads: set[int] = set()

    def __call__(self) -> bool:
        self.checks += 1
        self.threads.add(threading.get_ident())
        return self.n > 0 and self.checks >= self.n


class TrueFromDeadline:
    """False until ``timeout`` seconds after it was made: true only for a check after then."""

    def __init__(self, timeout: float) -> None:
        self.at = time.monotonic() + timeout
        self.checks = 0

    def __call__(self) -> bool:
        self.checks += 1
        return time.monotonic() >= self.at


async def test_a_true_condition_returns_at_once() -> None:
    cond = Becomes(1)
    await eventually(cond, "at once", within=0)
    assert cond.checks == 1


async def test_it_polls_until_the_condition_holds() -> None:
    cond = Becomes(5)
    await eventually(cond, "five checks", within=10, interval=0.001)
    assert cond.checks == 5


async def test_an_async_condition_is_awaited() -> None:
    cond = Becomes(3)

    async def check() -> bool:
        return cond()

    await eventually(check, "async", within=10, interval=0.001)
    assert cond.checks == 3


async def test_a_blocking_condition_can_run_in_a_thread() -> None:
    cond = Becomes(2)
    await eventually(cond, "in a thread", within=10, interval=0.001, thread=True)
    assert threading.get_ident() not in cond.threads


async def test_failure_names_what_was_awaited_after_the_timeout() -> None:
    cond = Becomes(0)
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"timed out after 0.1 s waiting for the moon"):
        await eventually(cond, "the moon", within=0.1, interval=0.01)
    assert time.monotonic() - started >= 0.1  # it did not give up early
    assert cond.checks >= 2


async def test_a_condition_true_after_the_last_sleep_passes() -> None:
    # the interval is far longer than the timeout: one sleep up to the deadline, then
    # the check that must come after it
    cond = TrueFromDeadline(0.05)
    await eventually(cond, "the deadline", within=0.05, interval=60)
    assert cond.checks == 2


async def test_an_exception_in_the_condition_fails_at_once() -> None:
    def broken() -> bool:
        raise RuntimeError("process died")

    with pytest.raises(RuntimeError, match="process died"):
        await eventually(broken, "a dead process", within=60)


def test_blocking_form_has_the_same_contract() -> None:
    cond = Becomes(4)
    eventually_blocking(cond, "four checks", within=10, interval=0.001)
    assert cond.checks == 4
    late = TrueFromDeadline(0.05)
    eventually_blocking(late, "the deadline", within=0.05, interval=60)
    assert late.checks == 2
    with pytest.raises(AssertionError, match=r"waiting for nothing \(\d+ checks\)"):
        eventually_blocking(Becomes(0), "nothing", within=0.05, interval=0.01)


def test_blocking_form_refuses_an_async_condition() -> None:
    async def check() -> bool:
        return True

    with pytest.raises(TypeError, match="needs eventually"):
        eventually_blocking(check, "async")


def test_nonsense_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="interval"):
        eventually_blocking(Becomes(1), "x", interval=0)
    with pytest.raises(ValueError, match="within"):
        eventually_blocking(Becomes(1), "x", within=-1)
