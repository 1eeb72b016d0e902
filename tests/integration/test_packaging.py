"""The wheel works on its own: installed into a fresh venv, away from the source tree.

Profiles, the demo config, the wire JSON schemas and the type markers are package
data; the software identity is computed over the installed modules. Installing
needs the project's dependencies, from the package index pip is configured with.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gateway.audit.software_id import compute_software_id

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("drivers", "gateway", "simulators", "supervision")


def run(cmd: list[str], *, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def build_wheel(tmp: Path) -> Path:
    """A wheel built by pip from a copy of what the wheel is made of (nothing else)."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for package in PACKAGES:
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp / "dist"
    r = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
        cwd=tmp,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    (wheel,) = dist.glob("metrogate-*.whl")
    return wheel


def test_wheel_installed_in_a_fresh_venv_checks_runs_the_demo_and_identifies(
    tmp_path: Path,
) -> None:
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        "gateway/py.typed",
        "drivers/py.typed",
        "gateway/cli/demo.yaml",
        *(f"gateway/wire/schema/{p.name}" for p in (REPO / "gateway/wire/schema").glob("*.json")),
        *(f"gateway/config/profiles/{p.name}" for p in (REPO / "config/profiles").glob("*.yaml")),
    }
    assert len(shipped) > 6
    assert shipped <= names, sorted(shipped - names)

    venv = tmp_path / "venv"
    r = run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    r = run(
        [str(venv / "bin/python"), "-m", "pip", "install", "-q", f"{wheel}[demo]"],
        cwd=tmp_path,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr

    work = tmp_path / "work"
    work.mkdir()
    metrogate = str(venv / "bin/metrogate")
    r = run(
        [str(venv / "bin/python"), "-c", "import gateway, drivers; print(gateway.__file__)"],
        cwd=work,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).is_relative_to(venv), r.stdout  # not the source tree

    # an example that uses a shipped profile, copied alone
    shutil.copy(REPO / "config/examples/serial-line.yaml", work / "line.yaml")
    r = run([metrogate, "check", "-c", "line.yaml"], cwd=work, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "line.yaml: ok" in r.stdout

    # the identity of the installed legal modules is the one of the source tree
    r = run([metrogate, "version", "--json"], cwd=work, timeout=60)
    assert r.returncode == 0, r.stderr
    installed = json.loads(r.stdout)
    source = compute_software_id()
    assert installed["sha256"] == source.sha256
    assert installed["files"] == list(source.files)

    r = run(
        [metrogate, "demo", "--duration", "10", "--no-view", "--state-dir", str(work / "state")],
        cwd=work,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "demo summary:" in r.stdout
    assert "Traceback" not in r.stderr, r.stderr
