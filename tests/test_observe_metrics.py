"""rudder.observe.metrics: the series exist with the right names and labels, the condition
gauge flips, and a deleted HelmRelease's series go away."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from rudder.observe import metrics


def value(metric: str, /, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(metric, labels)


def exposed() -> str:
    body, content_type = metrics.exposition(None)
    assert content_type.startswith("text/plain")
    return body.decode()


def parsed(sample_name: str) -> list[Sample]:
    """The samples of that name in the exposition text, as a scraper would read them."""
    return [
        sample
        for family in text_string_to_metric_families(exposed())
        for sample in family.samples
        if sample.name == sample_name
    ]


def unique() -> str:
    return f"hr-{uuid.uuid4().hex[:8]}"


def test_reconcile_counter_and_histogram_by_result() -> None:
    before = value("rudder_reconcile_total", result="requeue_after") or 0.0
    metrics.record_reconcile("requeue_after", 0.3)
    metrics.record_reconcile("requeue_after", 12.0)
    assert value("rudder_reconcile_total", result="requeue_after") == before + 2
    assert value("rudder_reconcile_duration_seconds_count", result="requeue_after") == before + 2
    assert (value("rudder_reconcile_duration_seconds_bucket", result="requeue_after", le="0.5")
            or 0) >= 1  # fmt: skip
    exposed_results = {s.labels["result"] for s in parsed("rudder_reconcile_total")}
    assert exposed_results == set(metrics.RECONCILE_RESULTS)  # all exposed from the start
    assert "# TYPE rudder_reconcile_duration_seconds histogram" in exposed()


def test_unknown_reconcile_result_counts_as_error() -> None:
    before = value("rudder_reconcile_total", result="error") or 0.0
    metrics.record_reconcile("weird", 1.0)
    assert value("rudder_reconcile_total", result="error") == before + 1
    assert value("rudder_reconcile_total", result="weird") is None


@pytest.mark.parametrize(
    ("failed", "requeue_after", "interval", "expected"),
    [
        (True, 600.0, 600.0, "error"),
        (True, None, None, "error"),
        (False, None, None, "success"),
        (False, 600.0, 600.0, "success"),
        (False, 0.0, 600.0, "requeue"),
        (False, 1.0, 600.0, "requeue_after"),
        (False, 30.0, None, "requeue_after"),
    ],
)
def test_reconcile_result_mapping(
    failed: bool, requeue_after: float | None, interval: float | None, expected: str
) -> None:
    assert (
        metrics.reconcile_result(failed=failed, requeue_after=requeue_after, interval=interval)
        == expected
    )


def test_condition_gauge_sets_exactly_one_status_and_flips() -> None:
    name = unique()
    metrics.record_conditions(
        "apps",
        name,
        [
            {"type": "Ready", "status": "False", "reason": "Progressing"},
            {"type": "Reconciling", "status": "True"},
        ],
    )

    def statuses(kind: str) -> dict[str, float | None]:
        return {
            status: value(
                "rudder_helmrelease_condition",
                name=name,
                namespace="apps",
                type=kind,
                status=status,
            )
            for status in ("True", "False", "Unknown")
        }

    assert statuses("Ready") == {"True": 0, "False": 1, "Unknown": 0}
    assert statuses("Reconciling") == {"True": 1, "False": 0, "Unknown": 0}

    # Ready now; Reconciling is gone (kstatus removes it), so are its series.
    metrics.record_conditions("apps", name, [{"type": "Ready", "status": "True"}])
    assert statuses("Ready") == {"True": 1, "False": 0, "Unknown": 0}
    assert statuses("Reconciling") == {"True": None, "False": None, "Unknown": None}

    metrics.record_conditions("apps", name, [{"type": "Ready", "status": "Bogus"}])
    assert statuses("Ready") == {"True": 0, "False": 0, "Unknown": 1}

    assert {
        (sample.labels["type"], sample.labels["status"]): sample.value
        for sample in parsed("rudder_helmrelease_condition")
        if sample.labels["name"] == name
    } == {("Ready", "True"): 0, ("Ready", "False"): 0, ("Ready", "Unknown"): 1}


def test_forget_drops_every_series_of_a_helmrelease() -> None:
    name, other = unique(), unique()
    for hr in (name, other):
        metrics.record_conditions("ns", hr, [{"type": "Ready", "status": "True"}])
        metrics.record_conflicts("ns", hr, 2)
        metrics.record_drift("ns", hr, 3)
    assert value("rudder_conflicts", name=name, namespace="ns") == 2
    assert value("rudder_drift_total", name=name, namespace="ns") == 1
    assert value("rudder_drifted_objects", name=name, namespace="ns") == 3

    metrics.forget("ns", name)
    assert f'name="{name}"' not in exposed()
    # The other HelmRelease keeps its series.
    assert value("rudder_conflicts", name=other, namespace="ns") == 2
    assert (
        value(
            "rudder_helmrelease_condition", name=other, namespace="ns", type="Ready", status="True"
        )
        == 1
    )
    metrics.forget("ns", name)  # idempotent
    metrics.forget("ns", "never-seen")


def test_conflicts_gauge_and_drift_counter() -> None:
    name = unique()
    metrics.record_conflicts("ns", name, 4)
    metrics.record_conflicts("ns", name, 0)
    assert value("rudder_conflicts", name=name, namespace="ns") == 0
    metrics.record_drift("ns", name, 0)
    assert value("rudder_drift_total", name=name, namespace="ns") is None
    metrics.record_drift("ns", name, 2)
    metrics.record_drift("ns", name, 1)
    assert value("rudder_drift_total", name=name, namespace="ns") == 2
    assert value("rudder_drifted_objects", name=name, namespace="ns") == 1
    metrics.forget("ns", name)


def test_release_actions_by_action_and_result() -> None:
    before = value("rudder_release_actions_total", action="upgrade", result="failure") or 0.0
    metrics.record_action("upgrade", "failure", 3.0)
    metrics.record_action("upgrade", "timeout")  # anything but success is a failure
    assert value("rudder_release_actions_total", action="upgrade", result="failure") == before + 2
    assert value("rudder_release_action_duration_seconds_count", action="upgrade") is not None
    assert {
        (s.labels["action"], s.labels["result"]) for s in parsed("rudder_release_actions_total")
    } >= {
        (action, result)
        for action in ("install", "upgrade", "rollback", "uninstall", "test")
        for result in ("success", "failure")
    }


def test_observe_request_counts_by_verb_and_code() -> None:
    before = value("rudder_kube_requests_total", verb="PATCH", code="409") or 0.0
    metrics.observe_request("patch", 409)
    metrics.observe_request("PATCH", 409)
    assert value("rudder_kube_requests_total", verb="PATCH", code="409") == before + 2
    assert any(
        s.labels == {"verb": "PATCH", "code": "409"} for s in parsed("rudder_kube_requests_total")
    )


def test_exposition_is_valid_and_has_process_metrics() -> None:
    text = exposed()
    families = {family.name for family in text_string_to_metric_families(text)}
    assert {"rudder_reconcile", "rudder_helmrelease_condition", "rudder_kube_requests"} <= families
    assert "process_cpu_seconds" in families or "python_info" in families
    body, content_type = metrics.exposition("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
