"""The HelmRelease CRD on a real API server: what it accepts, refuses (naming the field),
defaults, documents and prints."""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import Cluster
from rudder.model import Condition, conditions_to_status, parse_spec, set_condition

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
CRD = REPO / "crds" / "helmreleases.rudder.dev.yaml"
SAMPLES = Path(__file__).resolve().parent / "samples"
DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.fixture(scope="module")
def namespace(cluster: Cluster) -> Iterator[str]:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.kubectl(
        "wait", "--for", "condition=established", "--timeout=60s", "crd/helmreleases.rudder.dev"
    )
    name = f"crd-validation-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    # A running operator may have added its finalizer; it may be gone before we delete.
    listed = cluster.kubectl("get", "helmreleases", "-n", name, "-o", "name", check=False)
    for resource in listed.stdout.split():
        cluster.kubectl(
            "patch", resource, "-n", name, "--type=merge",
            "-p", '{"metadata":{"finalizers":null}}', check=False,
        )  # fmt: skip
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def read(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    served = json.loads(cluster.kubectl("get", "rhr", name, "-n", namespace, "-o", "json").stdout)
    assert isinstance(served, dict)
    return served


def manifest(name: str, spec: dict[str, Any]) -> str:
    return json.dumps(
        {
            "apiVersion": "rudder.dev/v1alpha1",
            "kind": "HelmRelease",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def chart(ref: str = f"oci://registry.example.com/charts/podinfo@{DIGEST}") -> dict[str, Any]:
    return {"chart": {"ref": ref}}


# --- accepted ---------------------------------------------------------------------------------


def test_the_valid_sample_is_accepted_as_written(cluster: Cluster, namespace: str) -> None:
    sample = SAMPLES / "helmrelease-valid.yaml"
    cluster.kubectl("apply", "-n", namespace, "-f", str(sample))
    written = yaml.safe_load(sample.read_text())["spec"]
    served = read(cluster, namespace, "podinfo")["spec"]
    assert served["values"] == written["values"]  # free-form values are kept, not pruned
    assert served["valuesFrom"][1] == written["valuesFrom"][1]
    assert served["driftDetection"]["ignore"] == written["driftDetection"]["ignore"]
    assert served["chart"]["verify"] == written["chart"]["verify"]
    spec = parse_spec(served, name="podinfo", namespace=namespace)
    assert spec.release_name == "podinfo-frontend"
    assert spec.interval == 330
    assert spec.upgrade.remediation.strategy == "uninstall"


def test_a_tag_is_accepted_with_allow_tag(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(SAMPLES / "helmrelease-valid-tag.yaml"))
    served = read(cluster, namespace, "tagged")["spec"]["chart"]
    assert served["ref"] == "oci://registry.example.com:5000/charts/podinfo:6.7.0"
    assert served["allowTag"] is True


def test_http_repository_charts_are_accepted(cluster: Cluster, namespace: str) -> None:
    for sample, name in (("http", "from-http"), ("http-range", "from-http-range")):
        path = SAMPLES / f"helmrelease-valid-{sample}.yaml"
        cluster.kubectl("apply", "-n", namespace, "-f", str(path))
        served = read(cluster, namespace, name)["spec"]
        assert served["chart"]["passCredentials"] is False
        spec = parse_spec(served, name=name, namespace=namespace)
        assert spec.chart.http is not None
        assert spec.chart.http.allow_version_range == (sample == "http-range")


def test_the_server_fills_in_the_defaults_the_model_assumes(
    cluster: Cluster, namespace: str
) -> None:
    sample = SAMPLES / "helmrelease-minimal.yaml"
    cluster.kubectl("apply", "-n", namespace, "-f", str(sample))
    served = read(cluster, namespace, "minimal")["spec"]
    assert served == {
        "chart": {"ref": f"oci://registry.example.com/charts/podinfo@{DIGEST}",
                  "allowTag": False, "insecure": False,
                  "allowVersionRange": False, "passCredentials": False},
        "interval": "10m",
        "timeout": "5m",
        "suspend": False,
        "maxHistory": 10,
        "install": {"createNamespace": False, "crds": "Create", "disableHooks": False,
                    "disableWait": False, "takeOwnership": False, "remediation": {"retries": 0},
                    "preview": False, "approval": "auto"},
        "upgrade": {"forceConflicts": False, "crds": "Skip", "disableHooks": False,
                    "disableWait": False, "takeOwnership": False, "cleanupOnFail": False,
                    "remediation": {"retries": 0, "strategy": "rollback"},
                    "forceReplace": False, "preview": False, "approval": "auto"},
        "rollback": {"disableHooks": False, "disableWait": False},
        "test": {"enable": False, "timeout": "5m", "ignoreFailures": False},
        "uninstall": {"keepHistory": False, "disableHooks": False,
                      "deletionPropagation": "background"},
        "driftDetection": {"mode": "disabled"},
        "postRenderStrategy": "combined",
    }  # fmt: skip
    as_written = yaml.safe_load(sample.read_text())["spec"]
    assert parse_spec(served, name="minimal", namespace=namespace) == parse_spec(
        as_written, name="minimal", namespace=namespace
    )


def test_a_long_name_is_fine_when_the_release_name_is_short(
    cluster: Cluster, namespace: str
) -> None:
    long_name = "x" * 60
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=manifest(long_name, {**chart(), "releaseName": "short"}),
    )  # fmt: skip
    at_limit = "m" * 53
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest(at_limit, chart()))
    assert read(cluster, namespace, at_limit)["metadata"]["name"] == at_limit


# --- refused, naming the field ----------------------------------------------------------------

INVALID = {
    "bad-digest": ["spec.chart.ref", "must be oci://<registry>/<repository>@sha256:"],
    "tag-without-allowtag": ["spec.chart.ref", "set spec.chart.allowTag: true"],
    "long-release-name": ["spec.releaseName", "53"],
    "long-name": ["metadata.name", "at most 53 characters"],
    "unknown-field": ['unknown field "spec.chart.foo"'],
    "wrong-type": ["spec.maxHistory", "integer"],
    "bad-enum": ["spec.install.crds", "Unsupported value", '"CreateReplace"'],
    "bad-duration": ["spec.interval", "should match"],
    "missing-ref": ["spec.chart", "exactly one of ref (an OCI chart) and repository"],
    "ref-and-repository": ["spec.chart", "exactly one of ref (an OCI chart) and repository"],
    "http-without-digest": ["spec.chart.digest", "required unless spec.chart.allowVersionRange"],
    "http-range-without-allow": ["spec.chart.version", "must be an exact version"],
    "http-credentials-in-url": ["spec.chart.repository", "should match"],
    "http-with-allowtag": ["spec.chart.allowTag, insecure and verify apply to OCI charts"],
    "values-from-without-name": ["spec.valuesFrom[0].name", "Required value"],
    "post-renderer-both": ["spec.postRenderers[0]", "exactly one of kustomize and wasm"],
    "plugin-tag": ["spec.postRenderers[0].wasm.ref", "should match"],
}


def test_every_invalid_sample_has_an_expectation() -> None:
    samples = {p.name for p in SAMPLES.glob("helmrelease-invalid-*.yaml")}
    assert samples == {f"helmrelease-invalid-{case}.yaml" for case in INVALID}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_an_invalid_sample_is_refused_naming_the_field(
    cluster: Cluster, namespace: str, case: str
) -> None:
    sample = SAMPLES / f"helmrelease-invalid-{case}.yaml"
    result = cluster.kubectl("apply", "-n", namespace, "-f", str(sample), check=False)
    assert result.returncode != 0, result.stdout
    for expected in INVALID[case]:
        assert expected in result.stderr
    name = yaml.safe_load(sample.read_text())["metadata"]["name"]
    absent = cluster.kubectl("get", "rhr", name, "-n", namespace, check=False)
    assert "NotFound" in absent.stderr


# --- printed and documented -------------------------------------------------------------------


def test_get_prints_the_six_columns_from_status(cluster: Cluster, namespace: str) -> None:
    # Suspended, so an operator running in this session leaves the status we write alone.
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=manifest("with-status", {**chart(), "suspend": True}),
    )  # fmt: skip
    now = datetime.datetime.now(datetime.UTC)
    conditions = set_condition(
        [], Condition("Ready", "True", "InstallSucceeded", "Installed podinfo revision 3", 1), now
    )
    status = {
        "observedGeneration": 1,
        "conditions": conditions_to_status(conditions),
        "chart": {"ref": f"oci://registry.example.com/charts/podinfo@{DIGEST}", "digest": DIGEST,
                  "name": "podinfo", "version": "6.7.0", "appVersion": "6.7.0",
                  "nameVersion": "podinfo:6.7.0", "shortDigest": DIGEST[:19]},
        "release": {"name": "with-status", "namespace": namespace, "revision": 3,
                    "status": "deployed", "lastDeployed": "2025-01-02T03:04:05Z"},
        "history": [{"revision": 3, "chartDigest": DIGEST, "chartVersion": "6.7.0",
                     "valuesDigest": "sha256:ab", "status": "deployed"}],
        "conflicts": [{"apiVersion": "apps/v1", "kind": "Deployment", "namespace": namespace,
                       "name": "podinfo", "field": ".spec.replicas", "manager": "kubectl"}],
        "resources": {"counts": {"Current": 3},
                      "notReady": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                    "namespace": namespace, "name": "podinfo",
                                    "status": "InProgress", "message": "1 of 2 ready"}]},
        "drift": [{"apiVersion": "v1", "kind": "ConfigMap", "namespace": namespace,
                   "name": "podinfo", "fields": ["/data/color"]}],
        "failures": 0, "installFailures": 0, "upgradeFailures": 0,
        "lastAttempted": {"generation": 1, "chartDigest": DIGEST, "valuesDigest": "sha256:ab"},
        "lastHandledRequestedAt": "2025-01-02T03:00:00Z",
    }  # fmt: skip
    # A field the status schema lacks would be pruned, and the read-back would differ.
    cluster.kubectl(
        "patch", "rhr", "with-status", "-n", namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": status}),
    )  # fmt: skip
    assert read(cluster, namespace, "with-status")["status"] == status

    table = cluster.kubectl("get", "rhr", "with-status", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "STATUS", "REVISION", "CHART", "DIGEST", "AGE"]
    row = table[1]
    for shown in ("True", "Installed podinfo revision 3", " 3 ", "podinfo:6.7.0", DIGEST[:19]):
        assert shown in row


def test_short_name_and_category_list_helmreleases(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest("listed", chart()))
    for resource in ("rhr", "rudder", "helmreleases.rudder.dev"):
        names = cluster.kubectl("get", resource, "-n", namespace, "-o", "name").stdout.split()
        assert "helmrelease.rudder.dev/listed" in names, resource


def test_explain_documents_the_fields(cluster: Cluster, namespace: str) -> None:
    chart_doc = cluster.kubectl("explain", "helmrelease.spec.chart").stdout
    assert "The chart to install" in chart_doc
    assert "ref\t<string>" in chart_doc
    assert "classic HTTP chart" in chart_doc
    assert "allowVersionRange\t<boolean>" in chart_doc
    assert "Accept a tag instead of a digest" in chart_doc
    crds_doc = cluster.kubectl("explain", "rhr.spec.install.crds").stdout
    assert "CreateReplace" in crds_doc
    status_doc = cluster.kubectl("explain", "helmrelease.status.chart.shortDigest").stdout
    assert "Digest printer column" in status_doc
