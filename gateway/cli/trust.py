"""``metrogate keygen``, ``metrogate verify``, ``metrogate audit`` and ``metrogate version``.

Each ``add_*_parser(subparsers)`` adds one sub-command whose ``func`` attribute is
a function ``(args) -> int`` returning the exit code; :func:`gateway.cli.app.main`
registers them.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from gateway.audit.eventlog import counter_path_for
from gateway.audit.software_id import compute_software_id
from gateway.audit.verify import looks_like_event_log, verify_event_log
from gateway.cli.args import count, number
from gateway.common.exitcodes import ExitCode
from gateway.wire.keys import (
    KeyStoreError,
    generate_keypair,
    load_key_registry,
    load_public_key,
    public_key_base64,
)
from gateway.wire.verify import SequenceTracker, read_capture, verify_capture

__all__ = [
    "add_audit_parser",
    "add_keygen_parser",
    "add_verify_parser",
    "add_version_parser",
    "cmd_audit_reinit",
    "cmd_keygen",
    "cmd_verify",
    "cmd_version",
]


def cmd_keygen(args: argparse.Namespace) -> int:
    """Create ``NAME.key`` (0600) and ``NAME.pub`` in ``args.dir`` (NAME: ``gateway``)."""
    try:
        pair = generate_keypair(Path(args.dir), overwrite=args.force, name=args.name)
    except KeyStoreError as exc:
        print(f"metrogate keygen: {exc}", file=sys.stderr)
        return ExitCode.INVALID
    operator = args.name != "gateway"
    keep = "keep it with the operator" if operator else "keep it on this gateway"
    give = "configure it in the gateway's operators:" if operator else "give it to the platform"
    print(f"private key: {pair.private_path} (mode 0600, {keep})")
    print(f"public key:  {pair.public_path} ({give})")
    if operator:
        print(f"public key (base64): {public_key_base64(load_public_key(pair.public_path))}")
    print(f"key id:      {pair.kid}")
    return ExitCode.OK


def _key_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", text) or text.startswith("."):
        raise argparse.ArgumentTypeError(f"not a key name: {text!r}")
    return text


def add_keygen_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "keygen", help="create a gateway's (or an operator's) Ed25519 signing key pair"
    )
    p.add_argument("--dir", default=".", help="directory for NAME.key/NAME.pub")
    p.add_argument(
        "--name",
        default="gateway",
        type=_key_name,
        help="file name: gateway (default) or an operator id for an operator's key",
    )
    p.add_argument("--force", action="store_true", help="replace an existing key pair")
    p.set_defaults(func=cmd_keygen)
    return p


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify captured batches or an event log; print each problem; 1 if any."""
    try:
        keys, gateway_of = load_key_registry([Path(k) for k in args.key])
    except KeyStoreError as exc:
        print(f"metrogate verify: {exc}", file=sys.stderr)
        return ExitCode.INVALID
    worst = ExitCode.OK
    for name in args.files:
        path = Path(name)
        try:
            data = path.read_bytes()
        except OSError as exc:
            print(f"{path}: cannot read ({exc.strerror})", file=sys.stderr)
            return ExitCode.INVALID
        counter = counter_path_for(path) if args.counter is None else Path(args.counter)
        if looks_like_event_log(data) or counter.exists():
            rep = verify_event_log(path, keys, counter_path=counter)
            for p in rep.problems:
                print(f"{path}: {p}")
            if rep.ok:
                note = "" if rep.counter_checked else " (no counter file: end not checked)"
                print(f"{path}: event log OK, {rep.entries} entries, last {rep.last_n}{note}")
            else:
                worst = ExitCode.FAILED
        else:
            captured = read_capture(data)
            if not captured or not data.strip():
                # an empty file proves nothing: not an emptied log (no counter) nor a capture
                print(f"{path}: neither an event log nor a capture of signed payloads")
                worst = ExitCode.FAILED
                continue
            tracker = SequenceTracker(duplicate_window_seq=args.window)
            cap = verify_capture(captured, keys, tracker=tracker, gateway_of=gateway_of)
            for line in cap.problems:
                print(f"{path}: {line}")
            for line in cap.notes:
                print(f"{path}: note: {line}")
            if cap.ok:
                print(f"{path}: {len(cap.batches)} batches OK")
            else:
                worst = ExitCode.FAILED
    return worst


def add_verify_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "verify",
        help="check captured batches or an event log against public keys",
        description=(
            "FILE is an event log (events.log) or a capture of signed payloads: one raw "
            "payload, several as mosquitto_sub prints them, or JSON lines with "
            "payload_b64. Exit 0 clean, 1 corrupt, 2 usage error."
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument(
        "--key",
        action="append",
        required=True,
        metavar="PUBKEY_OR_DIR",
        help="public key file or keys directory (repeatable); a key in DIR/<gateway>.pub "
        "or DIR/<gateway>/gateway.pub, or a file <gateway>.pub, verifies only batches "
        "naming that gateway",
    )
    p.add_argument("--counter", help="event-log counter file (default: FILE.counter)")
    p.add_argument(
        "--window",
        type=count,
        default=1000,
        help="a repeat within this many sequence numbers of the newest is a duplicate, "
        "further back a replay (default 1000)",
    )
    p.set_defaults(func=cmd_verify)
    return p


_HEX = frozenset("0123456789abcdef")


def cmd_audit_reinit(args: argparse.Namespace) -> int:
    """Retire the event log of config ``args.config`` and start a new one (docs/cli.md)."""
    from gateway.audit.eventlog import EventLogError
    from gateway.audit.reinit import PreviousHead, reinitialise
    from gateway.config.loader import ConfigError, load_config
    from gateway.wire.keys import load_signer

    if (args.previous_n is None) != (args.previous_hash is None):
        print(
            "metrogate audit reinit: give --previous-n and --previous-hash together",
            file=sys.stderr,
        )
        return ExitCode.INVALID
    previous = None
    if args.previous_n is not None:
        digest = str(args.previous_hash).lower()
        if args.previous_n < 0 or len(digest) != 64 or not set(digest) <= _HEX:
            print(
                "metrogate audit reinit: --previous-hash is a SHA-256 hex digest and "
                "--previous-n an entry number",
                file=sys.stderr,
            )
            return ExitCode.INVALID
        previous = PreviousHead(args.previous_n, digest, "operator")
    try:
        loaded = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{args.config}: {len(exc.problems)} problem(s); nothing changed", file=sys.stderr)
        return ExitCode.INVALID
    cfg = loaded.config
    path = cfg.gateway.state_dir / "events.log"
    try:
        signer = load_signer(cfg.signing_key)
        rep = reinitialise(
            path,
            signer,
            software_id=compute_software_id().short,
            reason=args.reason,
            previous=previous,
            min_seq=args.min_seq,
        )
    except (KeyStoreError, EventLogError, OSError, ValueError) as exc:
        print(f"metrogate audit reinit: {exc}", file=sys.stderr)
        return ExitCode.FAILED
    for retired in rep.retired:
        print(f"retired:  {retired}")
    for note in rep.notes:
        print(f"note:     {note}")
    prev = rep.previous
    shown = "none known" if prev is None else f"entry {prev.n} {prev.hash} ({prev.source})"
    print(f"previous: {shown}")
    print(f"new log:  {path}, first entry {rep.entry['n']} (log_reinitialised)")
    return ExitCode.OK


def add_audit_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "audit", help="operator actions on the event log (audit trail)"
    )
    sub = p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    r = sub.add_parser(
        "reinit",
        help="retire the event log and start a new one that names the previous head",
        description=(
            "Deliberately start a new event log: the old log and counter are renamed "
            "(events.log.retired-<UTC>), never deleted, and the new log's first entry "
            "(log_reinitialised) names the previous head and the reason. The gateway "
            "must be stopped. Exit 0 done, 1 refused or failed, 2 usage or config error."
        ),
    )
    r.add_argument("-c", "--config", required=True, type=Path, help="the gateway's config file")
    r.add_argument("--reason", required=True, help="why (written into the first entry)")
    r.add_argument("--previous-n", type=number, help="the previous log's last entry number")
    r.add_argument("--previous-hash", help="the SHA-256 line hash of that entry")
    r.add_argument(
        "--min-seq",
        type=number,
        help="batch sequence numbers continue above this (e.g. the platform's highest)",
    )
    r.set_defaults(func=cmd_audit_reinit)
    return p


def cmd_version(args: argparse.Namespace) -> int:
    """Print the software identification of the legally relevant modules."""
    sid = compute_software_id()
    if args.json:
        out: dict[str, Any] = sid.as_dict() | {"files": list(sid.files)}
        print(json.dumps(out, indent=2))
        return ExitCode.OK
    print(sid)
    if args.files:
        for f in sid.files:
            print(f"  {f}")
    return ExitCode.OK


def add_version_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "version", help="software identification (name, version, SHA-256 of the legal core)"
    )
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.add_argument("--files", action="store_true", help="list the files covered")
    p.set_defaults(func=cmd_version)
    return p
