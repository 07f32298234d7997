"""rudder.kube.kstatus against one fixture per rule branch of Helm's kstatus, plus properties.

Fixtures live in tests/fixtures/kstatus/*.yaml (format in the README there). When the Go
comparison binary is built (e2e/build-kstatus-compare.sh), the same fixtures also run through
Helm's own Go kstatus; e2e/test_kstatus_compare.py adds live objects from a real cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from rudder.kube.kstatus import RECONCILING, STALLED, Condition, Result, Status, compute

FIXTURES = Path(__file__).parent / "fixtures" / "kstatus"
CACHE = Path(os.environ.get("RUDDER_CACHE", Path.home() / ".cache" / "rudder"))
GO_KSTATUS = CACHE / "tools" / "kstatus-compare"


@dataclass(frozen=True)
class Case:
    id: str
    obj: dict[str, Any]
    status: str
    message: str
    reason: str | None
    condition_message: str
    go_panics: bool


def load_cases() -> list[Case]:
    cases = []
    for path in sorted(FIXTURES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            obj = document["object"]
            # A YAML date or boolean where a string was meant would silently change the case.
            assert json.loads(json.dumps(obj)) == obj, f"{path.name}: {document['case']}"
            cases.append(
                Case(
                    id=f"{path.stem}/{document['case']}",
                    obj=obj,
                    status=document["status"],
                    message=document["message"],
                    reason=document["reason"],
                    condition_message=document.get("condition_message", document["message"]),
                    go_panics=document.get("go_panics", False),
                )
            )
    return cases


CASES = load_cases()


def test_fixture_names_are_unique() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_fixture(case: Case) -> None:
    result = compute(case.obj)

    assert (result.status, result.message) == (case.status, case.message)
    if case.reason is None:
        assert result.conditions == ()
    else:
        condition_type = RECONCILING if result.status == Status.IN_PROGRESS else STALLED
        assert result.conditions == (
            Condition(condition_type, "True", case.reason, case.condition_message),
        )


def test_every_kind_specific_rule_has_fixtures() -> None:
    kinds = {f"{case.obj.get('apiVersion')}/{case.obj.get('kind')}" for case in CASES}
    for kind in (
        "apps/v1/Deployment",
        "apps/v1/StatefulSet",
        "apps/v1/DaemonSet",
        "apps/v1/ReplicaSet",
        "policy/v1/PodDisruptionBudget",
        "apiextensions.k8s.io/v1/CustomResourceDefinition",
        "batch/v1/Job",
        "batch/v1/CronJob",
        "v1/Pod",
        "v1/PersistentVolumeClaim",
        "v1/Service",
        "v1/Secret",
        "v1/ConfigMap",
    ):
        assert kind in kinds


def _unschedulable_pod(created: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "creationTimestamp": created},
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
        },
    }


@pytest.mark.parametrize(
    ("age", "status"),
    [
        (timedelta(seconds=14), Status.IN_PROGRESS),
        (timedelta(seconds=16), Status.FAILED),
    ],
)
def test_unschedulable_pod_gets_fifteen_seconds(age: timedelta, status: Status) -> None:
    now = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)
    for created in (
        (now - age).strftime("%Y-%m-%dT%H:%M:%SZ"),
        # The same instant written with an offset.
        (now - age + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00"),
    ):
        assert compute(_unschedulable_pod(created), now=now).status == status


def test_unparseable_creation_time_counts_as_long_ago() -> None:
    now = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)
    for created in ("yesterday", "2024-05-01T25:00:00Z", "2024-05-01 10:00:00Z"):
        assert compute(_unschedulable_pod(created), now=now).status == Status.FAILED


# --- properties ----------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
kinds = st.sampled_from(
    [
        ("apps/v1", "Deployment"),
        ("apps/v1", "StatefulSet"),
        ("apps/v1", "DaemonSet"),
        ("apps/v1", "ReplicaSet"),
        ("policy/v1", "PodDisruptionBudget"),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
        ("batch/v1", "Job"),
        ("v1", "Pod"),
        ("v1", "PersistentVolumeClaim"),
        ("v1", "Service"),
        ("example.com/v1", "Widget"),
    ]
)
condition_types = st.sampled_from(
    ["Ready", "Reconciling", "Stalled", "Available", "Progressing", "Complete", "Failed"]
)
conditions = st.lists(
    st.fixed_dictionaries(
        {"type": condition_types, "status": st.sampled_from(["True", "False", "Unknown"])},
        optional={"reason": st.text(max_size=8), "message": st.text(max_size=8)},
    ),
    max_size=4,
)
counts = st.integers(min_value=0, max_value=5)
status_fields = st.dictionaries(
    st.sampled_from(
        [
            "replicas",
            "readyReplicas",
            "updatedReplicas",
            "availableReplicas",
            "currentReplicas",
            "fullyLabeledReplicas",
            "desiredNumberScheduled",
            "numberReady",
            "observedGeneration",
            "succeeded",
        ]
    ),
    counts,
) | st.dictionaries(st.text(max_size=8), json_values)


@st.composite
def objects(draw: st.DrawFn) -> dict[str, Any]:
    api_version, kind = draw(kinds)
    status: dict[str, Any] = dict(draw(status_fields))
    if draw(st.booleans()):
        status["conditions"] = draw(conditions)
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": draw(st.fixed_dictionaries({}, optional={"generation": counts})),
        "spec": draw(st.dictionaries(st.sampled_from(["replicas", "parallelism"]), counts)),
        "status": status,
    }


def _consistent(result: Result) -> bool:
    """The standard conditions kstatus derives always agree with the status it reports."""
    if result.status == Status.IN_PROGRESS:
        return [c.type for c in result.conditions] == [RECONCILING]
    if result.status == Status.FAILED:
        return [c.type for c in result.conditions] == [STALLED]
    return result.conditions == ()


@given(objects())
def test_any_object_gets_a_consistent_verdict(obj: dict[str, Any]) -> None:
    result = compute(obj)
    assert result.status in set(Status) - {Status.NOT_FOUND}
    assert _consistent(result)


@given(json_values, kinds)
def test_malformed_objects_never_raise(garbage: Any, kind: tuple[str, str]) -> None:
    for obj in (
        {"apiVersion": kind[0], "kind": kind[1], "status": garbage},
        {"apiVersion": kind[0], "kind": kind[1], "metadata": garbage},
        {"apiVersion": kind[0], "kind": kind[1], "status": {"phase": "Running", "x": garbage}},
        {"apiVersion": kind[0], "kind": kind[1], "spec": garbage, "status": {"conditions": []}},
    ):
        assert _consistent(compute(obj))


@given(objects(), st.text(min_size=1, max_size=30))
def test_deletion_timestamp_wins_over_everything(obj: dict[str, Any], stamp: str) -> None:
    obj["metadata"]["deletionTimestamp"] = stamp
    assert compute(obj) == Result(Status.TERMINATING, "Resource scheduled for deletion")


def _deployment(spec_replicas: int, **status: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "generation": 1},
        "spec": {"replicas": spec_replicas, "progressDeadlineSeconds": 600},
        "status": {
            "observedGeneration": 1,
            **status,
            "conditions": [
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
                {"type": "Available", "status": "True"},
            ],
        },
    }


@given(st.integers(min_value=0, max_value=1000))
def test_fully_rolled_out_deployment_is_current(replicas: int) -> None:
    obj = _deployment(
        replicas,
        replicas=replicas,
        updatedReplicas=replicas,
        readyReplicas=replicas,
        availableReplicas=replicas,
    )
    assert compute(obj) == Result(Status.CURRENT, f"Deployment is available. Replicas: {replicas}")


@given(st.integers(min_value=1, max_value=1000), st.data())
def test_deployment_waits_for_ready_replicas(replicas: int, data: st.DataObject) -> None:
    ready = data.draw(st.integers(min_value=0, max_value=replicas - 1))
    obj = _deployment(
        replicas,
        replicas=replicas,
        updatedReplicas=replicas,
        readyReplicas=ready,
        availableReplicas=replicas,
    )
    result = compute(obj)
    assert (result.status, result.message) == (Status.IN_PROGRESS, f"Ready: {ready}/{replicas}")


@given(st.integers(min_value=1, max_value=100), st.integers(min_value=1, max_value=100))
def test_unobserved_generation_is_in_progress_for_any_kind(generation: int, lag: int) -> None:
    obj = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"generation": generation + lag},
        "status": {
            "observedGeneration": generation,
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    result = compute(obj)
    assert result.status == Status.IN_PROGRESS
    assert result.message == (
        f"Widget generation is {generation + lag}, but latest observed generation is {generation}"
    )


# --- the same fixtures through Helm's Go kstatus, when that binary is built ------------------


def run_go_kstatus(binary: Path, objects: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    completed = subprocess.run(
        [str(binary)],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    verdicts: list[dict[str, Any]] = json.loads(completed.stdout)
    assert len(verdicts) == len(objects)
    return verdicts


@pytest.mark.skipif(
    not GO_KSTATUS.exists(), reason="run e2e/build-kstatus-compare.sh to compare with Go"
)
def test_fixtures_agree_with_helms_go_kstatus() -> None:
    verdicts = run_go_kstatus(GO_KSTATUS, [case.obj for case in CASES])
    for case, go in zip(CASES, verdicts, strict=True):
        if case.go_panics:
            assert go["status"] == "panic", case.id
            continue
        python = compute(case.obj)
        assert (python.status, python.message) == (go["status"], go["message"]), case.id
        assert [
            {"type": c.type, "status": c.status, "reason": c.reason, "message": c.message}
            for c in python.conditions
        ] == go["conditions"], case.id
