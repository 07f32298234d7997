"""`rudder get | reconcile | suspend | resume | history` against a live HelmRelease, with the
caller's own kubeconfig; output and exit codes as a user (or a CI job) sees them."""

from __future__ import annotations

from pathlib import Path

import pytest

from charts import app_chart, push
from conftest import Cluster
from helpers import apply_helmrelease, get_json, rudder_cli, unique, wait_for_condition
from operator_process import OperatorProcess

pytestmark = pytest.mark.e2e


def test_the_command_line_on_a_live_helmrelease(
    cluster: Cluster, rudder: OperatorProcess, tmp_path: Path
) -> None:
    ns = unique("cli")
    cluster.kubectl("create", "namespace", ns)
    ref = push(cluster.registry, app_chart(tmp_path, "1.0.0"))
    apply_helmrelease(cluster, "shop", ns, {"chart": {"ref": ref, "insecure": True}})
    wait_for_condition(cluster, ns, "shop", "Ready")

    listed = rudder_cli(cluster, "get", "-A")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == [
        "NAMESPACE", "NAME", "READY", "REASON", "REVISION", "CHART", "DIGEST", "AGE"
    ]  # fmt: skip
    [row] = [r.split() for r in rows if r.startswith(ns)]
    assert row[:6] == [ns, "shop", "True", "InstallSucceeded", "1", "app:1.0.0"]
    assert row[6] == "sha256:" + ref.rsplit(":", 1)[1][:12]
    assert rudder_cli(cluster, "get", "-n", ns).stdout.splitlines()[0].startswith("NAME ")

    # A revision written by the helm CLI, then rudder's own again: history tells them apart.
    cluster.helm("upgrade", "shop", ref, "-n", ns, "--reuse-values", "--plain-http")
    done = rudder_cli(cluster, "reconcile", "shop", "-n", ns, "--wait", "--timeout=90s")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "✔" in done.stdout
    history = rudder_cli(cluster, "history", "shop", "-n", ns)
    assert history.returncode == 0, history.stderr
    written = {line.split()[0]: line.split()[5] for line in history.stdout.splitlines()[1:]}
    # Revision 1 was rudder's, but the helm CLI rewrote its record (superseded) without
    # rudder's stamp: only the records as they are now can be told apart.
    assert (written["2"], written["3"]) == ("helm", "rudder")

    assert rudder_cli(cluster, "suspend", "shop", "-n", ns).returncode == 0
    assert get_json(cluster, "helmrelease", "shop", "-n", ns)["spec"]["suspend"] is True
    assert "Suspended" in rudder_cli(cluster, "get", "-n", ns).stdout
    refused = rudder_cli(cluster, "reconcile", "shop", "-n", ns, "--wait")
    assert (refused.returncode, "is suspended" in refused.stdout) == (1, True)
    assert rudder_cli(cluster, "resume", "shop", "-n", ns).returncode == 0
    assert get_json(cluster, "helmrelease", "shop", "-n", ns)["spec"]["suspend"] is False

    missing = rudder_cli(cluster, "reconcile", "nope", "-n", ns)
    assert missing.returncode == 1
    assert "NotFound" in missing.stderr
