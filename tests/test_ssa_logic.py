"""Pure parts of the apply layer: conflict parsing and the managedFields takeover."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from rudder.kube.client import ApiError
from rudder.kube.ssa import ObjectRef, merge_field_sets, parse_conflicts, takeover_managed_fields

REF = ObjectRef("apps/v1", "Deployment", "apps", "web")


def conflict_error(*causes: dict[str, str]) -> ApiError:
    status = {
        "kind": "Status",
        "reason": "Conflict",
        "message": "Apply failed with 1 conflict",
        "details": {"causes": list(causes)},
        "code": 409,
    }
    return ApiError(409, status, "PATCH", "/apis/apps/v1/namespaces/apps/deployments/web")


def test_conflict_names_object_field_and_manager() -> None:
    error = conflict_error(
        {
            "reason": "FieldManagerConflict",
            "message": 'conflict with "hpa-sim" using apps/v1',
            "field": ".spec.replicas",
        }
    )
    (conflict,) = parse_conflicts(REF, error)
    assert conflict.as_status() == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "namespace": "apps",
        "name": "web",
        "field": ".spec.replicas",
        "manager": "hpa-sim",
    }


def test_every_conflicting_field_is_listed() -> None:
    error = conflict_error(
        {"reason": "FieldManagerConflict", "message": 'conflict with "a"', "field": ".spec.x"},
        {"reason": "FieldManagerConflict", "message": 'conflict with "b" using v1', "field": ".y"},
    )
    assert [(c.manager, c.field) for c in parse_conflicts(REF, error)] == [
        ("a", ".spec.x"),
        ("b", ".y"),
    ]


def test_a_conflict_without_causes_is_still_reported() -> None:
    (conflict,) = parse_conflicts(REF, conflict_error())
    assert conflict.name == "web"


# Field managers are names like "kubectl-client-side-apply" or "hpa-sim"; fields are paths.
managers = st.from_regex(r"[a-z][a-z0-9.:-]{0,30}", fullmatch=True)
fields = st.from_regex(r"(\.[a-zA-Z][a-zA-Z0-9]{0,12}){1,5}", fullmatch=True)


@given(st.lists(st.tuples(managers, fields), min_size=1, max_size=8))
def test_every_cause_the_server_sends_becomes_one_conflict(
    owners: list[tuple[str, str]],
) -> None:
    error = conflict_error(
        *(
            {
                "reason": "FieldManagerConflict",
                "message": f'conflict with "{manager}" using apps/v1',
                "field": field,
            }
            for manager, field in owners
        )
    )
    conflicts = parse_conflicts(REF, error)
    assert [(c.manager, c.field) for c in conflicts] == owners
    assert {(c.kind, c.namespace, c.name) for c in conflicts} == {("Deployment", "apps", "web")}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.dictionaries(st.sampled_from(["kind", "reason", "message", "details", "code"]), json_values)
)
def test_any_409_body_is_reported_without_raising(status: dict[str, Any]) -> None:
    # Proxies and webhooks can answer 409 with anything; the conflict is still surfaced.
    conflicts = parse_conflicts(REF, ApiError(409, status, "PATCH", "/x"))
    assert conflicts
    assert all(c.name == "web" for c in conflicts)


def test_field_sets_union() -> None:
    a = {"f:spec": {"f:replicas": {}, "f:template": {"f:metadata": {}}}}
    b = {"f:spec": {"f:template": {"f:spec": {}}}, "f:metadata": {}}
    assert merge_field_sets(a, b) == {
        "f:spec": {"f:replicas": {}, "f:template": {"f:metadata": {}, "f:spec": {}}},
        "f:metadata": {},
    }


MANAGED = [
    {
        "manager": "rudder",
        "operation": "Apply",
        "apiVersion": "apps/v1",
        "time": "t1",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:template": {}}},
    },
    {
        "manager": "helm",
        "operation": "Apply",
        "apiVersion": "apps/v1",
        "time": "t2",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:replicas": {}}},
    },
    {
        "manager": "helm",
        "operation": "Update",
        "apiVersion": "apps/v1",
        "time": "t3",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {"f:labels": {}}},
    },
    {
        "manager": "kube-controller-manager",
        "operation": "Update",
        "apiVersion": "apps/v1",
        "time": "t4",
        "subresource": "scale",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:replicas": {}}},
    },
]


def test_takeover_moves_helm_fields_to_rudder_and_leaves_others() -> None:
    out = takeover_managed_fields(
        MANAGED, take_from=["helm"], field_manager="rudder", api_version="apps/v1"
    )
    assert out is not None
    managers = [(e["manager"], e["operation"]) for e in out]
    assert managers == [("rudder", "Apply"), ("kube-controller-manager", "Update")]
    assert out[0]["fieldsV1"] == {
        "f:spec": {"f:template": {}, "f:replicas": {}},
        "f:metadata": {"f:labels": {}},
    }
    assert out[1] == MANAGED[3]  # the HPA's /scale entry is never touched


def test_takeover_without_donor_entries_changes_nothing() -> None:
    assert (
        takeover_managed_fields(
            MANAGED[:1], take_from=["helm"], field_manager="rudder", api_version="apps/v1"
        )
        is None
    )


def test_takeover_creates_rudder_entry_when_missing() -> None:
    out = takeover_managed_fields(
        MANAGED[1:2], take_from=["helm"], field_manager="rudder", api_version="apps/v1"
    )
    assert out == [
        {
            "manager": "rudder",
            "operation": "Apply",
            "apiVersion": "apps/v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:replicas": {}}},
        }
    ]
