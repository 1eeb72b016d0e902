"""The baseline: a plain asyncio pymodbus + paho loop, with none of metrogate's guarantees.

Polls N Modbus TCP devices at a fixed period, decodes float32 registers, stamps each
reading, publishes one JSON message per poll with QoS 1 (paho, up to 50 in flight).
No outbox, no signing, no calibration, no rules: what a short script does, and the
limit metrogate is compared against.

    python bench/plain_loop.py PORT DEVICES POINTS PERIOD_S SECONDS BROKER_PORT
Prints: readings/s published, CPU seconds per 1,000 readings.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import sys
import threading
import time

import paho.mqtt.client as mqtt
from pymodbus.client import AsyncModbusTcpClient


async def device(
    unit: int,
    port: int,
    points: int,
    period: float,
    stop: float,
    pub: mqtt.Client,
    window: threading.Semaphore,
    counts: list[int],
) -> None:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, retries=0, reconnect_delay=0)
    await client.connect()
    regs = 2 * points
    unpack = struct.Struct(f">{points}f").unpack
    next_t = time.monotonic()
    while time.monotonic() < stop:
        words: list[int] = []
        a = 0
        while a < regs:
            n = min(124, regs - a)
            rr = await client.read_holding_registers(a, count=n, device_id=unit)
            words += rr.registers
            a += n
        ts = time.time_ns() // 1000
        values = unpack(struct.pack(f">{regs}H", *words))
        msg = json.dumps(
            [
                {"ts": ts, "device": f"dev{unit}", "point": f"p{i}", "value": v, "unit": "bar"}
                for i, v in enumerate(values)
            ]
        )
        await asyncio.to_thread(window.acquire)
        pub.publish(f"plain/dev{unit}", msg, qos=1)
        counts[0] += points
        next_t += period
        await asyncio.sleep(max(0.0, next_t - time.monotonic()))
    client.close()


async def main() -> None:
    port, devices, points = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    period, seconds, broker = float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.max_inflight_messages_set(50)
    window = threading.Semaphore(50)
    pub.on_publish = lambda *a: window.release()
    pub.connect("127.0.0.1", broker)
    pub.loop_start()
    counts = [0]
    t0, c0 = time.monotonic(), os.times()
    await asyncio.gather(
        *(
            device(u, port, points, period, t0 + seconds, pub, window, counts)
            for u in range(1, devices + 1)
        )
    )
    dt, c1 = time.monotonic() - t0, os.times()
    pub.loop_stop()
    cpu = c1.user - c0.user + c1.system - c0.system
    print(counts[0] / dt, cpu / counts[0] * 1000)


if __name__ == "__main__":
    asyncio.run(main())
