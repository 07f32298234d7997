"""The scale benchmark's smoke mode in CI: 20 HelmReleases installed and upgraded on a control
plane of the benchmark's own, then 20 s idle. Only the hard invariants are asserted (every
HelmRelease Ready after each wave, no write in the steady state, the requests an install
costs, no request at all while idle); the timings are recorded
in artifacts/bench/smoke/ and judged by people, not by this test.

The benchmark starts its own control plane and operator: the session's operator (the
`rudder` fixture) serves every namespace and would take part in the measurement.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

BENCH = Path(__file__).resolve().parent / "bench_releases.py"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "bench"
NAMESPACES = 10  # the benchmark's default: releases are spread over this many


@pytest.mark.timeout(300)
def test_bench_smoke_all_ready_and_no_steady_state_writes() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--out", str(ARTIFACTS), "--name", "smoke"],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    results_file = ARTIFACTS / "smoke" / "results.json"
    assert results_file.exists(), f"no results\n{result.stdout}\n{result.stderr[-4000:]}"
    report = json.loads(results_file.read_text())
    (run,) = [r for r in report["results"] if r["kind"] == "rudder"]
    phases = run["phases"]
    for name in ("install", "upgrade"):
        phase = phases[name]
        assert phase["ready"] == phase["n"] == 20, (
            f"{name}: {phase['ready']}/{phase['n']} Ready; {phase.get('not_ready')}\n"
            + result.stderr[-4000:]
        )
    steady = phases["steady"]
    assert steady["reconciles"] > 0, "the interval did not trigger a reconcile while idle"
    assert steady["writes"] == 0, f"rudder wrote while idle: {steady['written']}"
    # Counts are stable where times are not: what an install costs the API server.
    install = phases["install"]["requests"]
    per_release = install["per_release"]
    assert per_release["writes"] <= 9.0, install["by_verb_resource_per_release"]
    assert per_release["dry_runs"] <= 4.0, install["by_verb_resource_per_release"]
    # No read per install: the HelmRelease comes from the watch, records and readiness from
    # one shared list+watch per namespace (of its Secrets and its Deployments; a watch may be
    # resumed once), discovery once.
    assert "get helmreleases" not in install["by_verb_resource"], install["by_verb_resource"]
    assert install["reads"] <= 5 * NAMESPACES + 3, install["by_verb_resource"]
    # Idle reconciles read from the same caches: nothing at all reaches the API server.
    assert steady["requests"]["total"] == 0, steady["requests"]["by_verb_resource"]
    assert result.returncode == 0, result.stderr[-4000:]
