"""Software identification: which files, reproducible digest, CLI output."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.audit.software_id import compute_software_id, legal_files
from gateway.cli.app import main


def _tree(root: Path) -> None:
    (root / "drivers" / "sub").mkdir(parents=True)
    (root / "drivers" / "__pycache__").mkdir()
    (root / "gateway" / "metrology").mkdir(parents=True)
    (root / "gateway" / "wire").mkdir()
    (root / "drivers" / "__init__.py").write_text("")
    (root / "drivers" / "modbus.py").write_text("X = 1\n")
    (root / "drivers" / "sub" / "deep.py").write_text("Y = 2\n")
    (root / "drivers" / "__pycache__" / "modbus.cpython-311.py").write_text("junk")
    (root / "drivers" / "notes.txt").write_text("not python")
    (root / "gateway" / "metrology" / "rules.py").write_text("R = 3\n")
    (root / "gateway" / "wire" / "signing.py").write_text("S = 4\n")
    (root / "gateway" / "cli.py").write_text("not legally relevant\n")


def test_covers_legal_modules_only_in_sorted_order(tmp_path: Path) -> None:
    _tree(tmp_path)
    assert legal_files(tmp_path) == [
        "drivers/__init__.py",
        "drivers/modbus.py",
        "drivers/sub/deep.py",
        "gateway/metrology/rules.py",
        "gateway/wire/signing.py",
    ]


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="coreutils sha256sum not present")
def test_digest_is_reproducible_with_sha256sum(tmp_path: Path) -> None:
    _tree(tmp_path)
    sid = compute_software_id(tmp_path, version="9.9")
    listing: bytes = subprocess.run(
        ["sha256sum", *sid.files],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=30,
        env={"LC_ALL": "C"},
    ).stdout
    rows: list[bytes] = listing.splitlines(keepends=True)
    rows.sort(key=lambda row: row.split(b"  ", 1)[1])  # by path, as `sort -k2` does
    manifest = b"".join(rows)
    again = subprocess.run(
        ["sha256sum"], input=manifest, check=True, capture_output=True, timeout=30
    ).stdout
    assert again.split()[0].decode() == sid.sha256
    assert sid.version == "9.9"
    assert sid.as_dict() == {"name": "metrogate", "version": "9.9", "sha256": sid.sha256}


def test_digest_changes_with_a_legal_file_not_with_others(tmp_path: Path) -> None:
    _tree(tmp_path)
    before = compute_software_id(tmp_path).sha256
    (tmp_path / "gateway" / "cli.py").write_text("changed, still not legal\n")
    assert compute_software_id(tmp_path).sha256 == before
    (tmp_path / "drivers" / "sub" / "deep.py").write_text("Y = 3\n")
    assert compute_software_id(tmp_path).sha256 != before


def test_renaming_a_file_changes_the_digest(tmp_path: Path) -> None:
    _tree(tmp_path)
    before = compute_software_id(tmp_path).sha256
    (tmp_path / "drivers" / "modbus.py").rename(tmp_path / "drivers" / "modbus2.py")
    assert compute_software_id(tmp_path).sha256 != before


def test_nothing_to_identify_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        compute_software_id(tmp_path)


def test_installed_identity_and_version_command(capsys: pytest.CaptureFixture[str]) -> None:
    sid = compute_software_id()
    assert "gateway/wire/signing.py" in sid.files
    assert "drivers/base.py" in sid.files
    assert len(sid.sha256) == 64 and sid.short == sid.sha256[:16]
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == f"metrogate {sid.version} sha256:{sid.sha256}"
    assert main(["version", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sha256"] == sid.sha256 and out["files"] == list(sid.files)


PINNED = [
    "drivers/__init__.py",
    "drivers/ascii_generic.py",
    "drivers/backoff.py",
    "drivers/base.py",
    "drivers/bcd.py",
    "drivers/cancel.py",
    "drivers/cjt188.py",
    "drivers/dlt645.py",
    "drivers/modbus_codec.py",
    "drivers/modbus_common.py",
    "drivers/modbus_plan.py",
    "drivers/modbus_serial.py",
    "drivers/modbus_tcp.py",
    "drivers/mtsics.py",
    "drivers/opcua.py",
    "drivers/opcua_security.py",
    "drivers/opcua_status.py",
    "drivers/serial_line.py",
    "drivers/toledo.py",
    "gateway/acquisition/__init__.py",
    "gateway/acquisition/build.py",
    "gateway/acquisition/clock.py",
    "gateway/acquisition/poller.py",
    "gateway/acquisition/rulestate.py",
    "gateway/audit/__init__.py",
    "gateway/audit/eventlog.py",
    "gateway/audit/head.py",
    "gateway/audit/parameters.py",
    "gateway/audit/reinit.py",
    "gateway/audit/software_id.py",
    "gateway/audit/verify.py",
    "gateway/config/models/__init__.py",
    "gateway/config/models/cjt188.py",
    "gateway/config/models/device.py",
    "gateway/config/models/metrology.py",
    "gateway/config/models/modbus.py",
    "gateway/config/models/opcua.py",
    "gateway/config/models/registry.py",
    "gateway/config/models/serial.py",
    "gateway/delivery/__init__.py",
    "gateway/delivery/events.py",
    "gateway/delivery/lanes.py",
    "gateway/delivery/outbox.py",
    "gateway/delivery/publisher.py",
    "gateway/delivery/ticks.py",
    "gateway/delivery/writer.py",
    "gateway/metrology/__init__.py",
    "gateway/metrology/alarms.py",
    "gateway/metrology/calibration.py",
    "gateway/metrology/conformity.py",
    "gateway/metrology/pipeline.py",
    "gateway/metrology/rules.py",
    "gateway/metrology/spc.py",
    "gateway/wire/__init__.py",
    "gateway/wire/commands.py",
    "gateway/wire/encoding.py",
    "gateway/wire/keys.py",
    "gateway/wire/reading.py",
    "gateway/wire/signing.py",
    "gateway/wire/verify.py",
]


def test_the_identity_covers_exactly_the_pinned_files() -> None:
    """Moving a file out of (or into) a legally relevant package changes the identity's
    file list: that must be a deliberate change of this list, never a silent one."""
    assert list(compute_software_id().files) == sorted(PINNED, key=str.encode)
