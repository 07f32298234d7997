"""Values from ConfigMaps and Secrets (`spec.valuesFrom`), merged in order with `spec.values`
on top by Helm's rules; a change to a referenced source upgrades the release by itself; and
what comes from a Secret never shows in the HelmRelease's status, its events or rudder's log."""

from __future__ import annotations

import base64
import json
import re
import uuid
from typing import Any

import pytest

from charts import push, write_chart
from conftest import Cluster
from helpers import (
    apply_helmrelease,
    condition,
    get_json,
    helmrelease,
    unique,
    wait_for,
    wait_for_condition,
)
from operator_process import OperatorProcess

pytestmark = pytest.mark.e2e

TEMPLATES = {
    "settings.yaml": """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-settings
data:
  greeting: {{ .Values.greeting | quote }}
  color: {{ .Values.color | quote }}
  tier: {{ .Values.tier | quote }}
  dbHost: {{ .Values.db.host | quote }}
  dbPort: {{ .Values.db.port | quote }}
  list: {{ toJson .Values.list | quote }}
  hasIngress: {{ hasKey .Values "ingress" | quote }}
""",
    "credentials.yaml": """apiVersion: v1
kind: Secret
metadata:
  name: {{ .Release.Name }}-credentials
type: Opaque
stringData:
  password: {{ .Values.db.password | quote }}
  token: {{ .Values.auth.token | quote }}
""",
}
DEFAULTS = {
    "greeting": "hello",
    "color": "blue",
    "tier": "free",
    "list": ["x"],
    "ingress": {"enabled": True, "host": "chart.example.test"},
    "db": {"host": "localhost", "port": 5432, "password": ""},
    "auth": {"token": ""},
}
SCHEMA = {
    "type": "object",
    "properties": {
        "auth": {
            "type": "object",
            "properties": {"token": {"type": "string", "pattern": "^(|tok-[a-z0-9]+)$"}},
        }
    },
}
VALUES_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def secret_value(prefix: str) -> str:
    """Something that cannot occur anywhere by chance."""
    return f"{prefix}{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def chart_ref(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("values-chart")
    return push(
        cluster.registry, write_chart(root, "vals", "1.0.0", TEMPLATES, DEFAULTS, schema=SCHEMA)
    )


def create_configmap(cluster: Cluster, ns: str, name: str, data: dict[str, str]) -> None:
    cluster.kubectl(
        "apply", "-f", "-",
        input=json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": name, "namespace": ns}, "data": data}),
    )  # fmt: skip


def create_secret(cluster: Cluster, ns: str, name: str, data: dict[str, str]) -> None:
    cluster.kubectl(
        "apply", "-f", "-",
        input=json.dumps({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                          "metadata": {"name": name, "namespace": ns},
                          "data": {k: b64(v) for k, v in data.items()}}),
    )  # fmt: skip


def apply_server_side(cluster: Cluster, name: str, ns: str, spec: dict[str, Any]) -> None:
    """Client-side `kubectl apply` drops a `null` from what it sends (to it, null means
    "remove this field"); server-side apply sends the manifest as written."""
    cluster.kubectl("apply", "--server-side", "-f", "-", input=helmrelease(name, ns, spec))


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def assert_secrets_stay_secret(
    cluster: Cluster, rudder: OperatorProcess, ns: str, name: str, secrets: list[str]
) -> None:
    """No Secret-sourced value (plain or base64) in status, events or the operator log."""
    hr = cluster.kubectl("get", "helmrelease", name, "-n", ns, "-o", "json").stdout
    events = cluster.kubectl("get", "events", "-n", ns, "-o", "json").stdout
    assert json.loads(events)["items"], "no events at all: the check below would prove nothing"
    log = rudder.log_path.read_text(errors="replace")
    for value in secrets:
        for form in (value, b64(value)):
            assert form not in hr, f"a Secret value is in HelmRelease {ns}/{name}"
            assert form not in events, f"a Secret value is in the events of {ns}"
            assert form not in log, f"a Secret value is in the operator log {rudder.log_path}"


def test_values_from_sources_merge_in_order_and_follow_their_changes(
    cluster: Cluster, rudder: OperatorProcess, chart_ref: str
) -> None:
    ns = unique("values")
    cluster.kubectl("create", "namespace", ns)
    password, token, token2 = secret_value("pw"), secret_value("tok-"), secret_value("tok-")
    common = "greeting: from-common\ncolor: green\ntier: gold\nlist: [a, b]\n"
    common += "db:\n  host: db.internal\n  port: 6543\n"
    create_configmap(cluster, ns, "common", {"values.yaml": common})
    create_configmap(cluster, ns, "prod", {"prod.yaml": "tier: platinum\n"})
    credentials = f"db:\n  password: {password}\n"
    create_secret(cluster, ns, "db-creds", {"values.yaml": credentials})
    create_secret(cluster, ns, "api-token", {"token": token})

    spec = {
        "chart": {"ref": chart_ref, "insecure": True},
        "interval": "10m",
        "timeout": "60s",
        "valuesFrom": [
            {"kind": "ConfigMap", "name": "common"},
            {"kind": "ConfigMap", "name": "prod", "valuesKey": "prod.yaml"},
            {"kind": "ConfigMap", "name": "not-there", "optional": True},
            {"kind": "Secret", "name": "db-creds"},
            {
                "kind": "Secret",
                "name": "api-token",
                "valuesKey": "token",
                "targetPath": "auth.token",
            },
            {"kind": "Secret", "name": "not-there-either", "optional": True},
        ],
        # On top: a scalar replaces, a list replaces, a map merges, a null deletes a default.
        "values": {"color": "red", "list": ["c"], "db": {"port": 7000}, "ingress": None},
    }
    apply_server_side(cluster, "vals", ns, spec)
    hr = wait_for_condition(cluster, ns, "vals", "Ready", reason="InstallSucceeded", timeout=90)

    # What Helm stores as the user-supplied values is the merge, nothing else.
    stored = json.loads(cluster.helm("get", "values", "vals", "-n", ns, "-o", "json").stdout)
    assert stored == {
        "greeting": "from-common",
        "color": "red",
        "tier": "platinum",
        "list": ["c"],
        "db": {"host": "db.internal", "port": 7000, "password": password},
        "auth": {"token": token},
        "ingress": None,
    }
    settings = get_json(cluster, "configmap", "vals-settings", "-n", ns)["data"]
    assert settings == {
        "greeting": "from-common",
        "color": "red",
        "tier": "platinum",
        "dbHost": "db.internal",
        "dbPort": "7000",
        "list": '["c"]',
        "hasIngress": "false",
    }
    credentials_obj = get_json(cluster, "secret", "vals-credentials", "-n", ns)["data"]
    assert credentials_obj == {"password": b64(password), "token": b64(token)}

    first_digest = hr["status"]["lastAttempted"]["valuesDigest"]
    assert VALUES_DIGEST.match(first_digest), first_digest
    assert hr["status"]["history"][0]["valuesDigest"] == first_digest
    generation = hr["metadata"]["generation"]

    # Editing a referenced ConfigMap upgrades the release; the HelmRelease is not touched
    # (and with a 10m interval, nothing else would make rudder look again this soon).
    create_configmap(
        cluster, ns, "common", {"values.yaml": common.replace("from-common", "edited")}
    )
    hr = wait_for(lambda: revision_at_least(cluster, ns, "vals", 2), timeout=30, what="revision 2")
    assert hr["metadata"]["generation"] == generation
    assert condition(hr, "Ready")["reason"] == "UpgradeSucceeded"
    assert get_json(cluster, "configmap", "vals-settings", "-n", ns)["data"]["greeting"] == "edited"
    second_digest = hr["status"]["lastAttempted"]["valuesDigest"]
    assert VALUES_DIGEST.match(second_digest), second_digest
    assert second_digest != first_digest
    newest = hr["status"]["history"][0]
    assert (newest["revision"], newest["valuesDigest"]) == (2, second_digest)

    # So does editing a referenced Secret.
    create_secret(cluster, ns, "api-token", {"token": token2})
    hr = wait_for(lambda: revision_at_least(cluster, ns, "vals", 3), timeout=30, what="revision 3")
    assert hr["metadata"]["generation"] == generation
    credentials_obj = get_json(cluster, "secret", "vals-credentials", "-n", ns)["data"]
    assert credentials_obj["token"] == b64(token2)
    assert hr["status"]["lastAttempted"]["valuesDigest"] not in (first_digest, second_digest)
    history = json.loads(cluster.helm("history", "vals", "-n", ns, "-o", "json").stdout)
    assert [(h["revision"], h["status"]) for h in history] == [
        (1, "superseded"), (2, "superseded"), (3, "deployed"),
    ]  # fmt: skip

    assert_secrets_stay_secret(cluster, rudder, ns, "vals", [password, token, token2, credentials])


def test_a_secret_value_stays_secret_when_it_fails_the_schema(
    cluster: Cluster, rudder: OperatorProcess, chart_ref: str
) -> None:
    """Helm's schema message quotes the offending value; a Secret's must not reach status,
    events or the log through it."""
    ns = unique("values-leak")
    cluster.kubectl("create", "namespace", ns)
    bad_token = secret_value("NOT-A-TOKEN-")
    create_secret(cluster, ns, "api-token", {"token": bad_token})
    spec = {
        "chart": {"ref": chart_ref, "insecure": True},
        "timeout": "60s",
        "valuesFrom": [
            {
                "kind": "Secret",
                "name": "api-token",
                "valuesKey": "token",
                "targetPath": "auth.token",
            }
        ],
    }
    apply_helmrelease(cluster, "leak", ns, spec)
    hr = wait_for_condition(
        cluster, ns, "leak", "Ready", status="False", reason="ValuesInvalid", timeout=90
    )
    # Still useful to a person: it says where the problem is.
    assert "/auth/token" in condition(hr, "Ready")["message"]
    wait_for(
        lambda: "ValuesInvalid" in cluster.kubectl("get", "events", "-n", ns).stdout,
        timeout=30,
        what="a ValuesInvalid event",
    )
    assert_secrets_stay_secret(cluster, rudder, ns, "leak", [bad_token])


def revision_at_least(cluster: Cluster, ns: str, name: str, revision: int) -> dict[str, Any]:
    hr = get_json(cluster, "helmrelease", name, "-n", ns)
    status = hr.get("status", {})
    if status.get("release", {}).get("revision", 0) < revision:
        return {}
    if condition(hr, "Ready").get("status") != "True":
        return {}
    return hr
