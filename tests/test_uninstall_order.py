"""The order `helm uninstall` deletes a release's objects in, and the CRD kinds it spares.

The judge is Helm v4 (`pkg/release/v1/util/kind_sorter.go` and `pkg/action/uninstall.go`):
the stored manifest is split into documents, sorted stably by kind with `UninstallOrder`
(unknown kinds after every known kind, alphabetical among themselves, file order kept for
one kind), and documents with a `helm.sh/resource-policy` annotation are not deleted.
"""

from __future__ import annotations

import json
import random

import pytest

from rudder.reconcile.uninstall import crd_kinds
from rudder.release.codec import Chart, ChartFile, ChartMetadata, Info, Release, release_secret
from rudder.release.manifest import kept_on_uninstall, uninstall_order
from rudder.release.store import Record

# Helm v4's UninstallOrder, kind by kind (the facts of kind_sorter.go).
HELM_UNINSTALL_ORDER = [
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "APIService",
    "Ingress",
    "IngressClass",
    "Service",
    "CronJob",
    "Job",
    "StatefulSet",
    "HorizontalPodAutoscaler",
    "Deployment",
    "ReplicaSet",
    "ReplicationController",
    "Pod",
    "DaemonSet",
    "RoleBindingList",
    "RoleBinding",
    "RoleList",
    "Role",
    "ClusterRoleBindingList",
    "ClusterRoleBinding",
    "ClusterRoleList",
    "ClusterRole",
    "CustomResourceDefinition",
    "PersistentVolumeClaim",
    "PersistentVolume",
    "StorageClass",
    "ConfigMap",
    "SecretList",
    "Secret",
    "ServiceAccount",
    "PodDisruptionBudget",
    "PodSecurityPolicy",
    "LimitRange",
    "ResourceQuota",
    "NetworkPolicy",
    "Namespace",
    "PriorityClass",
]


def doc(kind: str, name: str, annotations: dict[str, str] | None = None) -> str:
    """One object as a chart renders it."""
    lines = ["apiVersion: v1", f"kind: {kind}", "metadata:", f"  name: {name}"]
    if annotations:
        lines.append("  annotations:")
        lines += [
            f"    {json.dumps(key)}: {json.dumps(value)}" for key, value in annotations.items()
        ]
    return "\n".join(lines)


def stored(*documents: str, path: str = "app/templates/all.yaml") -> str:
    """A `release.manifest` as Helm stores it: `---`, a Source comment, the document."""
    return "".join(f"---\n# Source: {path}\n{document}\n" for document in documents)


def kinds_and_names(manifest: str) -> list[tuple[str, str]]:
    return [(m.kind, m.name) for m in uninstall_order(manifest)]


# --- known kinds ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_kind_helm_knows_is_deleted_in_helms_uninstall_order(seed: int) -> None:
    kinds = list(HELM_UNINSTALL_ORDER)
    random.Random(seed).shuffle(kinds)  # noqa: S311 - a fixed shuffle, not crypto
    manifest = stored(*(doc(kind, kind.lower()) for kind in kinds))
    assert [m.kind for m in uninstall_order(manifest)] == HELM_UNINSTALL_ORDER


def test_objects_stored_in_install_order_come_out_in_uninstall_order() -> None:
    # What a release actually stores: the install order (Namespace first, webhooks last).
    manifest = stored(
        doc("Namespace", "ns"),
        doc("ServiceAccount", "sa"),
        doc("Secret", "creds"),
        doc("ConfigMap", "config"),
        doc("CustomResourceDefinition", "widgets.example.com"),
        doc("ClusterRole", "reader"),
        doc("RoleBinding", "binding"),
        doc("Service", "web"),
        doc("Deployment", "web"),
        doc("Ingress", "web"),
        doc("ValidatingWebhookConfiguration", "validate"),
    )
    assert kinds_and_names(manifest) == [
        ("ValidatingWebhookConfiguration", "validate"),
        ("Ingress", "web"),
        ("Service", "web"),
        ("Deployment", "web"),
        ("RoleBinding", "binding"),
        ("ClusterRole", "reader"),
        ("CustomResourceDefinition", "widgets.example.com"),
        ("ConfigMap", "config"),
        ("Secret", "creds"),
        ("ServiceAccount", "sa"),
        ("Namespace", "ns"),
    ]


def test_webhooks_go_first_validating_before_mutating() -> None:
    # A webhook left behind while the objects it watches are deleted could block deletion.
    manifest = stored(
        doc("Deployment", "webhook-server"),
        doc("MutatingWebhookConfiguration", "mutate"),
        doc("Service", "webhook-server"),
        doc("ValidatingWebhookConfiguration", "validate"),
    )
    assert [kind for kind, _ in kinds_and_names(manifest)] == [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "Service",
        "Deployment",
    ]


def test_services_go_before_the_workloads_behind_them_unlike_a_reversed_install() -> None:
    # Install order puts Service after the RBAC kinds and before DaemonSet; uninstall
    # takes Services out first of all the workload kinds.
    manifest = stored(
        doc("Role", "r"),
        doc("Service", "svc"),
        doc("DaemonSet", "ds"),
        doc("CronJob", "cron"),
    )
    assert [kind for kind, _ in kinds_and_names(manifest)] == [
        "Service",
        "CronJob",
        "DaemonSet",
        "Role",
    ]


def test_the_namespace_and_priority_class_are_deleted_last() -> None:
    manifest = stored(
        doc("PriorityClass", "high"),
        doc("Namespace", "apps"),
        doc("NetworkPolicy", "deny-all"),
        doc("Pod", "p"),
    )
    assert [kind for kind, _ in kinds_and_names(manifest)] == [
        "Pod",
        "NetworkPolicy",
        "Namespace",
        "PriorityClass",
    ]


# --- unknown kinds and equal kinds ----------------------------------------------------------


def test_unknown_kinds_follow_every_known_kind_alphabetically() -> None:
    manifest = stored(
        doc("Widget", "w"),
        doc("PriorityClass", "high"),
        doc("Certificate", "cert"),
        doc("ConfigMap", "cm"),
        doc("ServiceMonitor", "sm"),
    )
    assert kinds_and_names(manifest) == [
        ("ConfigMap", "cm"),
        ("PriorityClass", "high"),
        ("Certificate", "cert"),
        ("ServiceMonitor", "sm"),
        ("Widget", "w"),
    ]


def test_kinds_match_case_sensitively_and_unknown_ones_sort_by_bytes() -> None:
    # Go compares kinds as byte strings: upper case sorts before lower case, and a kind
    # spelled in the wrong case is not the known kind.
    manifest = stored(
        doc("configmap", "lower"),
        doc("Zebra", "z"),
        doc("ConfigMap", "proper"),
    )
    assert kinds_and_names(manifest) == [
        ("ConfigMap", "proper"),
        ("Zebra", "z"),
        ("configmap", "lower"),
    ]


def test_objects_of_one_kind_keep_their_stored_order() -> None:
    manifest = stored(
        doc("Deployment", "c-first"),
        doc("Service", "b-svc"),
        doc("Deployment", "a-second"),
        doc("Widget", "z-first"),
        doc("Service", "a-svc"),
        doc("Widget", "a-second"),
        doc("Deployment", "b-third"),
    )
    assert kinds_and_names(manifest) == [
        ("Service", "b-svc"),
        ("Service", "a-svc"),
        ("Deployment", "c-first"),
        ("Deployment", "a-second"),
        ("Deployment", "b-third"),
        ("Widget", "z-first"),
        ("Widget", "a-second"),
    ]


def test_documents_from_several_template_files_are_ordered_as_one_stream() -> None:
    manifest = stored(doc("Deployment", "web"), path="app/templates/deploy.yaml") + stored(
        doc("ConfigMap", "config"), doc("Service", "web"), path="app/templates/svc.yaml"
    )
    assert kinds_and_names(manifest) == [
        ("Service", "web"),
        ("Deployment", "web"),
        ("ConfigMap", "config"),
    ]


# --- what is not deleted --------------------------------------------------------------------


def test_documents_with_a_resource_policy_are_not_deleted_and_keep_ones_are_reported() -> None:
    manifest = stored(
        doc("Secret", "kept", {"helm.sh/resource-policy": "keep"}),
        doc("PersistentVolumeClaim", "data", {"helm.sh/resource-policy": "KEEP"}),
        doc("ConfigMap", "other-policy", {"helm.sh/resource-policy": "retain"}),
        doc("ConfigMap", "annotated", {"example.com/team": "a"}),
        doc("Deployment", "web"),
    )
    assert kinds_and_names(manifest) == [("Deployment", "web"), ("ConfigMap", "annotated")]
    assert [(m.kind, m.name) for m in kept_on_uninstall(manifest)] == [
        ("PersistentVolumeClaim", "data"),
        ("Secret", "kept"),
    ]


def test_a_hook_document_in_the_manifest_is_not_deleted_with_the_release() -> None:
    # Helm's uninstall sorts the stored manifest and drops what parses as a hook.
    manifest = stored(
        doc("Job", "migrate", {"helm.sh/hook": "pre-upgrade"}),
        doc("Deployment", "web"),
    )
    assert kinds_and_names(manifest) == [("Deployment", "web")]


def test_a_comment_only_document_names_no_object_to_delete() -> None:
    manifest = stored("# nothing rendered here", doc("ConfigMap", "cm"))
    order = uninstall_order(manifest)
    assert [m.resource is None for m in order] == [False, True]
    assert order[0].resource == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cm"},
    }


def test_an_empty_manifest_deletes_nothing() -> None:
    assert uninstall_order("") == []


# --- crd_kinds ------------------------------------------------------------------------------


def crd(group: str, kind: str, plural: str) -> str:
    return (
        "apiVersion: apiextensions.k8s.io/v1\n"
        "kind: CustomResourceDefinition\n"
        "metadata:\n"
        f"  name: {plural}.{group}\n"
        "spec:\n"
        f"  group: {group}\n"
        "  names:\n"
        f"    kind: {kind}\n"
        f"    plural: {plural}\n"
        "  scope: Namespaced\n"
    )


def record(files: list[ChartFile] | None, *, chart: bool = True) -> Record:
    """A release record as read back from its Secret (encoded, then decoded)."""
    release = Release(
        name="app",
        version=1,
        namespace="apps",
        info=Info(status="deployed"),
        chart=Chart(metadata=ChartMetadata(name="app", version="1.0.0"), files=files)
        if chart
        else None,
        manifest=stored(doc("ConfigMap", "cm")),
    )
    return Record(release_secret(release))


def test_crd_kinds_names_every_crd_the_chart_ships_in_crds() -> None:
    crd_json = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "spec": {"group": "db.example.com", "names": {"kind": "Database"}},
    }
    files = [
        ChartFile(name="crds/widgets.yaml", data=crd("example.com", "Widget", "widgets").encode()),
        # Several CRDs in one file, a separator with a comment, a JSON file.
        ChartFile(
            name="crds/more.yaml",
            data=(
                crd("example.com", "Gadget", "gadgets")
                + "--- # the next one\n"
                + crd("other.io", "Gizmo", "gizmos")
            ).encode(),
        ),
        ChartFile(name="crds/db.json", data=json.dumps(crd_json).encode()),
    ]
    assert crd_kinds(record(files)) == {
        ("example.com", "Widget"),
        ("example.com", "Gadget"),
        ("other.io", "Gizmo"),
        ("db.example.com", "Database"),
    }


def test_crd_kinds_ignores_what_is_not_a_crd_in_crds() -> None:
    files = [
        # A CRD outside crds/ is an ordinary file (or a template), not a chart CRD.
        ChartFile(name="files/widgets.yaml", data=crd("example.com", "Widget", "w").encode()),
        ChartFile(name="README.md", data=crd("example.com", "Readme", "readmes").encode()),
        # Other kinds, broken YAML and a non-mapping in crds/ name no CRD (and do not raise).
        ChartFile(name="crds/configmap.yaml", data=doc("ConfigMap", "cm").encode()),
        ChartFile(name="crds/broken.yaml", data=b"kind: [CustomResourceDefinition\n"),
        ChartFile(name="crds/list.yaml", data=b"- kind: CustomResourceDefinition\n"),
        ChartFile(name="crds/real.yaml", data=crd("example.com", "Real", "reals").encode()),
    ]
    assert crd_kinds(record(files)) == {("example.com", "Real")}


def test_crd_kinds_of_a_record_without_chart_files_is_empty() -> None:
    assert crd_kinds(record(None)) == set()
    assert crd_kinds(record([])) == set()
    assert crd_kinds(record(None, chart=False)) == set()
