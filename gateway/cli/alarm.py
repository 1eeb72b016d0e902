"""``metrogate alarm``: list, acknowledge and shelve a gateway's alarms over MQTT.

The command talks to the gateway the way a supervision platform would: it reads the
retained, signed set of active alarms on ``{base}/alarms`` and publishes commands on
``{base}/cmd/ack`` and ``{base}/cmd/shelve`` (docs/wire.md), using the broker
settings of the gateway's own config file. Commands are signed with the operator's
private key (``metrogate keygen --name ID``); the gateway carries out only those
signed by an operator it is configured with (``operators:``).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiomqtt

from gateway.cli.args import seconds
from gateway.common.exitcodes import ExitCode
from gateway.config.loader import ConfigError, load_config
from gateway.delivery.publisher import mqtt_client
from gateway.wire.commands import CommandError, build_command
from gateway.wire.encoding import topic_base
from gateway.wire.keys import KeyStoreError, load_signer
from gateway.wire.signing import split_payload


async def _active(cfg: Any, base: str, wait_s: float) -> list[dict[str, Any]] | None:
    """The retained active-alarm set, or None when the gateway never published one."""
    async with mqtt_client(cfg.mqtt, f"metrogate-alarm-{os.getpid()}") as client:
        await client.subscribe(f"{base}/alarms", qos=1)
        try:
            async with asyncio.timeout(wait_s):
                async for message in client.messages:
                    payload = message.payload if isinstance(message.payload, bytes) else b""
                    body, _sig = split_payload(payload)
                    alarms: list[dict[str, Any]] = json.loads(body)["alarms"]
                    return alarms
        except TimeoutError:
            return None
    return None


async def _command(cfg: Any, base: str, name: str, payload: bytes) -> None:
    async with mqtt_client(cfg.mqtt, f"metrogate-alarm-{os.getpid()}") as client:
        await client.publish(f"{base}/cmd/{name}", payload, qos=1)


def cmd_alarm(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config).config
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return ExitCode.INVALID
    base = topic_base(cfg.mqtt.prefix, cfg.gateway.site, cfg.gateway.id)
    try:
        if args.action == "list":
            alarms = asyncio.run(_active(cfg, base, args.timeout))
            if alarms is None:
                print(f"no alarm set retained on {base}/alarms (gateway never connected?)")
                return ExitCode.FAILED
            if not alarms:
                print("no active alarms")
            for a in alarms:
                flags = " shelved" if a.get("shelved") else ""
                message = a.get("message") or ""
                where = f"value={a.get('value')} limit={a.get('limit')}{flags}"
                print(f"{a['alarm']:<40} {a['state']:<24} {a['severity']:<8} {where}  {message}")
            return ExitCode.OK
        if not args.alarm:
            print("name the alarm: device/point/rule (see `metrogate alarm list`)", file=sys.stderr)
            return ExitCode.INVALID
        if args.key is None:
            print("sign the command: --key OPERATOR.key (metrogate keygen --name ID)",
                  file=sys.stderr)  # fmt: skip
            return ExitCode.INVALID
        try:
            signer = load_signer(args.key)
            payload = build_command(
                signer,
                action=args.action,
                gateway=cfg.gateway.id,
                site=cfg.gateway.site,
                alarm=args.alarm,
                operator=args.operator,
                ts_us=time.time_ns() // 1000,
                duration_s=args.duration if args.action == "shelve" else None,
            )
        except (KeyStoreError, CommandError) as exc:
            print(f"metrogate alarm: {exc}", file=sys.stderr)
            return ExitCode.INVALID
        asyncio.run(_command(cfg, base, args.action, payload))
        print(
            f"{args.action} for {args.alarm} signed by {args.operator} (key {signer.kid}), "
            f"sent to {base}/cmd/{args.action}"
        )
        return ExitCode.OK
    except aiomqtt.MqttError as exc:
        print(f"broker {cfg.mqtt.url}: {exc}", file=sys.stderr)
        return ExitCode.FAILED


def add_alarm_parser(sub: Any) -> None:
    p = sub.add_parser(
        "alarm",
        help="list, acknowledge or shelve a gateway's alarms (over MQTT)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("action", choices=["list", "ack", "shelve"])
    p.add_argument("alarm", nargs="?", help="alarm id: device/point/rule")
    p.add_argument("-c", "--config", required=True, type=Path, help="the gateway's config file")
    p.add_argument(
        "--operator",
        "--user",
        default=getpass.getuser(),
        help="operator id, as configured at the gateway (recorded in the audit trail)",
    )
    p.add_argument("--key", type=Path, help="ack/shelve: the operator's private key file")
    p.add_argument("--duration", type=seconds, default=3600.0, help="shelve for this many seconds")
    p.add_argument("--timeout", type=seconds, default=5.0, help="list: wait this long for the set")
    p.set_defaults(func=cmd_alarm)
