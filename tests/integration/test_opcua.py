"""The OPC UA driver against a real OPC UA server process, over real sockets.

The simulated server (simulators/opcua_server.py) runs as a separate process started
by a fixture, serves on 127.0.0.1, and takes fault commands on its standard input.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.base import DeviceRejected, DeviceUnreachable, DriverError, Quality, Reason, Sample
from drivers.opcua import (
    AuthenticationFailed,
    Deadband,
    OpcUaDriver,
    OpcUaPoint,
    PointProblem,
    Security,
    SecurityRejected,
    SubscriptionRefused,
    UntrustedServer,
    browse,
    discover,
)
from drivers.opcua_security import create_application_certificate

REPO = Path(__file__).resolve().parents[2]

POINTS = [
    {"id": "temp", "path": "Line1/Temp", "value": 21.5, "unit": "°C", "range": [0, 150]},
    {"id": "count", "path": "Line1/Count", "type": "Int32", "value": 7},
    {"id": "running", "path": "Line1/Running", "type": "Boolean", "value": True},
    {"id": "name", "path": "Line1/Name", "type": "String", "value": "press 4"},
    {"id": "pressure", "path": "Line2/Pressure", "value": 3.2, "unit": "bar"},
]
TEMP = OpcUaPoint("temp", node="ns=2;s=Line1.Temp")
COUNT = OpcUaPoint("count", path="2:Line1/2:Count")
RUNNING = OpcUaPoint("running", node="ns=2;s=Line1.Running", kind="bool")
NAME = OpcUaPoint("name", node="ns=2;s=Line1.Name", kind="string")
PRESSURE = OpcUaPoint("pressure", node="ns=2;s=Line2.Pressure", scale=100.0, unit="kPa")


@pytest.fixture(autouse=True)
def _quiet_asyncua() -> Iterator[None]:
    # asyncua logs every lost connection with a traceback; the tests provoke many
    logger = logging.getLogger("asyncua")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


class SimProcess:
    """The simulated OPC UA server as a child process, driven over stdin/stdout."""

    def __init__(self, tmp: Path, **spec: Any) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        spec.setdefault("points", POINTS)
        spec_path = tmp / "spec.json"
        spec_path.write_text(json.dumps(spec))
        self.log = tmp / "sim.log"
        self._stderr = self.log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "simulators.opcua_server", str(spec_path)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        ready = self._line(30.0)
        self.url: str = ready["url"]
        self.certificate: Path | None = Path(ready["certificate"]) if ready["certificate"] else None

    def _line(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], deadline - time.monotonic())
            if ready:
                line = self.proc.stdout.readline()
                if not line:
                    break
                reply: dict[str, Any] = json.loads(line)
                return reply
        raise AssertionError(f"simulator said nothing in {timeout}s: {self.log.read_text()}")

    def command_sync(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        reply = self._line(10.0)
        assert reply.get("ok"), reply
        return reply

    async def command(self, **cmd: Any) -> dict[str, Any]:
        return await asyncio.to_thread(self.command_sync, **cmd)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._stderr.close()


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, Path]:
    """A client certificate and key, and a folder for the server's certificate."""
    out = {"cert": tmp_path / "client" / "cert.pem", "key": tmp_path / "client" / "key.pem"}
    create_application_certificate(out["cert"], out["key"], "urn:metrogate:test:gateway")
    out["server_dir"] = tmp_path / "server-pki"
    out["server_dir"].mkdir()
    out["server_cert"] = out["server_dir"] / "server-cert.pem"  # written by the simulator
    return out


@pytest.fixture
def plain_server(tmp_path: Path) -> Iterator[SimProcess]:
    """Security off, anonymous access."""
    sim = SimProcess(tmp_path / "plain")
    yield sim
    sim.close()


@pytest.fixture
def secure_server(tmp_path: Path, certs: dict[str, Path]) -> Iterator[SimProcess]:
    """Security on (no None endpoint), user name and password."""
    sim = SimProcess(
        tmp_path / "secure",
        cert_dir=str(certs["server_dir"]),
        endpoints=["SignAndEncrypt/Basic256Sha256", "Sign/Aes128_Sha256_RsaOaep"],
        users={"operator": "s3cret"},
    )
    yield sim
    sim.close()


def _by_point(samples: list[Sample]) -> dict[str, Sample]:
    return {s.point: s for s in samples}


async def _changes(drv: OpcUaDriver, want: int, within: float = 10.0) -> list[Sample]:
    """Read until at least ``want`` samples came (bounded in time and reads)."""
    got: list[Sample] = []
    deadline = time.monotonic() + within
    for _ in range(1000):
        got += await drv.read()
        if len(got) >= want or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    return got


# ---------------------------------------------------------------------------- polling


async def test_poll_reads_every_point_in_one_read(plain_server: SimProcess) -> None:
    points = [TEMP, COUNT, RUNNING, NAME, PRESSURE]
    async with OpcUaDriver("plc1", plain_server.url, points, timeout=2.0) as drv:
        first = _by_point(await drv.read())
        before = (await plain_server.command(cmd="stats"))["reads"]
        second = _by_point(await drv.read())
        after = (await plain_server.command(cmd="stats"))["reads"]
        engineering = drv.engineering()
        identity = drv.identity()
    assert after - before == 1  # one Read service call for all five points
    assert first["temp"].value == 21.5 and first["temp"].quality is Quality.GOOD
    assert first["count"].value == 7 and first["count"].raw == 7
    assert first["running"].value is True and first["name"].value == "press 4"
    assert first["pressure"].value == pytest.approx(320.0) and first["pressure"].raw == 3.2
    # the source timestamp is the reading's time: an unchanged value keeps its stamp
    assert second["temp"].ts_us == first["temp"].ts_us
    assert first["temp"].server_ts_us is not None
    assert engineering["temp"].unit == "°C" and (
        engineering["temp"].low,
        engineering["temp"].high,
    ) == (0, 150)
    assert engineering["pressure"].unit == "kPa"  # configured wins over the server's bar
    assert identity["product"] == "metrogate OPC UA simulator"
    assert drv.describe_plan()[0].startswith("Read of 5 values (one service call)")


async def test_status_codes_become_quality_and_reason(plain_server: SimProcess) -> None:
    async with OpcUaDriver("plc1", plain_server.url, [TEMP, COUNT, PRESSURE], timeout=2.0) as drv:
        await plain_server.command(cmd="status", point="temp", status="BadSensorFailure")
        await plain_server.command(cmd="status", point="count", status="UncertainLastUsableValue")
        await plain_server.command(cmd="status", point="pressure", status="BadOutOfService")
        s = _by_point(await drv.read())
    assert (s["temp"].quality, s["temp"].reason, s["temp"].value) == (
        Quality.BAD,
        Reason.SENSOR_FAILURE,
        None,
    )
    assert s["count"].quality is Quality.UNCERTAIN and s["count"].reason is Reason.LAST_USABLE_VALUE
    assert s["count"].value == 7  # an uncertain value is still a value
    assert s["pressure"].reason is Reason.OUT_OF_SERVICE


async def test_value_faults_stuck_drift_step(plain_server: SimProcess) -> None:
    async with OpcUaDriver("plc1", plain_server.url, [TEMP], timeout=2.0) as drv:
        await plain_server.command(cmd="fault", point="temp", fault={"kind": "stuck"})
        stuck = (await drv.read())[0]
        await plain_server.command(cmd="set", point="temp", value=50.0)
        still = (await drv.read())[0]
        await plain_server.command(cmd="fault", point="temp", fault={"kind": "step", "offset": 5})
        stepped = (await drv.read())[0]
        await plain_server.command(cmd="fault", point="temp", fault={"kind": "drift", "rate": 10})
        first = (await drv.read())[0]
        await asyncio.sleep(0.3)
        later = (await drv.read())[0]
    assert still.value == stuck.value == 21.5 and still.ts_us == stuck.ts_us  # a stuck sensor
    assert stepped.value == 55.0
    assert isinstance(first.value, float) and isinstance(later.value, float)
    assert later.value > first.value and later.ts_us > first.ts_us


async def test_unknown_node_and_wrong_type_cost_only_their_points(plain_server: SimProcess) -> None:
    points = [
        TEMP,
        OpcUaPoint("ghost", node="ns=2;s=Line1.Nothing"),
        OpcUaPoint("lost", path="2:Line9/2:Temp"),
        OpcUaPoint("label", node="ns=2;s=Line1.Name"),  # a String read as a number
        OpcUaPoint("folder", node="ns=2;s=Line1"),  # an object, not a variable
    ]
    async with OpcUaDriver("plc1", plain_server.url, points, timeout=2.0) as drv:
        s = _by_point(await drv.read())
        problems = {p.point: p for p in drv.problems()}
    assert s["temp"].quality is Quality.GOOD
    for pid in ("ghost", "lost", "label", "folder"):
        assert s[pid].quality is Quality.BAD and s[pid].reason is Reason.CONFIG_ERROR
        assert s[pid].value is None  # never a silent zero
        assert isinstance(problems[pid], PointProblem)
        assert problems[pid].device == "plc1" and problems[pid].endpoint == plain_server.url
    assert "BadNodeIdUnknown" in problems["ghost"].message
    assert "String cannot be a number" in problems["label"].message
    assert "not a variable" in problems["folder"].message


async def test_no_point_resolvable_is_a_located_error(plain_server: SimProcess) -> None:
    points = [OpcUaPoint("ghost", node="ns=2;s=Nope")]
    async with OpcUaDriver("plc1", plain_server.url, points, timeout=2.0) as drv:
        with pytest.raises(DeviceRejected) as caught:
            await drv.read()
    assert caught.value.reason is Reason.CONFIG_ERROR
    assert caught.value.device == "plc1" and "no point can be read" in caught.value.message


async def test_a_dead_server_is_a_missed_reading_never_an_old_value(tmp_path: Path) -> None:
    sim = SimProcess(tmp_path / "dying")
    try:
        async with OpcUaDriver("plc1", sim.url, [TEMP], timeout=1.0) as drv:
            assert (await drv.read())[0].value == 21.5
            sim.kill()
            for _ in range(3):  # each poll fails on its own, none repeats the last value
                with pytest.raises(DriverError) as caught:
                    await drv.read()
                assert caught.value.device == "plc1" and caught.value.endpoint == sim.url
                assert isinstance(caught.value, DeviceUnreachable)
    finally:
        sim.close()


# ---------------------------------------------------------------------------- subscriptions


async def test_subscription_reports_changes_once_with_their_own_time(
    plain_server: SimProcess,
) -> None:
    points = [
        OpcUaPoint("temp", node="ns=2;s=Line1.Temp", sampling_interval=0.05, queue_size=10),
        COUNT,
    ]
    async with OpcUaDriver(
        "plc1", plain_server.url, points, timeout=2.0, mode="subscribe", publishing_interval=0.1
    ) as drv:
        initial = _by_point(await _changes(drv, 2))
        assert initial["temp"].value == 21.5 and initial["count"].value == 7
        await asyncio.sleep(0.3)
        assert await drv.read() == []  # nothing changed: nothing reported, nothing re-stamped
        for v in (22.0, 23.0, 24.0):
            await plain_server.command(cmd="set", point="temp", value=v)
        changes = await _changes(drv, 3)
        await plain_server.command(cmd="status", point="count", status="BadDeviceFailure")
        bad = await _changes(drv, 1)
    assert [s.value for s in changes if s.point == "temp"] == [22.0, 23.0, 24.0]
    stamps = [s.ts_us for s in changes]
    assert stamps == sorted(stamps) and len(set(stamps)) == 3
    assert bad[0].point == "count" and bad[0].quality is Quality.BAD
    assert bad[0].reason is Reason.DEVICE_FAILURE


async def test_absolute_deadband(plain_server: SimProcess) -> None:
    point = OpcUaPoint(
        "temp", node="ns=2;s=Line1.Temp", sampling_interval=0.05, deadband=Deadband("absolute", 1.0)
    )
    async with OpcUaDriver(
        "plc1", plain_server.url, [point], timeout=2.0, mode="subscribe", publishing_interval=0.1
    ) as drv:
        assert [s.value for s in await _changes(drv, 1)] == [21.5]
        await plain_server.command(cmd="set", point="temp", value=21.9)  # inside the deadband
        await asyncio.sleep(0.4)
        await plain_server.command(cmd="set", point="temp", value=30.0)
        values = [s.value for s in await _changes(drv, 1)]
    assert values == [30.0]


async def test_session_loss_reports_the_gap_and_recreates_the_subscription(
    plain_server: SimProcess,
) -> None:
    async with OpcUaDriver(
        "plc1", plain_server.url, [TEMP], timeout=1.0, mode="subscribe", publishing_interval=0.1
    ) as drv:
        assert (await _changes(drv, 1))[0].value == 21.5
        dropped = await plain_server.command(cmd="drop_sessions")
        assert dropped["dropped"] >= 1
        gap: list[Sample] = []
        for _ in range(100):  # until the driver noticed (bounded)
            gap = await drv.read()
            if gap:
                break
            await asyncio.sleep(0.05)
        await plain_server.command(cmd="set", point="temp", value=99.0)
        after = await _changes(drv, 2)
    assert gap[0].quality is Quality.BAD and gap[0].reason is Reason.NO_COMMUNICATION
    assert 99.0 in [s.value for s in after]  # the new subscription delivers again


async def test_refused_subscription(tmp_path: Path) -> None:
    sim = SimProcess(tmp_path / "refusing", refuse_subscriptions=True)
    try:
        async with OpcUaDriver("plc1", sim.url, [TEMP], timeout=2.0, mode="subscribe") as drv:
            with pytest.raises(SubscriptionRefused) as caught:
                await drv.read()
    finally:
        sim.close()
    assert "BadTooManySubscriptions" in caught.value.message
    assert caught.value.device == "plc1" and caught.value.endpoint == sim.url


async def test_refused_monitored_item_costs_only_its_point(plain_server: SimProcess) -> None:
    # the simulator's server does not implement percent deadbands on items without EURange
    points = [TEMP, OpcUaPoint("ghost", node="ns=2;s=Nope")]
    async with OpcUaDriver(
        "plc1", plain_server.url, points, timeout=2.0, mode="subscribe", publishing_interval=0.1
    ) as drv:
        s = _by_point(await _changes(drv, 2))
    assert s["temp"].value == 21.5
    assert s["ghost"].quality is Quality.BAD and s["ghost"].reason is Reason.CONFIG_ERROR


# ---------------------------------------------------------------------------- security


@pytest.mark.parametrize(
    ("mode", "policy"), [("SignAndEncrypt", "Basic256Sha256"), ("Sign", "Aes128_Sha256_RsaOaep")]
)
async def test_secured_session_with_user_and_password(
    secure_server: SimProcess, certs: dict[str, Path], mode: str, policy: str
) -> None:
    assert secure_server.certificate is not None
    security = Security(
        mode,  # type: ignore[arg-type]
        policy,  # type: ignore[arg-type]
        certs["cert"],
        certs["key"],
        trusted_servers=(secure_server.certificate,),
    )
    async with OpcUaDriver(
        "plc1",
        secure_server.url,
        [TEMP, COUNT],
        timeout=3.0,
        security=security,
        username="operator",
        password="s3cret",
    ) as drv:
        s = _by_point(await drv.read())
        identity = drv.identity()
    assert s["temp"].value == 21.5 and s["count"].value == 7
    assert len(identity["server_certificate"].split(":")) == 32


async def test_unknown_server_is_refused_unless_told(
    secure_server: SimProcess, certs: dict[str, Path], tmp_path: Path
) -> None:
    other = tmp_path / "someone-else"
    create_application_certificate(other / "cert.pem", other / "key.pem", "urn:other", server=True)
    strict = Security(
        "SignAndEncrypt", "Basic256Sha256", certs["cert"], certs["key"], (other / "cert.pem",)
    )
    drv = OpcUaDriver(
        "plc1", secure_server.url, [TEMP], timeout=3.0, security=strict, username="operator",
        password="s3cret",
    )  # fmt: skip
    async with drv:
        with pytest.raises(UntrustedServer) as caught:
            await drv.read()
    assert caught.value.reason is Reason.CONFIG_ERROR and "not in the trust list" in str(
        caught.value
    )
    assert caught.value.device == "plc1" and caught.value.endpoint == secure_server.url
    lenient = Security(
        "SignAndEncrypt", "Basic256Sha256", certs["cert"], certs["key"], trust_unknown_server=True
    )
    async with OpcUaDriver(
        "plc1", secure_server.url, [TEMP], timeout=3.0, security=lenient, username="operator",
        password="s3cret",
    ) as drv:  # fmt: skip
        assert (await drv.read())[0].value == 21.5


async def test_wrong_password(secure_server: SimProcess, certs: dict[str, Path]) -> None:
    security = Security(
        "SignAndEncrypt",
        "Basic256Sha256",
        certs["cert"],
        certs["key"],
        (certs["server_cert"],),
    )
    async with OpcUaDriver(
        "plc1", secure_server.url, [TEMP], timeout=3.0, security=security, username="operator",
        password="wrong",
    ) as drv:  # fmt: skip
        with pytest.raises(AuthenticationFailed) as caught:
            await drv.read()
    assert caught.value.reason is Reason.CONFIG_ERROR
    assert "BadUserAccessDenied" in caught.value.message and "wrong" not in str(caught.value)


async def test_missing_endpoint_and_client_certificate_refused(
    tmp_path: Path, certs: dict[str, Path]
) -> None:
    stranger = tmp_path / "trusted-client"
    create_application_certificate(stranger / "cert.pem", stranger / "key.pem", "urn:friend")
    sim = SimProcess(
        tmp_path / "picky",
        cert_dir=str(certs["server_dir"]),
        endpoints=["SignAndEncrypt/Basic256Sha256"],
        trusted_clients=[str(stranger / "cert.pem")],
    )
    try:
        sign_only = Security(
            "Sign",
            "Basic256Sha256",
            certs["cert"],
            certs["key"],
            (certs["server_cert"],),
        )
        async with OpcUaDriver("plc1", sim.url, [TEMP], timeout=3.0, security=sign_only) as drv:
            with pytest.raises(SecurityRejected, match="no endpoint with Sign/Basic256Sha256"):
                await drv.read()
        ours = Security(
            "SignAndEncrypt",
            "Basic256Sha256",
            certs["cert"],
            certs["key"],
            (certs["server_cert"],),
        )
        async with OpcUaDriver("plc1", sim.url, [TEMP], timeout=3.0, security=ours) as drv:
            with pytest.raises(DriverError) as caught:  # the server does not trust us
                await drv.read()
    finally:
        sim.close()
    assert isinstance(caught.value, SecurityRejected), caught.value


# ---------------------------------------------------------------------------- browse, discover


async def test_browse_lists_nodes_for_a_config(plain_server: SimProcess) -> None:
    top = await browse(plain_server.url)
    line1 = await browse(plain_server.url, "2:Line1")
    assert {"2:Line1", "2:Line2"} <= {e.path for e in top}
    by_path = {e.path: e for e in line1}
    temp = by_path["2:Line1/2:Temp"]
    assert temp.node == "ns=2;s=Line1.Temp" and temp.node_class == "variable"
    assert temp.data_type == "Double" and by_path["2:Line1/2:Name"].data_type == "String"
    with pytest.raises(PointProblem):
        await browse(plain_server.url, "2:Nowhere")


async def test_discover_endpoints_and_policies(secure_server: SimProcess) -> None:
    found = await discover(secure_server.url)
    offered = {(e.mode, e.policy) for e in found}
    assert offered == {("SignAndEncrypt", "Basic256Sha256"), ("Sign", "Aes128_Sha256_RsaOaep")}
    assert all(e.user_tokens == ("username",) and e.certificate for e in found)


async def test_discover_nothing_listening() -> None:
    with pytest.raises(DeviceUnreachable):
        await discover("opc.tcp://127.0.0.1:9/nothing", request_timeout=1.0)
