"""The fault-injection suite's smoke mode in CI: `chaos.py --smoke` on a control plane of its
own (10 HelmReleases per scenario; 6 operator kills, a leader kill, a kube-apiserver restart,
a registry outage) in about two and a half minutes. chaos.py checks the invariants
(invariants.py); this test asserts them from its report, artifacts/chaos/smoke/report.json.

It starts its own control plane and operators: the session's operator (the `rudder` fixture)
would reconcile the scenarios' HelmReleases too, and faults must not hit the other tests.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

CHAOS = Path(__file__).resolve().parent / "chaos.py"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "chaos"
BUDGET = 300  # seconds; the run takes about 150 on 2 shared cores


@pytest.mark.timeout(BUDGET + 90)
def test_chaos_smoke_every_scenario_converges_with_its_invariants() -> None:
    argv = [sys.executable, str(CHAOS), "--smoke", "--out", str(ARTIFACTS), "--name", "smoke"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=BUDGET)
    except subprocess.TimeoutExpired:
        # SIGTERM, not SIGKILL: chaos.py then stops its control plane and operators.
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
        pytest.fail(f"chaos --smoke took longer than {BUDGET}s\n{output[-4000:]}")
    report_file = ARTIFACTS / "smoke" / "report.json"
    assert report_file.exists(), f"no report\n{output[-4000:]}"
    report = json.loads(report_file.read_text())
    scenarios = {s["name"]: s for s in report["scenarios"]}
    assert set(scenarios) == {"kill", "leader", "apiserver", "registry"}, output[-4000:]
    # The faults really happened, and kills landed inside actions.
    assert report["total_kills"] >= 7, report["total_kills"]  # 6 operator kills + 1 leader
    assert scenarios["kill"]["kills_with_a_revision_pending"] >= 1, scenarios["kill"]["kills"]
    assert scenarios["apiserver"]["faults"] == {"kube-apiserver restart": 1}
    assert scenarios["registry"]["faults"] == {"registry outage": 1}

    failed = [
        f"{s['name']}: {c['name']}: {c['detail']}"
        for s in scenarios.values()
        for c in s["checks"]
        if not c["ok"]
    ]
    assert not failed, "\n".join(failed) + "\n\n" + output[-3000:]
    assert proc.returncode == 0, output[-4000:]
