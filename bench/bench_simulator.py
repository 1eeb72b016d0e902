"""Benchmark: how many 125-register reads per second the Modbus TCP simulator answers.

The simulator runs in its own process (so it has a core to itself, as it would
when it is the peer of a gateway under test); the clients run in this process,
each on its own connection:

* ``pymodbus`` clients: ``AsyncModbusTcpClient.read_holding_registers(0, count=125)``
  in a loop, one request in flight per connection — what a gateway's driver does.
  On a 2-core box the clients' own CPU is usually the limit here.
* ``raw`` clients: hand-made MBAP frames, ``--depth`` requests pipelined per
  connection — cheap enough on the client side to find the simulator's ceiling.

For every run it prints requests/s seen by the clients, registers/s, and the
simulator's CPU time per request (from its process times), whose inverse is what
one core of simulator can serve. The image holds 63 float32 sine points (126
registers), so every read crosses generated values and refreshes happen as in use.

    python bench/bench_simulator.py                  # both kinds, N = 1, 4, 10, 5 s each
    python bench/bench_simulator.py --mode raw --clients 1,2 --seconds 3 --depth 16
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import struct
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

# run from a checkout without installing: make the repository importable
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymodbus.client import AsyncModbusTcpClient

from drivers.modbus_codec import DataType, PointSpec, Table
from simulators.modbus_device import ModbusTcpSimulator, SimPoint
from simulators.values import Sine

REGISTERS = 125
UNIT = 1
IO_TIMEOUT_S = 5.0


def _points() -> list[SimPoint]:
    return [
        SimPoint(
            PointSpec(f"p{i}", Table.HOLDING, 2 * i, DataType.FLOAT32),
            Sine(amplitude=2.0, period=60.0, mean=20.0 + i, phase=3.0 * i),
        )
        for i in range(63)
    ]


# -- the simulator process ------------------------------------------------------------


def _serve(control: Connection) -> None:
    asyncio.run(_serve_async(control))


async def _serve_async(control: Connection) -> None:
    async with ModbusTcpSimulator({UNIT: _points()}, name="bench") as sim:
        control.send(sim.port)
        while True:
            command = await asyncio.to_thread(control.recv)
            if command == "stop":
                return
            times = os.times()
            control.send((sim.requests, times.user + times.system))


@dataclass
class Result:
    mode: str
    clients: int
    requests: int
    seconds: float
    server_requests: int
    server_cpu_s: float

    def row(self) -> str:
        rate = self.requests / self.seconds
        cpu_us = 1e6 * self.server_cpu_s / self.server_requests if self.server_requests else 0.0
        capacity = self.server_requests / self.server_cpu_s if self.server_cpu_s else 0.0
        return (
            f"| {self.mode:8} | {self.clients:3} | {rate:10,.0f} | {rate * REGISTERS:12,.0f} "
            f"| {cpu_us:14.1f} | {capacity:14,.0f} |"
        )


HEADER = (
    "| clients  |   N | requests/s | registers/s  | sim µs CPU/req | req/s/sim core |\n"
    "|----------|-----|------------|--------------|----------------|----------------|"
)


# -- clients -------------------------------------------------------------------------


async def _pymodbus_client(port: int, deadline: float) -> int:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=IO_TIMEOUT_S, retries=0)
    try:
        async with asyncio.timeout(IO_TIMEOUT_S):
            if not await client.connect():
                raise ConnectionError(f"cannot connect to 127.0.0.1:{port}")
        done = 0
        while time.monotonic() < deadline:
            response = await client.read_holding_registers(0, count=REGISTERS, device_id=UNIT)
            if response.isError() or len(response.registers) != REGISTERS:
                raise RuntimeError(f"bad response {response}")
            done += 1
        return done
    finally:
        client.close()


async def _raw_client(port: int, deadline: float, depth: int) -> int:
    async with asyncio.timeout(IO_TIMEOUT_S):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    reply_size = 9 + 2 * REGISTERS
    batch = b"".join(
        struct.pack(">HHHBBHH", tid, 0, 6, UNIT, 3, 0, REGISTERS) for tid in range(depth)
    )
    done = 0
    try:
        while time.monotonic() < deadline:
            writer.write(batch)
            async with asyncio.timeout(IO_TIMEOUT_S):
                data = await reader.readexactly(depth * reply_size)
            if data[7] != 3:
                raise RuntimeError(f"bad response {data[:9].hex()}")
            done += depth
        return done
    finally:
        writer.close()


async def _run(mode: str, clients: int, port: int, seconds: float, depth: int) -> int:
    deadline = time.monotonic() + seconds
    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(
                _pymodbus_client(port, deadline)
                if mode == "pymodbus"
                else _raw_client(port, deadline, depth),
                name=f"bench-client-{i}",
            )
            for i in range(clients)
        ]
    return sum(task.result() for task in tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="1,4,10", help="comma-separated client counts")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each run")
    parser.add_argument("--mode", choices=("pymodbus", "raw", "both"), default="both")
    parser.add_argument("--depth", type=int, default=8, help="raw mode: pipelined requests")
    args = parser.parse_args()
    modes = ("pymodbus", "raw") if args.mode == "both" else (args.mode,)
    counts = [int(n) for n in args.clients.split(",")]

    control, child_end = multiprocessing.Pipe()
    server = multiprocessing.Process(target=_serve, args=(child_end,), name="bench-simulator")
    server.start()
    try:
        if not control.poll(IO_TIMEOUT_S):
            raise RuntimeError("the simulator did not start")
        port = control.recv()
        print(f"simulator on 127.0.0.1:{port}, {REGISTERS} holding registers per request")
        print(f"{os.cpu_count()} CPUs, {args.seconds:g} s per run, raw depth {args.depth}\n")
        print(HEADER)
        for mode in modes:
            for clients in counts:
                control.send("stats")
                requests_before, cpu_before = control.recv()
                started = time.monotonic()
                done = asyncio.run(_run(mode, clients, port, args.seconds, args.depth))
                elapsed = time.monotonic() - started
                control.send("stats")
                requests_after, cpu_after = control.recv()
                result = Result(
                    mode,
                    clients,
                    done,
                    elapsed,
                    requests_after - requests_before,
                    cpu_after - cpu_before,
                )
                print(result.row(), flush=True)
    finally:
        control.send("stop")
        server.join(IO_TIMEOUT_S)
        if server.is_alive():
            server.terminate()
            server.join(IO_TIMEOUT_S)


if __name__ == "__main__":
    main()
