"""The pure parts of drift detection: which paths the chart sets, who owns a path, ignore
rules, and which list items a correction hands over (and to whom)."""

from __future__ import annotations

import copy
from typing import Any, cast

import pytest

from rudder.kube.ssa import Applier, ObjectRef
from rudder.model import DriftIgnoreRule, DriftIgnoreTarget
from rudder.reconcile.drift_correct import correct
from rudder.reconcile.drift_detect import DriftedObject, chart_paths, ignored, owners
from rudder.reconcile.drift_list_items import ForeignItem, foreign_items, hand_over

DRIFT = ("kubectl", "kubectl-edit", "kubectl-patch", "kubectl-set", "helm")
DEPLOYMENT = ObjectRef("apps/v1", "Deployment", "apps", "web")
SERVICE = ObjectRef("v1", "Service", "apps", "web")


def entry(
    manager: str, fields: dict[str, Any], operation: str = "Update", api_version: str = "v1"
) -> dict[str, Any]:
    return {
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    }


# -- chart_paths, owners, ignored ---------------------------------------------------------


def test_chart_paths_are_leaves_with_lists_whole_and_without_identity_or_status() -> None:
    obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "apps", "labels": {"app": "web"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}], "extra": {}},
        "status": {"loadBalancer": {}},
    }
    assert chart_paths(obj) == [
        ("metadata", "labels", "app"),
        ("spec", "selector", "app"),
        ("spec", "ports"),
        ("spec", "extra"),
    ]


def test_owners_are_the_managers_claiming_the_path_or_below_it() -> None:
    managed = [
        entry("rudder", {"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {}}}}, "Apply"),
        entry("kubectl-edit", {"f:spec": {"f:template": {"f:spec": {"f:containers": {}}}}}),
        entry("hpa", {"f:spec": {"f:replicas": {}}}),
        {"manager": "no-fields", "operation": "Update"},
    ]
    assert owners(managed, ("spec", "replicas")) == {"rudder", "hpa"}
    assert owners(managed, ("spec", "template", "spec", "containers")) == {"kubectl-edit"}
    assert owners(managed, ("spec", "template")) == {"rudder", "kubectl-edit"}
    assert owners(managed, ("spec", "paused")) == set()


@pytest.mark.parametrize(
    ("rule", "ref", "path", "expected"),
    [
        (DriftIgnoreRule(("/spec/replicas",)), DEPLOYMENT, ("spec", "replicas"), True),
        (DriftIgnoreRule(("/spec",)), DEPLOYMENT, ("spec", "replicas"), True),
        (DriftIgnoreRule(("/spec/",)), DEPLOYMENT, ("spec", "replicas"), True),
        (DriftIgnoreRule(("/spec/rep",)), DEPLOYMENT, ("spec", "replicas"), False),
        (
            DriftIgnoreRule(("/spec/replicas",), DriftIgnoreTarget(kind="StatefulSet")),
            DEPLOYMENT,
            ("spec", "replicas"),
            False,
        ),
        (
            DriftIgnoreRule(("/spec/replicas",), DriftIgnoreTarget(kind="Deployment", name="web")),
            DEPLOYMENT,
            ("spec", "replicas"),
            True,
        ),
        (
            DriftIgnoreRule(("/spec/ports",), DriftIgnoreTarget(group="")),
            SERVICE,
            ("spec", "ports"),
            True,
        ),
        (
            DriftIgnoreRule(("/spec/ports",), DriftIgnoreTarget(group="apps")),
            SERVICE,
            ("spec", "ports"),
            False,
        ),
        (
            DriftIgnoreRule(("/metadata/annotations/a~1b",)),
            SERVICE,
            ("metadata", "annotations", "a/b"),
            True,
        ),
    ],
)
def test_ignore_rules(
    rule: DriftIgnoreRule, ref: ObjectRef, path: tuple[str, ...], expected: bool
) -> None:
    assert ignored([rule], ref, path) is expected


# -- foreign list items -------------------------------------------------------------------

SERVICE_CHART = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web"},
    "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]},
}
PORT_80 = 'k:{"port":80,"protocol":"TCP"}'
PORT_8081 = 'k:{"port":8081,"protocol":"TCP"}'
PORT_FIELDS = {".": {}, "f:name": {}, "f:port": {}, "f:protocol": {}, "f:targetPort": {}}


def service_live(*ports: int) -> dict[str, Any]:
    items = [{"name": "http", "port": p, "protocol": "TCP", "targetPort": 80} for p in ports]
    return {**SERVICE_CHART, "spec": {"selector": {"app": "web"}, "ports": items}}


def test_a_renamed_port_is_foreign_and_named_by_its_key() -> None:
    """`kubectl patch` of the port number: the server moved the item to kubectl-patch."""
    managed = [
        entry("rudder", {"f:spec": {"f:selector": {}}}, "Apply"),
        entry("kubectl-patch", {"f:spec": {"f:ports": {PORT_8081: PORT_FIELDS}}}),
    ]
    (item,) = foreign_items(SERVICE_CHART, service_live(8081), managed, DRIFT)
    assert item.keys == ("f:spec", "f:ports", PORT_8081)
    assert item.owners == {"kubectl-patch"}
    assert item.text == "/spec/ports[port=8081,protocol=TCP]"
    assert item.list_path == ("spec", "ports")


def test_the_charts_item_matches_without_the_key_fields_the_server_defaults() -> None:
    """The chart leaves out the protocol; the live key has it: still the chart's item."""
    managed = [
        entry("rudder", {"f:spec": {"f:ports": {PORT_80: PORT_FIELDS}}}, "Apply"),
        entry("kubectl", {"f:spec": {"f:ports": {PORT_80: {"f:targetPort": {}}}}}, "Apply"),
    ]
    assert foreign_items(SERVICE_CHART, service_live(80), managed, DRIFT) == []


@pytest.mark.parametrize(
    "item_owners",
    [
        ["injector"],  # another controller's item
        ["kubectl-patch", "injector"],  # a person and a controller: the controller's too
        ["rudder"],  # rudder's own (a leftover of an older revision) is not drift
    ],
)
def test_an_item_any_manager_outside_the_drift_managers_owns_is_never_foreign(
    item_owners: list[str],
) -> None:
    managed = [entry("rudder", {"f:spec": {"f:ports": {PORT_80: PORT_FIELDS}}}, "Apply")]
    managed += [entry(m, {"f:spec": {"f:ports": {PORT_8081: PORT_FIELDS}}}) for m in item_owners]
    assert foreign_items(SERVICE_CHART, service_live(80, 8081), managed, DRIFT) == []


def test_an_entry_recorded_in_another_api_version_is_left_out() -> None:
    managed = [entry("kubectl-patch", {"f:spec": {"f:ports": {PORT_8081: PORT_FIELDS}}})]
    managed[0]["apiVersion"] = "v2"
    assert foreign_items(SERVICE_CHART, service_live(8081), managed, DRIFT) == []


def test_an_entry_for_an_item_no_longer_live_is_ignored() -> None:
    managed = [entry("kubectl-patch", {"f:spec": {"f:ports": {PORT_8081: PORT_FIELDS}}})]
    assert foreign_items(SERVICE_CHART, service_live(80), managed, DRIFT) == []


DEPLOYMENT_CHART = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web"},
    "spec": {
        "template": {
            "spec": {
                "containers": [
                    {"name": "app", "image": "app:1", "env": [{"name": "GREETING", "value": "hi"}]}
                ]
            }
        }
    },
}
APP = 'k:{"name":"app"}'


def deployment(containers: dict[str, Any]) -> dict[str, Any]:
    return {"f:spec": {"f:template": {"f:spec": {"f:containers": containers}}}}


def deployment_live(containers: list[dict[str, Any]]) -> dict[str, Any]:
    live = copy.deepcopy(DEPLOYMENT_CHART)
    live["spec"]["template"]["spec"]["containers"] = containers
    return live


def test_a_renamed_container_is_foreign() -> None:
    renamed = 'k:{"name":"renamed"}'
    managed = [
        entry("rudder", {"f:spec": {"f:selector": {}}}, "Apply", "apps/v1"),
        entry(
            "kubectl-patch",
            deployment({renamed: {".": {}, "f:name": {}, "f:image": {}}}),
            api_version="apps/v1",
        ),
    ]
    live = deployment_live([{"name": "renamed", "image": "app:1"}])
    (item,) = foreign_items(DEPLOYMENT_CHART, live, managed, DRIFT)
    assert item.text == "/spec/template/spec/containers[name=renamed]"
    assert item.list_path == ("spec", "template", "spec", "containers")


def test_a_renamed_env_var_inside_the_charts_container_is_foreign() -> None:
    """Lists inside an item the chart sets are looked into, one level after another."""
    managed = [
        entry(
            "rudder",
            deployment({APP: {".": {}, "f:name": {}, "f:env": {'k:{"name":"GREETING"}': {}}}}),
            "Apply",
            "apps/v1",
        ),
        entry(
            "kubectl-set",
            deployment({APP: {"f:env": {'k:{"name":"EXTRA"}': {".": {}}}}}),
            api_version="apps/v1",
        ),
        entry(
            "injector",
            deployment({APP: {"f:env": {'k:{"name":"INJECTED"}': {".": {}}}}}),
            api_version="apps/v1",
        ),
    ]
    env = [{"name": "GREETING", "value": "hi"}, {"name": "EXTRA"}, {"name": "INJECTED"}]
    live = deployment_live([{"name": "app", "image": "app:1", "env": env}])
    (item,) = foreign_items(DEPLOYMENT_CHART, live, managed, DRIFT)
    assert item.keys[-3:] == (APP, "f:env", 'k:{"name":"EXTRA"}')
    assert item.text == "/spec/template/spec/containers[name=app]/env[name=EXTRA]"
    assert item.list_path == ("spec", "template", "spec", "containers")
    assert item.owners == {"kubectl-set"}


def test_a_set_items_value_is_its_key() -> None:
    chart = {"apiVersion": "v1", "kind": "X", "spec": {"modes": ["a"]}}
    live = {"apiVersion": "v1", "kind": "X", "spec": {"modes": ["a", "b"]}}
    managed = [
        entry("rudder", {"f:spec": {"f:modes": {'v:"a"': {}}}}, "Apply"),
        entry("kubectl-edit", {"f:spec": {"f:modes": {'v:"b"': {}}}}),
    ]
    (item,) = foreign_items(chart, live, managed, DRIFT)
    assert item.text == '/spec/modes["b"]'


def test_metadata_lists_are_not_the_charts() -> None:
    chart = {"apiVersion": "v1", "kind": "X", "metadata": {"finalizers": ["a"]}}
    live = {"apiVersion": "v1", "kind": "X", "metadata": {"finalizers": ["a", "b"]}}
    managed = [entry("kubectl-edit", {"f:metadata": {"f:finalizers": {'v:"b"': {}}}})]
    assert foreign_items(chart, live, managed, DRIFT) == []


# -- hand_over: what the correction writes to managedFields -------------------------------


def test_hand_over_moves_the_item_to_rudders_apply_entry_and_drops_an_emptied_entry() -> None:
    kubectl = entry("kubectl-patch", {"f:spec": {"f:ports": {PORT_8081: PORT_FIELDS}}})
    ours = entry("rudder", {"f:spec": {"f:selector": {}}}, "Apply")
    other = entry("kube-controller-manager", {"f:spec": {"f:clusterIP": {}}})
    managed = [ours, kubectl, other]
    before = copy.deepcopy(managed)
    item = ForeignItem(("f:spec", "f:ports", PORT_8081), frozenset({"kubectl-patch"}))

    result = hand_over(managed, [item], field_manager="rudder", api_version="v1")

    assert managed == before  # the input is left alone
    assert [e["manager"] for e in result] == ["rudder", "kube-controller-manager"]
    assert result[0]["fieldsV1"] == {
        "f:spec": {"f:selector": {}, "f:ports": {PORT_8081: PORT_FIELDS}}
    }
    assert result[1] == other


def test_hand_over_leaves_no_empty_parent_behind() -> None:
    """An empty node in fieldsV1 claims the field itself: the donor must not gain
    /spec/template/spec/containers[name=app]/env as if it had set the whole list."""
    extra = 'k:{"name":"EXTRA"}'
    donor = entry(
        "kubectl-set",
        {
            "f:metadata": {"f:annotations": {"f:note": {}}},
            **deployment({APP: {"f:env": {extra: {}}}}),
        },
    )
    greeting = 'k:{"name":"GREETING"}'
    ours = entry("rudder", deployment({APP: {"f:image": {}, "f:env": {greeting: {}}}}), "Apply")
    item = ForeignItem(
        ("f:spec", "f:template", "f:spec", "f:containers", APP, "f:env", extra),
        frozenset({"kubectl-set"}),
    )
    result = hand_over([ours, donor], [item], field_manager="rudder", api_version="apps/v1")
    assert result[1]["fieldsV1"] == {"f:metadata": {"f:annotations": {"f:note": {}}}}
    assert result[0]["fieldsV1"] == deployment(
        {APP: {"f:image": {}, "f:env": {greeting: {}, extra: {}}}}
    )


def test_hand_over_takes_from_every_owner_entry_and_creates_rudders_entry_if_needed() -> None:
    item = ForeignItem(("f:spec", "f:ports", PORT_8081), frozenset({"kubectl", "kubectl-patch"}))
    managed = [
        entry("kubectl", {"f:spec": {"f:ports": {PORT_8081: {"f:port": {}}}}}, "Apply"),
        entry("kubectl-patch", {"f:spec": {"f:ports": {PORT_8081: {"f:targetPort": {}}}}}),
        entry("rudder", {"f:spec": {"f:ports": {PORT_80: {}}}}),  # an Update entry: not ours
    ]
    result = hand_over(managed, [item], field_manager="rudder", api_version="v1")
    assert [(e["manager"], e["operation"]) for e in result] == [
        ("rudder", "Update"),
        ("rudder", "Apply"),
    ]
    assert result[0] == managed[2]
    assert result[1]["apiVersion"] == "v1"
    assert result[1]["fieldsV1"] == {
        "f:spec": {"f:ports": {PORT_8081: {"f:port": {}, "f:targetPort": {}}}}
    }


# -- how a drifted object reads in status ---------------------------------------------------


def test_a_rejected_dry_run_is_reported_with_the_servers_message_and_the_foreign_items() -> None:
    item = ForeignItem(("f:spec", "f:ports", PORT_8081), frozenset({"kubectl-patch"}))
    message = 'Service "web" is invalid: spec.ports[1].name: Duplicate value: "http"'
    drifted = DriftedObject(SERVICE, (), foreign=(item,), rejected=message)
    assert drifted.as_status()["fields"] == [
        f"(dry-run rejected: {message})",
        "/spec/ports[port=8081,protocol=TCP]",
    ]
    assert str(drifted) == (
        f"Service/apps/web /spec/ports[port=8081,protocol=TCP] (dry-run rejected: {message})"
    )
    assert DriftedObject(SERVICE, (), missing=True).as_status()["fields"] == ["(missing)"]
    assert str(DriftedObject(DEPLOYMENT, ("/spec/replicas",))) == (
        "Deployment/apps/web /spec/replicas"
    )


# -- correct: which requests it makes -------------------------------------------------------


class FakeApplier:
    """Records what `correct` asks of the API; answers `get` with one live object."""

    field_manager = "rudder"

    def __init__(self, live: dict[str, Any]) -> None:
        self.live = live
        self.calls: list[tuple[str, Any]] = []
        self.kube = self

    async def get(self, ref: ObjectRef) -> dict[str, Any]:
        self.calls.append(("get", str(ref)))
        return self.live

    async def path_of(self, ref: ObjectRef) -> str:
        return f"/api/v1/namespaces/{ref.namespace}/services/{ref.name}"

    async def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        self.calls.append((method, kwargs["body"]))
        return {}

    async def apply(self, obj: dict[str, Any], *, force: bool = False) -> dict[str, Any]:
        self.calls.append(("apply", force))
        return obj


REJECTED = 'Service "web" is invalid: spec.ports[1].name: Duplicate value: "http"'


async def test_a_refused_dry_run_with_nothing_to_hand_over_is_not_retried() -> None:
    fake = FakeApplier({})
    drifted = DriftedObject(SERVICE, (), desired=SERVICE_CHART, rejected=REJECTED)
    (failed,) = await correct(cast(Applier, fake), [drifted], DRIFT)
    assert fake.calls == []
    assert str(failed) == (
        "Service/apps/web: cannot be corrected automatically: the API server rejects the "
        f"chart's object ({REJECTED})"
    )


async def test_foreign_items_are_handed_over_under_a_resource_version_test_then_applied() -> None:
    managed = [
        entry("rudder", {"f:spec": {"f:selector": {}}}, "Apply"),
        entry("kubectl-patch", {"f:spec": {"f:ports": {PORT_8081: PORT_FIELDS}}}),
    ]
    live = service_live(8081)
    live["metadata"] = {"name": "web", "resourceVersion": "42", "managedFields": managed}
    item = ForeignItem(("f:spec", "f:ports", PORT_8081), frozenset({"kubectl-patch"}))
    drifted = DriftedObject(SERVICE, (), desired=SERVICE_CHART, foreign=(item,), rejected=REJECTED)
    fake = FakeApplier(live)
    assert await correct(cast(Applier, fake), [drifted], DRIFT) == []
    get, (method, patch), apply = fake.calls
    assert get == ("get", "Service/apps/web")
    assert method == "PATCH"
    assert patch[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "42"}
    assert patch[1]["path"] == "/metadata/managedFields"
    assert [e["manager"] for e in patch[1]["value"]] == ["rudder"]
    assert apply == ("apply", True)
