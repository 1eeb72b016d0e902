"""``metrogate keygen``, ``metrogate verify`` and ``metrogate version``.

Each ``add_*_parser(subparsers)`` adds one sub-command whose ``func`` attribute is
a function ``(args) -> int`` returning the exit code. ``python -m gateway.cli.trust``
runs them on their own.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.audit.software_id import compute_software_id
from gateway.audit.verify import looks_like_event_log, verify_event_log
from gateway.wire.keys import KeyStoreError, generate_keypair, load_key_registry
from gateway.wire.verify import SequenceTracker, read_capture, verify_capture

__all__ = [
    "add_keygen_parser",
    "add_verify_parser",
    "add_version_parser",
    "cmd_keygen",
    "cmd_verify",
    "cmd_version",
    "main",
]

EXIT_OK = 0
EXIT_CORRUPT = 1
EXIT_USAGE = 2


def cmd_keygen(args: argparse.Namespace) -> int:
    """Create ``gateway.key`` (0600) and ``gateway.pub`` in ``args.dir``."""
    try:
        pair = generate_keypair(Path(args.dir), overwrite=args.force)
    except KeyStoreError as exc:
        print(f"metrogate keygen: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"private key: {pair.private_path} (mode 0600, keep it on this gateway)")
    print(f"public key:  {pair.public_path} (give it to the supervision platform)")
    print(f"key id:      {pair.kid}")
    return EXIT_OK


def add_keygen_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "keygen", help="create this gateway's Ed25519 signing key pair"
    )
    p.add_argument("--dir", default=".", help="directory for gateway.key/gateway.pub")
    p.add_argument("--force", action="store_true", help="replace an existing key pair")
    p.set_defaults(func=cmd_keygen)
    return p


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify captured batches or an event log; print each problem; 1 if any."""
    try:
        keys, gateway_of = load_key_registry([Path(k) for k in args.key])
    except KeyStoreError as exc:
        print(f"metrogate verify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    worst = EXIT_OK
    for name in args.files:
        path = Path(name)
        try:
            data = path.read_bytes()
        except OSError as exc:
            print(f"{path}: cannot read ({exc.strerror})", file=sys.stderr)
            return EXIT_USAGE
        if looks_like_event_log(data):
            counter = None if args.counter is None else Path(args.counter)
            rep = verify_event_log(path, keys, counter_path=counter)
            for p in rep.problems:
                print(f"{path}: {p}")
            if rep.ok:
                note = "" if rep.counter_checked else " (no counter file: end not checked)"
                print(f"{path}: event log OK, {rep.entries} entries, last {rep.last_n}{note}")
            else:
                worst = EXIT_CORRUPT
        else:
            tracker = SequenceTracker(duplicate_window_seq=args.window)
            cap = verify_capture(read_capture(data), keys, tracker=tracker, gateway_of=gateway_of)
            for line in cap.problems:
                print(f"{path}: {line}")
            for line in cap.notes:
                print(f"{path}: note: {line}")
            if cap.ok:
                print(f"{path}: {len(cap.batches)} batches OK")
            else:
                worst = EXIT_CORRUPT
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
        type=int,
        default=1000,
        help="a repeat within this many sequence numbers of the newest is a duplicate, "
        "further back a replay (default 1000)",
    )
    p.set_defaults(func=cmd_verify)
    return p


def cmd_version(args: argparse.Namespace) -> int:
    """Print the software identification of the legally relevant modules."""
    sid = compute_software_id()
    if args.json:
        out: dict[str, Any] = sid.as_dict() | {"files": list(sid.files)}
        print(json.dumps(out, indent=2))
        return EXIT_OK
    print(sid)
    if args.files:
        for f in sid.files:
            print(f"  {f}")
    return EXIT_OK


def add_version_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "version", help="software identification (name, version, SHA-256 of the legal core)"
    )
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.add_argument("--files", action="store_true", help="list the files covered")
    p.set_defaults(func=cmd_version)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="metrogate")
    sub = parser.add_subparsers(dest="command", required=True)
    add_keygen_parser(sub)
    add_verify_parser(sub)
    add_version_parser(sub)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
