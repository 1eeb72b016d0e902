"""The city-scale ingest benchmark's code path at a tiny scale, so it cannot rot.

Not timed: ``bench/bench_city.py --smoke`` runs 21 gateways with their own keys for
3 simulated seconds through a real Mosquitto into a real InfluxDB 1.x, drained by
one and then two real ``metrogate ingest`` processes on one shared subscription, and
raises unless the store holds exactly what was sent with no gap (docs/ingest.md,
"City scale").
"""

from __future__ import annotations

import pytest

from bench.bench_city import main

pytestmark = pytest.mark.services  # the test command installs the servers: never skipped


def test_the_city_bench_runs_and_finds_every_reading(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--smoke"]) == 0
    out = capsys.readouterr().out
    assert out.count("stored exactly, completeness 100 % for each") == 2, out
    assert "1 worker:" in out and "2 workers:" in out, out
    assert "per gateway" in out
