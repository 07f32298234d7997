"""Bad input loses nothing: a broken template, a values-schema violation and a missing values
Secret, each arriving after a good revision 1, are reported on the HelmRelease and leave
revision 1 deployed with its objects untouched; fixing the input recovers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from charts import push, write_chart
from conftest import Cluster
from helpers import (
    apply_helmrelease,
    condition,
    get_json,
    release_secrets,
    unique,
    wait_for,
    wait_for_condition,
)
from operator_process import OperatorProcess

pytestmark = pytest.mark.e2e

TEMPLATES = {
    "config.yaml": """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-config
data:
  greeting: {{ .Values.greeting | quote }}
""",
    "deployment.yaml": """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  replicas: {{ .Values.replicas }}
  selector: {matchLabels: {app: {{ .Release.Name }}}}
  template:
    metadata: {labels: {app: {{ .Release.Name }}}}
    spec: {containers: [{name: app, image: "example.test/app:1"}]}
""",
}
BROKEN = {
    **TEMPLATES,
    "broken.yaml": """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-broken
data:
  value: {{ .Values.greeting | nosuchfunc }}
""",
}
SCHEMA = {
    "$schema": "https://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "greeting": {"type": "string"},
        "replicas": {"type": "integer", "minimum": 1},
    },
    "required": ["greeting", "replicas"],
}
DEFAULTS = {"greeting": "hello", "replicas": 1}
OBJECTS = (("configmap", "{}-config"), ("deployment", "{}"))


@pytest.fixture(scope="module")
def charts(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("bad-input-charts")
    good = write_chart(root / "good", "guarded", "1.0.0", TEMPLATES, DEFAULTS, schema=SCHEMA)
    broken = write_chart(root / "broken", "guarded", "1.1.0", BROKEN, DEFAULTS, schema=SCHEMA)
    return {"good": push(cluster.registry, good), "broken": push(cluster.registry, broken)}


def spec(ref: str, values: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"chart": {"ref": ref, "insecure": True}, "values": values, "timeout": "60s", **extra}


def install_revision_one(cluster: Cluster, ns: str, name: str, ref: str) -> dict[str, Any]:
    apply_helmrelease(cluster, name, ns, spec(ref, {"greeting": "one"}))
    hr = wait_for_condition(cluster, ns, name, "Ready", reason="InstallSucceeded", timeout=90)
    assert hr["status"]["release"]["revision"] == 1
    return snapshot(cluster, ns, name)


def snapshot(cluster: Cluster, ns: str, release: str) -> dict[str, Any]:
    """What must not move when an attempt fails: objects, release records, helm's view."""
    objects = {}
    for kind, pattern in OBJECTS:
        obj = get_json(cluster, kind, pattern.format(release), "-n", ns)
        assert obj, f"{kind} {pattern.format(release)} missing"
        objects[kind] = (obj["metadata"]["resourceVersion"], obj.get("data"), obj.get("spec"))
    records = [
        (s["metadata"]["name"], s["metadata"]["labels"]["status"], s["metadata"]["resourceVersion"])
        for s in release_secrets(cluster, ns, release)
    ]
    history = json.loads(cluster.helm("history", release, "-n", ns, "-o", "json").stdout)
    return {
        "objects": objects,
        "records": records,
        "history": [(h["revision"], h["status"]) for h in history],
        "values": json.loads(cluster.helm("get", "values", release, "-n", ns, "-o", "json").stdout),
    }


def assert_nothing_changed(cluster: Cluster, ns: str, release: str, before: dict[str, Any]) -> None:
    after = snapshot(cluster, ns, release)
    assert after["history"] == [(1, "deployed")], "revision 1 is no longer the deployed one"
    assert after["records"] == before["records"], "a release record was written"
    assert after["values"] == before["values"]
    assert after["objects"] == before["objects"], "an object of revision 1 was changed"


def warning_reasons(cluster: Cluster, ns: str, name: str) -> list[str]:
    events = get_json(
        cluster, "events", "-n", ns, "--field-selector", f"involvedObject.name={name}"
    )
    return [e["reason"] for e in events.get("items", []) if e.get("type") == "Warning"]


def recover(cluster: Cluster, ns: str, name: str, ref: str, values: dict[str, Any]) -> None:
    """A good spec after the failure: revision 2 is deployed and nothing is stalled."""
    apply_helmrelease(cluster, name, ns, spec(ref, values))
    hr = wait_for_condition(cluster, ns, name, "Ready", reason="UpgradeSucceeded", timeout=90)
    assert hr["status"]["release"]["revision"] == 2
    assert not condition(hr, "Stalled")
    history = json.loads(cluster.helm("history", name, "-n", ns, "-o", "json").stdout)
    assert [(h["revision"], h["status"]) for h in history] == [(1, "superseded"), (2, "deployed")]
    config = get_json(cluster, "configmap", f"{name}-config", "-n", ns)
    assert config["data"]["greeting"] == values["greeting"]


def test_broken_template_keeps_the_previous_revision(
    cluster: Cluster, rudder: OperatorProcess, charts: dict[str, str]
) -> None:
    ns = unique("broken-tpl")
    before = install_revision_one(cluster, ns, "tpl", charts["good"])

    apply_helmrelease(cluster, "tpl", ns, spec(charts["broken"], {"greeting": "two"}))
    hr = wait_for_condition(
        cluster, ns, "tpl", "Ready", status="False", reason="RenderFailed", timeout=90
    )
    message = condition(hr, "Ready")["message"]
    # Helm's own message, naming the template and the cause.
    assert 'function "nosuchfunc" not defined' in message, message
    assert "guarded/templates/broken.yaml" in message, message
    stalled = condition(hr, "Stalled")
    assert (stalled.get("status"), stalled.get("reason")) == ("True", "RenderFailed")
    assert not condition(hr, "Reconciling")
    assert hr["status"]["release"]["revision"] == 1
    wait_for(
        lambda: "RenderFailed" in warning_reasons(cluster, ns, "tpl"),
        timeout=30,
        what="a RenderFailed warning event",
    )
    assert not get_json(cluster, "configmap", "tpl-broken", "-n", ns)
    assert_nothing_changed(cluster, ns, "tpl", before)

    recover(cluster, ns, "tpl", charts["good"], {"greeting": "two"})


def test_schema_violation_keeps_the_previous_revision(
    cluster: Cluster, rudder: OperatorProcess, charts: dict[str, str]
) -> None:
    ns = unique("schema")
    before = install_revision_one(cluster, ns, "sch", charts["good"])

    apply_helmrelease(cluster, "sch", ns, spec(charts["good"], {"greeting": "two", "replicas": 0}))
    hr = wait_for_condition(
        cluster, ns, "sch", "Ready", status="False", reason="ValuesInvalid", timeout=90
    )
    message = condition(hr, "Ready")["message"]
    # Helm's values.schema.json message: which chart, which path, what was wrong.
    assert "values don't meet the specifications of the schema" in message, message
    assert "/replicas" in message, message
    assert "minimum" in message, message
    stalled = condition(hr, "Stalled")
    assert (stalled.get("status"), stalled.get("reason")) == ("True", "ValuesInvalid")
    assert hr["status"]["release"]["revision"] == 1
    wait_for(
        lambda: "ValuesInvalid" in warning_reasons(cluster, ns, "sch"),
        timeout=30,
        what="a ValuesInvalid warning event",
    )
    assert_nothing_changed(cluster, ns, "sch", before)

    recover(cluster, ns, "sch", charts["good"], {"greeting": "two", "replicas": 2})
    assert get_json(cluster, "deployment", "sch", "-n", ns)["spec"]["replicas"] == 2


def test_missing_values_secret_waits_then_converges_when_it_appears(
    cluster: Cluster, rudder: OperatorProcess, charts: dict[str, str]
) -> None:
    ns = unique("missing-src")
    before = install_revision_one(cluster, ns, "src", charts["good"])

    def with_source(attempt: int) -> dict[str, Any]:
        return spec(
            charts["good"],
            {"greeting": "inline", "attempt": attempt},
            valuesFrom=[{"kind": "Secret", "name": "src-overrides"}],
            interval="10m",
        )

    apply_helmrelease(cluster, "src", ns, with_source(0))
    hr = wait_for_condition(
        cluster, ns, "src", "Ready", status="False", reason="ValuesSourceNotFound", timeout=90
    )
    message = condition(hr, "Ready")["message"]
    assert f"Secret {ns}/src-overrides" in message, message
    assert hr["status"]["release"]["revision"] == 1
    assert_nothing_changed(cluster, ns, "src", before)

    # Each new generation fails again, so rudder's retry backoff (2 s doubling per failure,
    # capped by the 10m interval) is now well over a minute: a quick convergence below can
    # only come from rudder watching the Secret it references.
    for attempt in range(1, 7):
        apply_helmrelease(cluster, "src", ns, with_source(attempt))
        wait_for_condition(
            cluster, ns, "src", "Ready", status="False", reason="ValuesSourceNotFound"
        )
    assert_nothing_changed(cluster, ns, "src", before)
    generation = get_json(cluster, "helmrelease", "src", "-n", ns)["metadata"]["generation"]

    cluster.kubectl(
        "create", "secret", "generic", "src-overrides", "-n", ns,
        "--from-literal=values.yaml=greeting: from-secret\nreplicas: 3\n",
    )  # fmt: skip
    hr = wait_for_condition(cluster, ns, "src", "Ready", reason="UpgradeSucceeded", timeout=20)
    assert hr["metadata"]["generation"] == generation, "the spec was not supposed to change"
    assert hr["status"]["release"]["revision"] == 2
    # valuesFrom first, then spec.values on top.
    config = get_json(cluster, "configmap", "src-config", "-n", ns)
    assert config["data"]["greeting"] == "inline"
    assert get_json(cluster, "deployment", "src", "-n", ns)["spec"]["replicas"] == 3
    history = json.loads(cluster.helm("history", "src", "-n", ns, "-o", "json").stdout)
    assert [(h["revision"], h["status"]) for h in history] == [(1, "superseded"), (2, "deployed")]
