"""A publish whose PUBACK comes together with a cancellation still ends the caller.

On Python 3.11 aiomqtt's ``asyncio.wait_for`` can hand back the PUBACK and drop a
cancellation that arrived at the same moment (one stopping demo in ~20 then waited
forever in the retained-message loop). That race cannot be produced on demand with a
broker, so the publish below completes while its task is being cancelled — what
``wait_for`` leaves behind — and ``publish_acked`` must raise all the same.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

from gateway.config.schema import MqttConfig
from gateway.delivery.publisher import mqtt_client


async def test_a_cancellation_that_came_with_the_puback_is_not_lost() -> None:
    client = mqtt_client(MqttConfig.model_validate({"url": "mqtt://127.0.0.1:1"}), "t")

    async def publish(*args: Any, **kwargs: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # asked to stop ...
        # ... while the acknowledgement is being returned: nothing awaits after it

    client.publish = publish  # type: ignore[method-assign]
    after = asyncio.Event()

    async def retain_loop() -> None:  # what Publisher._retain does
        await client.publish_acked("t/alarms", b"{}", qos=1, retain=True)
        after.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(retain_loop())
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await task
    assert not after.is_set(), "the loop went on after its cancellation"


async def test_a_stale_cancel_request_from_a_closed_task_group_does_not_stop_the_next_publish() -> (
    None
):
    """A publisher reconnecting after a lost connection publishes its birth message.

    On Python 3.11 the session's TaskGroup, whose child failed while it was closing,
    leaves a cancellation request on the publisher's task that nothing withdraws; the
    check must count from before the publish, or every reconnect ends the publisher
    (it did: all four outage tests of the clean CI run stalled after the reconnect).
    """
    client = mqtt_client(MqttConfig.model_validate({"url": "mqtt://127.0.0.1:1"}), "t")
    published: list[str] = []

    async def publish(topic: str, *args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(0)
        published.append(topic)

    client.publish = publish  # type: ignore[method-assign]

    async def lost_connection() -> None:
        # runs only once its group is closing (the body below does not wait): the case
        raise RuntimeError("connection lost")

    async def run() -> int:  # what Publisher.run does across a reconnect
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(lost_connection())
        except* RuntimeError:
            pass
        task = asyncio.current_task()
        assert task is not None
        stale = task.cancelling()
        await client.publish_acked("t/status", b"{}", qos=1, retain=True)
        return stale

    async with asyncio.timeout(5):
        stale = await asyncio.create_task(run())
    assert published == ["t/status"]
    if sys.version_info < (3, 12):  # the case is there (later Pythons withdraw the request)
        assert stale == 1
