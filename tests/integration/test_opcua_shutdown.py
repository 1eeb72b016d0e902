"""A shutdown closes OPC UA sessions: the daemon stops its device tasks by cancelling
them, and the driver's teardown must still reach the server (close the session and its
subscription) instead of leaving it to time out while asyncua retries publishing."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from drivers.opcua import OpcUaDriver, OpcUaPoint
from simulators.opcua_server import OpcUaSim, SimPoint
from tests.eventually import eventually


def _subscriptions(sim: OpcUaSim) -> int:
    assert sim._server is not None
    return len(sim._server.iserver.subscription_service.subscriptions)


async def test_a_cancelled_device_task_closes_its_session_and_subscription() -> None:
    point = OpcUaPoint("t", node="ns=2;s=Line1.T")
    async with OpcUaSim([SimPoint("t", "Line1/T", value=1.0)]) as sim:
        connected = asyncio.Event()

        async def device() -> None:
            async with AsyncExitStack() as stack:
                drv = OpcUaDriver(
                    "d", sim.url, [point], timeout=1.0, mode="subscribe", publishing_interval=0.2
                )
                await stack.enter_async_context(drv)
                await drv.read()
                connected.set()
                await asyncio.Event().wait()  # as a poller between polls

        task = asyncio.create_task(device())
        async with asyncio.timeout(20):
            await connected.wait()
        assert _subscriptions(sim) == 1
        task.cancel()
        await asyncio.wait([task], timeout=20)
        assert task.cancelled()  # the cancellation went on after the teardown
        await eventually(lambda: _subscriptions(sim) == 0, "the subscription deleted", within=5)
