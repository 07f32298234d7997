"""Prometheus metrics of the operator, in the process-wide default registry.

Everything is named `rudder_*` and lives in `prometheus_client.REGISTRY`, next to the chart
source's metrics (`rudder.chart.metrics`) and prometheus-client's process, platform and GC
collectors, so one `/metrics` endpoint (see `rudder.observe.server`) serves them all.

The series follow what people already alert on elsewhere:

- `rudder_reconcile_total{result}` and `rudder_reconcile_duration_seconds{result}` mirror
  controller-runtime's `controller_runtime_reconcile_total` / `_time_seconds`, with the same
  four results: `success`, `error`, `requeue`, `requeue_after` (see `reconcile_result`).
- `rudder_helmrelease_condition{name,namespace,type,status}` mirrors Flux's
  `gotk_reconcile_condition`: for each condition type of a HelmRelease exactly one of the
  three series `status="True"|"False"|"Unknown"` is 1 and the other two are 0.
- `rudder_release_actions_total{action,result}` counts Helm actions (install, upgrade,
  rollback, uninstall, test) by `success` / `failure`.
- `rudder_conflicts{name,namespace}` is the number of SSA conflicts a HelmRelease currently
  reports; `rudder_drift_total{name,namespace}` counts the checks that found drift and
  `rudder_drifted_objects{name,namespace}` is how many objects drifted at the last check.
- `rudder_kube_requests_total{verb,code}` counts every API request rudder made, by HTTP
  method and status code (`observe_request` is the `KubeClient` observer).

Per-HelmRelease series are dropped with `forget(namespace, name)` when the HelmRelease is
gone, so a deleted release does not linger in dashboards. All functions here are cheap and
never raise on odd input: recording a metric must never fail a reconcile.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Final

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

RESULT_SUCCESS: Final = "success"
RESULT_ERROR: Final = "error"
RESULT_REQUEUE: Final = "requeue"
RESULT_REQUEUE_AFTER: Final = "requeue_after"
RECONCILE_RESULTS: Final = (RESULT_SUCCESS, RESULT_ERROR, RESULT_REQUEUE, RESULT_REQUEUE_AFTER)

ACTIONS: Final = ("install", "upgrade", "rollback", "uninstall", "test")
ACTION_RESULTS: Final = ("success", "failure")
CONDITION_STATUSES: Final = ("True", "False", "Unknown")

# From 5 ms to 10 min: a reconcile that only reads is milliseconds, one that waits for
# readiness can take the whole spec.timeout (5 min by default).
RECONCILE_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
)  # fmt: skip

RECONCILE_TOTAL: Final = Counter(
    "rudder_reconcile_total",
    "HelmRelease reconciles, by result (success, error, requeue, requeue_after)",
    ["result"],
)
RECONCILE_DURATION: Final = Histogram(
    "rudder_reconcile_duration_seconds",
    "Time a HelmRelease reconcile took, by result",
    ["result"],
    buckets=RECONCILE_BUCKETS,
)
HELMRELEASE_CONDITION: Final = Gauge(
    "rudder_helmrelease_condition",
    "Status conditions of each HelmRelease: 1 on the series of the current status, 0 else",
    ["name", "namespace", "type", "status"],
)
RELEASE_ACTIONS: Final = Counter(
    "rudder_release_actions_total",
    "Helm release actions rudder ran, by action and result (success or failure)",
    ["action", "result"],
)
RELEASE_ACTION_DURATION: Final = Histogram(
    "rudder_release_action_duration_seconds",
    "Time a Helm release action took (including the readiness wait), by action",
    ["action"],
    buckets=RECONCILE_BUCKETS,
)
CONFLICTS: Final = Gauge(
    "rudder_conflicts",
    "Server-side apply conflicts a HelmRelease currently reports (fields owned by others)",
    ["name", "namespace"],
)
DRIFT_TOTAL: Final = Counter(
    "rudder_drift_total",
    "Drift checks that found live objects differing from the release",
    ["name", "namespace"],
)
DRIFTED_OBJECTS: Final = Gauge(
    "rudder_drifted_objects",
    "Objects of a HelmRelease that differed from the release at the last drift check",
    ["name", "namespace"],
)
KUBE_REQUESTS: Final = Counter(
    "rudder_kube_requests_total",
    "Kubernetes API requests rudder made, by HTTP method and response code",
    ["verb", "code"],
)

for _result in RECONCILE_RESULTS:  # present from the start, so rate() sees the first one
    RECONCILE_TOTAL.labels(result=_result)
    RECONCILE_DURATION.labels(result=_result)
for _action in ACTIONS:
    RELEASE_ACTION_DURATION.labels(action=_action)
    for _outcome in ACTION_RESULTS:
        RELEASE_ACTIONS.labels(action=_action, result=_outcome)

_lock = threading.Lock()
# (namespace, name) -> condition types that have series, so stale types can be dropped.
_condition_types: dict[tuple[str, str], set[str]] = {}
# (namespace, name) -> the per-HelmRelease metrics that have a series for it.
_per_release: dict[tuple[str, str], set[str]] = {}
_RELEASE_METRICS: Final[dict[str, Counter | Gauge]] = {
    "conflicts": CONFLICTS,
    "drift_total": DRIFT_TOTAL,
    "drifted_objects": DRIFTED_OBJECTS,
}


def reconcile_result(
    *, failed: bool, requeue_after: float | None, interval: float | None = None
) -> str:
    """The controller-runtime result label of a reconcile's outcome.

    `error` when it failed; `requeue` when it asked to run again at once (0 s);
    `requeue_after` when it asked to run again sooner than its regular `interval` (waiting
    for another writer, for objects to become ready, ...); `success` otherwise — including
    the regular re-check after `interval`, which is not a retry.
    """
    if failed:
        return RESULT_ERROR
    if requeue_after is None:
        return RESULT_SUCCESS
    if requeue_after <= 0:
        return RESULT_REQUEUE
    if interval is not None and requeue_after >= interval:
        return RESULT_SUCCESS
    return RESULT_REQUEUE_AFTER


def record_reconcile(result: str, seconds: float) -> None:
    """Count one reconcile and its duration; `result` is one of `RECONCILE_RESULTS`."""
    if result not in RECONCILE_RESULTS:
        result = RESULT_ERROR
    RECONCILE_TOTAL.labels(result=result).inc()
    RECONCILE_DURATION.labels(result=result).observe(max(0.0, seconds))


def record_action(action: str, result: str, seconds: float | None = None) -> None:
    """Count one Helm action (`install`, `upgrade`, ...) that ended in `success`/`failure`.

    Any result other than `success` counts as `failure`; `seconds` (optional) is its duration.
    """
    outcome = "success" if result == "success" else "failure"
    RELEASE_ACTIONS.labels(action=action, result=outcome).inc()
    if seconds is not None:
        RELEASE_ACTION_DURATION.labels(action=action).observe(max(0.0, seconds))


def _status_of(value: Any) -> str:
    return value if value in ("True", "False") else "Unknown"


def record_conditions(namespace: str, name: str, conditions: Iterable[Mapping[str, Any]]) -> None:
    """Set the condition gauge of one HelmRelease from its `status.conditions`.

    For every condition type, the series of its status is 1 and the other two are 0 (a
    status other than True/False counts as Unknown). Types the HelmRelease no longer has
    (e.g. `Reconciling` once the work is done) lose their series.
    """
    key = (namespace, name)
    seen: dict[str, str] = {}
    for condition in conditions:
        kind = condition.get("type")
        if isinstance(kind, str) and kind:
            seen[kind] = _status_of(condition.get("status"))
    with _lock:
        previous = _condition_types.get(key, set())
        for kind in previous - seen.keys():
            for status in CONDITION_STATUSES:
                _remove(HELMRELEASE_CONDITION, name, namespace, kind, status)
        for kind, current in seen.items():
            for status in CONDITION_STATUSES:
                HELMRELEASE_CONDITION.labels(
                    name=name, namespace=namespace, type=kind, status=status
                ).set(1 if status == current else 0)
        if seen:
            _condition_types[key] = set(seen)
        else:
            _condition_types.pop(key, None)


def record_conflicts(namespace: str, name: str, count: int) -> None:
    """How many SSA conflicts the HelmRelease reports now (0 once they are resolved)."""
    _track(namespace, name, "conflicts")
    CONFLICTS.labels(name=name, namespace=namespace).set(max(0, count))


def record_drift(namespace: str, name: str, objects: int) -> None:
    """The result of one drift check: `objects` is how many objects differ (0: no drift)."""
    _track(namespace, name, "drifted_objects")
    DRIFTED_OBJECTS.labels(name=name, namespace=namespace).set(max(0, objects))
    if objects > 0:
        _track(namespace, name, "drift_total")
        DRIFT_TOTAL.labels(name=name, namespace=namespace).inc()


def observe_request(method: str, status: int) -> None:
    """`KubeClient` observer: count one API request by HTTP method and status code."""
    KUBE_REQUESTS.labels(verb=method.upper(), code=str(status)).inc()


def forget(namespace: str, name: str) -> None:
    """Drop every series of a HelmRelease that no longer exists."""
    key = (namespace, name)
    with _lock:
        for kind in _condition_types.pop(key, set()):
            for status in CONDITION_STATUSES:
                _remove(HELMRELEASE_CONDITION, name, namespace, kind, status)
        for metric in _per_release.pop(key, set()):
            _remove(_RELEASE_METRICS[metric], name, namespace)


def exposition(accept: str | None = None) -> tuple[bytes, str]:
    """The default registry in the format the scraper asked for: (body, content type)."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(REGISTRY), content_type


def _track(namespace: str, name: str, metric: str) -> None:
    with _lock:
        _per_release.setdefault((namespace, name), set()).add(metric)


def _remove(metric: Counter | Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
