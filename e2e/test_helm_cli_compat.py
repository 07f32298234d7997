"""Living beside the Helm CLI: `helm rollback` / `helm upgrade` (v4, server-side as manager
`helm`) on a rudder release, rudder noticing those out-of-band revisions and re-converging
with a takeover of the CLI's fields only, and adopting releases the CLIs installed.

Every check is made the way a user would: `helm history` / `helm get values` of both CLIs,
the HelmRelease's conditions, the live objects and their `--show-managed-fields`.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest

from charts import push, write_chart
from conftest import Cluster
from helpers import (
    apply_helmrelease,
    condition,
    get_json,
    unique,
    wait_for,
    wait_for_condition,
)
from operator_process import OperatorProcess

pytestmark = pytest.mark.e2e

TEMPLATES = {
    "configmap.yaml": """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-config
  labels:
    tier: {{ .Values.tier | quote }}
    keep-me: "yes"
data:
  greeting: {{ .Values.greeting | quote }}
  fixed: constant
""",
    "deployment.yaml": """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
  labels: {app: {{ .Release.Name }}}
spec:
  selector:
    matchLabels: {app: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}}
    spec:
      containers:
        - name: app
          image: {{ .Values.image | quote }}
""",
}
DEFAULTS = {"greeting": "hello", "tier": "web", "image": "example.test/app:1.0"}

GREETING = ("f:data", "f:greeting")
REPLICAS = ("f:spec", "f:replicas")
# How an out-of-band revision may be named in a condition message.
OUT_OF_BAND = re.compile(r"out[- ]of[- ]band|outside rudder|helm CLI|not written by rudder", re.I)


@pytest.fixture(scope="module")
def chart(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("compat-chart")
    directory = write_chart(root, "compat", "1.0.0", TEMPLATES, DEFAULTS)
    return {"ref": push(cluster.registry, directory), "dir": str(directory)}


def spec(ref: str, values: dict[str, object], **extra: object) -> dict[str, object]:
    # A short interval: the CLI's revisions are noticed at the next reconcile at the latest.
    return {
        "chart": {"ref": ref, "insecure": True},
        "values": values,
        "timeout": "60s",
        "interval": "15s",
        **extra,
    }


# -- helpers -----------------------------------------------------------------------------


def helm3_as_helm(
    cluster: Cluster, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Helm 3 run as users run it, as `helm`: its field manager is its argv[0]'s base name,
    so run through the `helm3` symlink it would manage fields as `helm3`."""
    result = subprocess.run(
        ["helm", *args],
        executable=str(cluster.tools / "helm3"),
        capture_output=True,
        text=True,
        env=cluster.env(),
        timeout=120,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"helm3 {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def history(cluster: Cluster, release: str, namespace: str, *, v3: bool = False) -> list[Any]:
    helm = cluster.helm3 if v3 else cluster.helm
    loaded: list[Any] = json.loads(helm("history", release, "-n", namespace, "-o", "json").stdout)
    return loaded


def summary(entries: list[Any]) -> list[tuple[int, str, str]]:
    return [(int(h["revision"]), h["status"], h["description"]) for h in entries]


def values_of(cluster: Cluster, release: str, namespace: str, *extra: str) -> Any:
    return json.loads(
        cluster.helm("get", "values", release, "-n", namespace, "-o", "json", *extra).stdout
    )


def cli_version(result: subprocess.CompletedProcess[str]) -> int:
    """The revision `helm upgrade -o json` wrote (its last line; "Pulled: ..." comes first)."""
    return int(json.loads(result.stdout.strip().splitlines()[-1])["version"])


def field_owners(obj: dict[str, Any], path: tuple[str, ...]) -> set[str]:
    """The managers whose managedFields entry holds `path` (e.g. ("f:data", "f:greeting"))."""
    owners = set()
    for entry in obj.get("metadata", {}).get("managedFields") or []:
        node: Any = entry.get("fieldsV1") or {}
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
            if node is None:
                break
        else:
            owners.add(entry["manager"])
    return owners


def managers(obj: dict[str, Any]) -> set[str]:
    return {entry["manager"] for entry in obj.get("metadata", {}).get("managedFields") or []}


def live(cluster: Cluster, kind: str, name: str, namespace: str) -> dict[str, Any]:
    return get_json(cluster, kind, name, "-n", namespace, "--show-managed-fields")


def wait_reconverged(
    cluster: Cluster, namespace: str, name: str, after: int, timeout: float = 75
) -> dict[str, Any]:
    """The HelmRelease once it is Ready on a revision newer than `after`."""
    seen: dict[str, Any] = {}

    def probe() -> dict[str, Any] | None:
        hr = get_json(cluster, "helmrelease", name, "-n", namespace)
        seen["status"] = hr.get("status")
        revision = hr.get("status", {}).get("release", {}).get("revision", 0)
        if condition(hr, "Ready").get("status") == "True" and revision > after:
            return hr
        return None

    try:
        result: dict[str, Any] = wait_for(probe, timeout=timeout)
    except AssertionError:
        raise AssertionError(
            f"{namespace}/{name} not Ready on a revision after {after} within {timeout}s; "
            f"status: {json.dumps(seen.get('status'), indent=1)}\n"
            f"helm history: {summary(history(cluster, name, namespace))}"
        ) from None
    return result


def mentions_out_of_band(hr: dict[str, Any], revision: int) -> bool:
    messages = [c.get("message", "") for c in hr.get("status", {}).get("conditions", [])]
    return any(OUT_OF_BAND.search(m) and str(revision) in m for m in messages)


def assert_cli_histories_agree(cluster: Cluster, release: str, namespace: str) -> list[Any]:
    v4 = history(cluster, release, namespace)
    assert summary(history(cluster, release, namespace, v3=True)) == summary(v4)
    return v4


def assert_no_conflict(hr: dict[str, Any]) -> None:
    assert condition(hr, "Conflicted").get("status") != "True", hr["status"]
    assert not hr["status"].get("conflicts"), hr["status"]["conflicts"]
    assert condition(hr, "Stalled").get("status") != "True", hr["status"]


# -- tests -------------------------------------------------------------------------------


def test_helm_rollback_is_noticed_and_reconverged(
    cluster: Cluster, rudder: OperatorProcess, chart: dict[str, str]
) -> None:
    ns, rel = unique("cli-rollback"), "rolled"
    apply_helmrelease(cluster, rel, ns, spec(chart["ref"], {"greeting": "one"}))
    wait_for_condition(cluster, ns, rel, "Ready")
    apply_helmrelease(cluster, rel, ns, spec(chart["ref"], {"greeting": "two"}))
    hr = wait_for_condition(cluster, ns, rel, "Ready", reason="UpgradeSucceeded")
    assert hr["status"]["release"]["revision"] == 2

    # The Helm 4 CLI rolls back server-side as `helm`; taking back a value rudder set is a
    # conflict it must be told to force.
    cluster.helm("rollback", rel, "1", "-n", ns, "--force-conflicts")
    entries = history(cluster, rel, ns)
    assert (entries[-1]["revision"], entries[-1]["description"]) == (3, "Rollback to 1")
    assert values_of(cluster, rel, ns, "--revision", "3") == {"greeting": "one"}

    # rudder notices the revision it did not write and re-converges to its spec.
    hr = wait_reconverged(cluster, ns, rel, after=3)
    assert hr["status"]["release"]["revision"] == 4
    assert hr["status"]["release"]["status"] == "deployed"
    assert mentions_out_of_band(hr, 3), hr["status"]["conditions"]
    assert_no_conflict(hr)
    assert values_of(cluster, rel, ns) == {"greeting": "two"}
    config = live(cluster, "configmap", f"{rel}-config", ns)
    assert config["data"]["greeting"] == "two"
    assert field_owners(config, GREETING) == {"rudder"}
    entries = assert_cli_histories_agree(cluster, rel, ns)
    assert [(h["revision"], h["status"]) for h in entries] == [
        (1, "superseded"), (2, "superseded"), (3, "superseded"), (4, "deployed"),
    ]  # fmt: skip
    assert entries[2]["description"] == "Rollback to 1"


def test_helm_upgrade_conflicts_unless_forced_then_rudder_takes_back(
    cluster: Cluster, rudder: OperatorProcess, chart: dict[str, str]
) -> None:
    ns, rel = unique("cli-upgrade"), "upgraded"
    apply_helmrelease(cluster, rel, ns, spec(chart["ref"], {"greeting": "from-spec"}))
    wait_for_condition(cluster, ns, rel, "Ready")
    config = live(cluster, "configmap", f"{rel}-config", ns)
    assert field_owners(config, GREETING) == {"rudder"}

    upgrade = ("upgrade", rel, chart["ref"], "--plain-http", "-n", ns, "--reuse-values",
               "--set", "greeting=from-cli", "-o", "json")  # fmt: skip
    # Without --force-conflicts: the documented conflict with rudder's field.
    refused = cluster.helm(*upgrade, check=False)
    assert refused.returncode != 0, refused.stdout
    assert "conflict" in refused.stderr.lower(), refused.stderr
    assert "rudder" in refused.stderr, refused.stderr
    assert live(cluster, "configmap", f"{rel}-config", ns)["data"]["greeting"] == "from-spec"

    # With it: the CLI's revision is written and deployed.
    forced = cluster.helm(*upgrade, "--force-conflicts")
    cli_revision = cli_version(forced)
    assert values_of(cluster, rel, ns, "--revision", str(cli_revision)) == {"greeting": "from-cli"}
    entries = history(cluster, rel, ns)
    assert entries[-1]["revision"] == cli_revision
    assert entries[-1]["description"] == "Upgrade complete"

    # rudder re-converges: the value returns to the spec, taken back from `helm`.
    hr = wait_reconverged(cluster, ns, rel, after=cli_revision)
    assert hr["status"]["release"]["revision"] == cli_revision + 1
    assert_no_conflict(hr)
    assert mentions_out_of_band(hr, cli_revision), hr["status"]["conditions"]
    config = live(cluster, "configmap", f"{rel}-config", ns)
    assert config["data"]["greeting"] == "from-spec"
    assert field_owners(config, GREETING) == {"rudder"}, config["metadata"]["managedFields"]
    assert values_of(cluster, rel, ns) == {"greeting": "from-spec"}
    entries = assert_cli_histories_agree(cluster, rel, ns)
    assert (entries[-1]["revision"], entries[-1]["status"]) == (cli_revision + 1, "deployed")
    assert all(h["status"] != "deployed" for h in entries[:-1]), summary(entries)


def test_takeover_leaves_other_managers_fields_alone(
    cluster: Cluster, rudder: OperatorProcess, chart: dict[str, str]
) -> None:
    ns, rel = unique("cli-hpa"), "scaled"
    apply_helmrelease(cluster, rel, ns, spec(chart["ref"], {"greeting": "from-spec"}))
    wait_for_condition(cluster, ns, rel, "Ready")

    # An autoscaler stand-in owns spec.replicas, which the chart never sets.
    cluster.kubectl(
        "apply", "--server-side", "--field-manager=hpa-sim", "-f", "-",
        input=json.dumps({"apiVersion": "apps/v1", "kind": "Deployment",
                          "metadata": {"name": rel, "namespace": ns},
                          "spec": {"replicas": 3}}),
    )  # fmt: skip
    before = live(cluster, "deployment", rel, ns)
    assert field_owners(before, REPLICAS) == {"hpa-sim"}
    hpa_fields = [e["fieldsV1"] for e in before["metadata"]["managedFields"]
                  if e["manager"] == "hpa-sim"]  # fmt: skip

    forced = cluster.helm("upgrade", rel, chart["ref"], "--plain-http", "-n", ns,
                          "--reuse-values", "--set", "greeting=from-cli,image=example.test/app:2.0",
                          "--force-conflicts", "-o", "json")  # fmt: skip
    cli_revision = cli_version(forced)
    assert values_of(cluster, rel, ns, "--revision", str(cli_revision))["greeting"] == "from-cli"

    hr = wait_reconverged(cluster, ns, rel, after=cli_revision)
    assert_no_conflict(hr)
    deployment = live(cluster, "deployment", rel, ns)
    config = live(cluster, "configmap", f"{rel}-config", ns)
    # The CLI's fields came back to rudder ...
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == DEFAULTS["image"]
    assert config["data"]["greeting"] == "from-spec"
    assert "helm" not in managers(deployment) | managers(config), deployment["metadata"][
        "managedFields"
    ]
    # ... and the autoscaler's stayed the autoscaler's, value and ownership alike.
    assert deployment["spec"]["replicas"] == 3
    assert field_owners(deployment, REPLICAS) == {"hpa-sim"}
    after = [e["fieldsV1"] for e in deployment["metadata"]["managedFields"]
             if e["manager"] == "hpa-sim"]  # fmt: skip
    assert after == hpa_fields


@pytest.mark.parametrize("cli", ["helm3", "helm4"])
def test_adopts_a_release_the_cli_installed(
    cluster: Cluster, rudder: OperatorProcess, chart: dict[str, str], cli: str
) -> None:
    ns, rel = unique(f"adopt-{cli}"), "adopted"
    installed = {"greeting": "from-cli", "tier": "backend"}
    install = ("install", rel, "-n", ns, "--create-namespace",
               "--set", "greeting=from-cli,tier=backend")  # fmt: skip
    if cli == "helm3":  # client-side apply: `helm` Update entries in managedFields
        helm3_as_helm(cluster, install[0], install[1], chart["dir"], *install[2:])
        method = "Update"
    else:  # server-side apply as `helm`
        cluster.helm(install[0], install[1], chart["ref"], "--plain-http", *install[2:])
        method = "Apply"
    config = live(cluster, "configmap", f"{rel}-config", ns)
    assert {(e["manager"], e["operation"]) for e in config["metadata"]["managedFields"]} == {
        ("helm", method)
    }

    apply_helmrelease(cluster, rel, ns, spec(chart["ref"], {**installed, "greeting": "adopted"}))
    hr = wait_for_condition(cluster, ns, rel, "Ready", timeout=90)
    assert hr["status"]["release"]["revision"] == 2
    assert hr["status"]["release"]["status"] == "deployed"
    assert_no_conflict(hr)

    config = live(cluster, "configmap", f"{rel}-config", ns)
    assert config["data"] == {"greeting": "adopted", "fixed": "constant"}
    labels = config["metadata"]["labels"]
    assert (labels["tier"], labels["keep-me"]) == ("backend", "yes"), labels
    deployment = live(cluster, "deployment", rel, ns)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == DEFAULTS["image"]
    for obj in (config, deployment):
        assert "helm" not in managers(obj), obj["metadata"]["managedFields"]
    for path in (GREETING, ("f:data", "f:fixed"), ("f:metadata", "f:labels", "f:keep-me"),
                 ("f:metadata", "f:labels", "f:tier")):  # fmt: skip
        assert field_owners(config, path) == {"rudder"}, (path, config["metadata"]["managedFields"])

    assert values_of(cluster, rel, ns) == {**installed, "greeting": "adopted"}
    entries = assert_cli_histories_agree(cluster, rel, ns)
    assert [(h["revision"], h["status"]) for h in entries] == [(1, "superseded"), (2, "deployed")]
