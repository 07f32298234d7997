"""Readiness of Kubernetes objects by the kstatus rules Helm 4 waits with.

A port of `pkg/kstatus/status` from github.com/fluxcd/cli-utils v1.2.1, the fork Helm v4.2.3
builds with: the same statuses, messages and condition reasons, checked in the same order,
and the same reading of loosely typed fields (a number that is missing or not a whole
number falls back to a default, as Go's `GetIntField` does). Objects are JSON-shaped:
mappings, lists, str, int, float, bool and None, as read from the API server.

Where Go's `status.Compute` returns an error (a field of a type it cannot read), `compute`
returns `Unknown` with the same error text as message; Helm's status readers also turn such
an error into `Unknown`. Where Go would panic (malformed `status.containerStatuses` of a
running Pod) this port returns `Unknown` too rather than failing the caller.

e2e/test_kstatus_compare.py runs this module and the Go original on the same objects (test
fixtures and live objects of a real control plane) and asserts they agree.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final, TypeVar


class Status(StrEnum):
    """The kstatus verdict on one object."""

    IN_PROGRESS = "InProgress"
    FAILED = "Failed"
    CURRENT = "Current"
    TERMINATING = "Terminating"
    # Never computed from an object; for callers reporting an object that does not exist.
    NOT_FOUND = "NotFound"
    UNKNOWN = "Unknown"


RECONCILING: Final = "Reconciling"
STALLED: Final = "Stalled"

# How long a Pod may stay unschedulable before it counts as Failed rather than InProgress.
SCHEDULE_WINDOW: Final = timedelta(seconds=15)


@dataclass(frozen=True)
class Condition:
    """A standard condition (Reconciling or Stalled) kstatus derives for the object."""

    type: str
    status: str
    reason: str
    message: str


@dataclass(frozen=True)
class Result:
    """What `compute` concludes: the status, why, and the standard conditions behind it."""

    status: Status
    message: str
    conditions: tuple[Condition, ...] = ()


def compute(obj: Mapping[str, Any], *, now: datetime | None = None) -> Result:
    """The kstatus status of `obj`, a complete object including its status.

    `now` (timezone-aware) only matters for unschedulable Pods; it defaults to the clock.
    """
    try:
        return _compute(obj, now if now is not None else datetime.now(UTC))
    except _UnreadableField as error:
        return Result(Status.UNKNOWN, str(error))


class _UnreadableField(Exception):
    """A field has a type the Go code cannot read; its text is Go's error text."""


Rule = Callable[[Mapping[str, Any], datetime], Result]


def _compute(obj: Mapping[str, Any], now: datetime) -> Result:
    generic = _generic_status(obj)
    if generic is not None:
        return generic
    rule = _RULES.get(_group_kind_key(obj))
    if rule is not None:
        return rule(obj, now)
    ready = _ready_condition_status(obj)
    if ready is not None:
        return ready
    # No rule and no known condition: kstatus assumes the object needs no waiting.
    return _current("Resource is current")


# --- results -------------------------------------------------------------------------------


def _current(message: str) -> Result:
    return Result(Status.CURRENT, message)


def _in_progress(reason: str, message: str) -> Result:
    return Result(Status.IN_PROGRESS, message, (Condition(RECONCILING, "True", reason, message),))


def _failed(reason: str, message: str) -> Result:
    return Result(Status.FAILED, message, (Condition(STALLED, "True", reason, message),))


# --- generic rules, applied to every kind first ----------------------------------------------


def _generic_status(obj: Mapping[str, Any]) -> Result | None:
    deletion, found = _wrapped(
        "metadata.deletionTimestamp", _nested_string, obj, "metadata", "deletionTimestamp"
    )
    if found and deletion != "":
        return Result(Status.TERMINATING, "Resource scheduled for deletion")
    generation = _generation_status(obj)
    if generation is not None:
        return generation
    # Controllers that set the standard conditions are trusted over any kind-specific rule.
    for condition in _conditions(obj):
        if condition.type == RECONCILING and condition.status == "True":
            return _in_progress(condition.reason, condition.message)
        if condition.type == STALLED and condition.status == "True":
            return _failed(condition.reason, condition.message)
    return None


def _generation_status(obj: Mapping[str, Any]) -> Result | None:
    generation, found = _wrapped(
        "metadata.generation", _nested_int64, obj, "metadata", "generation"
    )
    if not found:
        return None
    observed, found = _wrapped(
        "status.observedGeneration", _nested_int64, obj, "status", "observedGeneration"
    )
    # An object without status.observedGeneration cannot be checked, so it passes.
    if found and observed != generation:
        message = (
            f"{_kind(obj)} generation is {generation}, but latest observed generation is {observed}"
        )
        return _in_progress("LatestGenerationNotObserved", message)
    return None


def _ready_condition_status(obj: Mapping[str, Any]) -> Result | None:
    """The widespread (if non-standard) Ready condition, for kinds without a rule."""
    for condition in _conditions(obj):
        if condition.type != "Ready":
            continue
        if condition.status == "True":
            return _current("Resource is Ready")
        if condition.status in ("False", "Unknown"):
            return _in_progress(condition.reason, condition.message)
    return None


# --- rules for built-in kinds -----------------------------------------------------------------


def _always_ready(obj: Mapping[str, Any], now: datetime) -> Result:
    return _current("Resource is always ready")


def _stateful_set(obj: Mapping[str, Any], now: datetime) -> Result:
    # The StatefulSet controller sets no conditions: only the counts tell.
    if _string_field(obj, "spec.updateStrategy.type", "") == "OnDelete":
        return _current("StatefulSet is using the ondelete update strategy")
    spec_replicas = _int_field(obj, "spec.replicas", 1)
    ready = _int_field(obj, "status.readyReplicas", 0)
    current = _int_field(obj, "status.currentReplicas", 0)
    updated = _int_field(obj, "status.updatedReplicas", 0)
    replicas = _int_field(obj, "status.replicas", 0)
    partition = _int_field(obj, "spec.updateStrategy.rollingUpdate.partition", -1)

    if spec_replicas > replicas:
        return _in_progress("LessReplicas", f"Replicas: {replicas}/{spec_replicas}")
    if spec_replicas > ready:
        return _in_progress("LessReady", f"Ready: {ready}/{spec_replicas}")
    if replicas > spec_replicas:
        return _in_progress("ExtraPods", f"Pending termination: {replicas - spec_replicas}")
    if partition != -1:
        if updated < spec_replicas - partition:
            return _in_progress(
                "PartitionRollout", f"updated: {updated}/{spec_replicas - partition}"
            )
        return _current(f"Partition rollout complete. updated: {updated}")
    if spec_replicas > current:
        return _in_progress("LessCurrent", f"current: {current}/{spec_replicas}")
    if _string_field(obj, "status.currentRevision", "") != _string_field(
        obj, "status.updateRevision", ""
    ):
        return _in_progress("RevisionMismatch", "Waiting for updated revision to match current")
    return _current(f"All replicas scheduled as expected. Replicas: {replicas}")


_NO_PROGRESS_DEADLINE: Final = 2**31 - 1  # math.MaxInt32: the controller's "no deadline"


def _deployment(obj: Mapping[str, Any], now: datetime) -> Result:
    # Without a progress deadline the controller never sets Progressing, so don't wait for it.
    progressing = (
        _int_field(obj, "spec.progressDeadlineSeconds", _NO_PROGRESS_DEADLINE)
        == _NO_PROGRESS_DEADLINE
    )
    available = False
    for condition in _conditions(obj):
        if condition.type == "Progressing":
            if condition.reason == "ProgressDeadlineExceeded":
                return Result(
                    Status.FAILED,
                    "Progress deadline exceeded",
                    (Condition(STALLED, "True", condition.reason, condition.message),),
                )
            if condition.status == "True" and condition.reason == "NewReplicaSetAvailable":
                progressing = True
        elif condition.type == "Available" and condition.status == "True":
            available = True

    spec_replicas = _int_field(obj, "spec.replicas", 1)
    replicas = _int_field(obj, "status.replicas", 0)
    updated = _int_field(obj, "status.updatedReplicas", 0)
    ready = _int_field(obj, "status.readyReplicas", 0)
    available_replicas = _int_field(obj, "status.availableReplicas", 0)

    if spec_replicas > replicas:
        return _in_progress("LessReplicas", f"Replicas: {replicas}/{spec_replicas}")
    if spec_replicas > updated:
        return _in_progress("LessUpdated", f"Updated: {updated}/{spec_replicas}")
    if replicas > spec_replicas:
        return _in_progress("ExtraPods", f"Pending termination: {replicas - spec_replicas}")
    if updated > available_replicas:
        return _in_progress("LessAvailable", f"Available: {available_replicas}/{updated}")
    if spec_replicas > ready:
        return _in_progress("LessReady", f"Ready: {ready}/{spec_replicas}")
    if not progressing:
        return _in_progress("ReplicaSetNotAvailable", "ReplicaSet not Available")
    if not available:
        return _in_progress("DeploymentNotAvailable", "Deployment not Available")
    return _current(f"Deployment is available. Replicas: {replicas}")


def _replica_set(obj: Mapping[str, Any], now: datetime) -> Result:
    for condition in _conditions(obj):
        if condition.type == "ReplicaFailure" and condition.status == "True":
            return _in_progress("ReplicaFailure", "Replica Failure condition. Check Pods")
    spec_replicas = _int_field(obj, "spec.replicas", 1)
    replicas = _int_field(obj, "status.replicas", 0)
    ready = _int_field(obj, "status.readyReplicas", 0)
    available = _int_field(obj, "status.availableReplicas", 0)
    labelled = _int_field(obj, "status.fullyLabeledReplicas", 0)

    if spec_replicas > labelled:
        return _in_progress("LessLabelled", f"Labelled: {labelled}/{spec_replicas}")
    if spec_replicas > available:
        return _in_progress("LessAvailable", f"Available: {available}/{spec_replicas}")
    if spec_replicas > ready:
        return _in_progress("LessReady", f"Ready: {ready}/{spec_replicas}")
    if replicas > spec_replicas:
        return _in_progress("ExtraPods", f"Pending termination: {replicas - spec_replicas}")
    return _current(f"ReplicaSet is available. Replicas: {replicas}")


def _daemon_set(obj: Mapping[str, Any], now: datetime) -> Result:
    # The generic check lets objects without (observed) generation pass; a DaemonSet the
    # controller has seen always has both, so their absence means it has not been seen yet.
    _, found = _wrapped("metadata.generation", _nested_int64, obj, "metadata", "generation")
    if not found:
        return _in_progress("NoGeneration", f"{_kind(obj)} metadata.generation not found")
    _, found = _wrapped(
        "status.observedGeneration", _nested_int64, obj, "status", "observedGeneration"
    )
    if not found:
        return _in_progress(
            "NoObservedGeneration", f"{_kind(obj)} status.observedGeneration not found"
        )

    desired = _int_field(obj, "status.desiredNumberScheduled", -1)
    current = _int_field(obj, "status.currentNumberScheduled", 0)
    updated = _int_field(obj, "status.updatedNumberScheduled", 0)
    available = _int_field(obj, "status.numberAvailable", 0)
    ready = _int_field(obj, "status.numberReady", 0)

    if desired == -1:
        return _in_progress("NoDesiredNumber", "Missing .status.desiredNumberScheduled")
    if desired > current:
        return _in_progress("LessCurrent", f"Current: {current}/{desired}")
    if desired > updated:
        return _in_progress("LessUpdated", f"Updated: {updated}/{desired}")
    if desired > available:
        return _in_progress("LessAvailable", f"Available: {available}/{desired}")
    if desired > ready:
        return _in_progress("LessReady", f"Ready: {ready}/{desired}")
    return _current(f"All replicas scheduled as expected. Replicas: {desired}")


def _persistent_volume_claim(obj: Mapping[str, Any], now: datetime) -> Result:
    phase = _string_field(obj, "status.phase", "unknown")
    if phase != "Bound":
        return _in_progress("NotBound", f"PVC is not Bound. phase: {phase}")
    return _current("PVC is Bound")


def _pod(obj: Mapping[str, Any], now: datetime) -> Result:
    conditions = _conditions(obj)
    phase = _string_field(obj, "status.phase", "")
    if phase == "Succeeded":
        return _current("Pod has completed successfully")
    if phase == "Failed":
        return _current("Pod has completed, but not successfully")
    if phase == "Running":
        if any(c.type == "Ready" and c.status == "True" for c in conditions):
            return _current("Pod is Ready")
        crash_looping = _crash_looping_containers(obj)
        if crash_looping:
            return _failed(
                "ContainerCrashLooping",
                f"Containers in CrashLoop state: {','.join(crash_looping)}",
            )
        return _in_progress("PodRunningNotReady", "Pod is running but is not Ready")
    if phase == "Pending":
        unscheduled = next(
            (c for c in conditions if c.type == "PodScheduled" and c.status == "False"), None
        )
        if unscheduled is not None and unscheduled.reason == "Unschedulable":
            # The scheduler gets a grace period before an unschedulable Pod counts as failed.
            if now - SCHEDULE_WINDOW < _creation_timestamp(obj):
                return _in_progress("PodNotScheduled", "Pod has not been scheduled")
            return _failed("PodUnschedulable", "Pod could not be scheduled")
        return _in_progress("PodPending", "Pod is in the Pending phase")
    if phase == "":
        return _in_progress("PodNotObserved", "Pod phase not available")
    raise _UnreadableField(f"unknown phase {phase}")


def _crash_looping_containers(obj: Mapping[str, Any]) -> list[str]:
    statuses, found = _nested(obj, "status", "containerStatuses")
    if not found:
        return []
    if not isinstance(statuses, list | tuple):
        raise _UnreadableField(
            f".status.containerStatuses accessor error: {_go_value(statuses)} is of the type "
            f"{_go_type(statuses)}, expected []interface{{}}"
        )
    names: list[str] = []
    for container in statuses:
        # Go asserts these shapes unchecked and panics on a mismatch; here that is an error.
        if not isinstance(container, Mapping):
            raise _UnreadableField(f"status.containerStatuses: {container!r} is not an object")
        name = _present_field(container, "name", str)
        if name is None:
            continue
        state = _present_field(container, "state", Mapping)
        if state is None:
            continue
        waiting = _present_field(state, "waiting", Mapping)
        if waiting is None:
            continue
        if _present_field(waiting, "reason", str) == "CrashLoopBackOff":
            names.append(name)
    return names


def _present_field(parent: Mapping[str, Any], key: str, kind: type[object]) -> Any:
    """`parent[key]` when the key is present (it must then have type `kind`), else None."""
    if key not in parent:
        return None
    value = parent[key]
    if not isinstance(value, kind):
        raise _UnreadableField(
            f"status.containerStatuses: {key} is {_go_value(value)}, not a {kind.__name__}"
        )
    return value


def _pod_disruption_budget(obj: Mapping[str, Any], now: datetime) -> Result:
    # Reaching this rule means the disruption controller observed the latest generation.
    return _current("AllowedDisruptions has been computed.")


def _job(obj: Mapping[str, Any], now: datetime) -> Result:
    parallelism = _int_field(obj, "spec.parallelism", 1)
    completions = _int_field(obj, "spec.completions", parallelism)
    succeeded = _int_field(obj, "status.succeeded", 0)
    active = _int_field(obj, "status.active", 0)
    failed = _int_field(obj, "status.failed", 0)
    start_time = _string_field(obj, "status.startTime", "")
    for condition in _conditions(obj):
        if condition.type == "Complete" and condition.status == "True":
            return _current(f"Job Completed. succeeded: {succeeded}/{completions}")
        if condition.type == "Failed" and condition.status == "True":
            return _failed("JobFailed", f"Job Failed. failed: {failed}/{completions}")
    if start_time == "":
        return _in_progress("JobNotStarted", "Job not started")
    # A running Job counts as Current: kstatus does not wait for completion.
    return _current(f"Job in progress. success:{succeeded}, active: {active}, failed: {failed}")


def _service(obj: Mapping[str, Any], now: datetime) -> Result:
    service_type = _string_field(obj, "spec.type", "ClusterIP")
    if service_type == "LoadBalancer" and _string_field(obj, "spec.clusterIP", "") == "":
        return _in_progress("NoIPAssigned", "ClusterIP not set. Service type: LoadBalancer")
    return _current("Service is ready")


def _custom_resource_definition(obj: Mapping[str, Any], now: datetime) -> Result:
    for condition in _conditions(obj):
        if condition.type == "NamesAccepted" and condition.status == "False":
            return _failed(condition.reason, condition.message)
        if condition.type == "Established":
            if condition.status == "False" and condition.reason != "Installing":
                return _failed(condition.reason, condition.message)
            if condition.status == "True":
                return _current("CRD is established")
    return _in_progress("Installing", "Install in progress")


# Keyed by "group/Kind", or "Kind" for the core group; the API version does not matter.
_RULES: Final[Mapping[str, Rule]] = {
    "Service": _service,
    "Pod": _pod,
    "Secret": _always_ready,
    "PersistentVolumeClaim": _persistent_volume_claim,
    "apps/StatefulSet": _stateful_set,
    "apps/DaemonSet": _daemon_set,
    "extensions/DaemonSet": _daemon_set,
    "apps/Deployment": _deployment,
    "extensions/Deployment": _deployment,
    "apps/ReplicaSet": _replica_set,
    "extensions/ReplicaSet": _replica_set,
    "policy/PodDisruptionBudget": _pod_disruption_budget,
    "batch/CronJob": _always_ready,
    "ConfigMap": _always_ready,
    "batch/Job": _job,
    "apiextensions.k8s.io/CustomResourceDefinition": _custom_resource_definition,
}


# --- reading fields the way Go's unstructured helpers do ---------------------------------------


def _group_kind_key(obj: Mapping[str, Any]) -> str:
    api_version = _string_or_empty(obj, "apiVersion")
    # schema.ParseGroupVersion: "" and "/" are empty, more than one "/" is invalid (no group).
    group = api_version.split("/", 1)[0] if api_version.count("/") == 1 else ""
    kind = _kind(obj)
    return f"{group}/{kind}" if group else kind


def _kind(obj: Mapping[str, Any]) -> str:
    return _string_or_empty(obj, "kind")


def _string_or_empty(obj: Mapping[str, Any], *fields: str) -> str:
    try:
        value, _ = _nested_string(obj, *fields)
    except _UnreadableField:
        return ""
    return value


def _nested(obj: Mapping[str, Any], *fields: str) -> tuple[Any, bool]:
    """The value at `fields` and whether it is there; a null on the way means absent."""
    value: Any = obj
    for depth, field in enumerate(fields):
        if value is None:
            return None, False
        if not isinstance(value, Mapping):
            raise _UnreadableField(
                f"{_json_path(fields[: depth + 1])} accessor error: {_go_value(value)} "
                f"is of the type {_go_type(value)}, expected map[string]interface{{}}"
            )
        if field not in value:
            return None, False
        value = value[field]
    return value, True


def _nested_string(obj: Mapping[str, Any], *fields: str) -> tuple[str, bool]:
    value, found = _nested(obj, *fields)
    if not found:
        return "", False
    if not isinstance(value, str):
        raise _type_error(fields, value, "string")
    return value, True


def _nested_int64(obj: Mapping[str, Any], *fields: str) -> tuple[int, bool]:
    value, found = _nested(obj, *fields)
    if not found:
        return 0, False
    if not _is_int64(value):
        raise _type_error(fields, value, "int64")
    return int(value), True


_V = TypeVar("_V")


def _wrapped(
    what: str,
    read: Callable[..., tuple[_V, bool]],
    obj: Mapping[str, Any],
    *fields: str,
) -> tuple[_V, bool]:
    """`read(obj, *fields)`, with an error worded as Go's generic checks word it."""
    try:
        return read(obj, *fields)
    except _UnreadableField as error:
        raise _UnreadableField(f"looking up {what} from resource: {error}") from error


def _type_error(fields: Iterable[str], value: object, expected: str) -> _UnreadableField:
    return _UnreadableField(
        f"{_json_path(fields)} accessor error: {_go_value(value)} is of the type "
        f"{_go_type(value)}, expected {expected}"
    )


def _string_field(obj: Mapping[str, Any], path: str, default: str) -> str:
    """Go's GetStringField: the string at `path`, else `default` (never an error)."""
    try:
        value, found = _nested(obj, *path.split("."))
    except _UnreadableField:
        return default
    return value if found and isinstance(value, str) else default


def _int_field(obj: Mapping[str, Any], path: str, default: int) -> int:
    """Go's GetIntField: the whole number at `path`, else `default` (never an error)."""
    try:
        value, found = _nested(obj, *path.split("."))
    except _UnreadableField:
        return default
    return int(value) if found and _is_int64(value) else default


def _is_int64(value: object) -> bool:
    # Go decodes JSON numbers to int64 when they are whole and in range, else to float64.
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def _json_path(fields: Iterable[str]) -> str:
    return "." + ".".join(fields)


# What Go's JSON converter (runtime.DefaultUnstructuredConverter) makes of status.conditions.


@dataclass(frozen=True)
class _ObservedCondition:
    type: str
    status: str
    reason: str
    message: str


_CONDITION_FIELDS: Final = (
    ("type", "string"),
    ("status", "v1.ConditionStatus"),
    ("reason", "string"),
    ("message", "string"),
)


def _conditions(obj: Mapping[str, Any]) -> list[_ObservedCondition]:
    status = obj.get("status")
    if status is None:
        return []
    if not isinstance(status, Mapping):
        raise _UnreadableField(f"cannot restore struct from: {_go_kind(status)}")
    items = status.get("conditions")
    if items is None:
        return []
    if not isinstance(items, list | tuple):
        raise _UnreadableField(f"cannot restore slice from {_go_kind(items)}")
    return [_condition(item) for item in items]


def _condition(item: object) -> _ObservedCondition:
    if item is None:
        return _ObservedCondition("", "", "", "")
    if not isinstance(item, Mapping):
        raise _UnreadableField(f"cannot restore struct from: {_go_kind(item)}")
    values = [_condition_field(item.get(key), go_type) for key, go_type in _CONDITION_FIELDS]
    return _ObservedCondition(*values)


def _condition_field(value: object, go_type: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    # Go's reflect can convert an integer to a string type but the converter refuses it;
    # anything else is not convertible at all.
    if _is_int64(value):
        raise _UnreadableField(f"cannot convert int64 to {go_type}")
    raise _UnreadableField("unrecognized type: string")


_RFC3339: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})"
)
_ZERO_TIME: Final = datetime(1, 1, 1, tzinfo=UTC)


def _creation_timestamp(obj: Mapping[str, Any]) -> datetime:
    """metadata.creationTimestamp; Go's zero time when absent or unparseable."""
    match = _RFC3339.fullmatch(_string_or_empty(obj, "metadata", "creationTimestamp"))
    if match is None:
        return _ZERO_TIME
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    if int(hour) > 23 or int(minute) > 59 or int(second) > 59:
        return _ZERO_TIME
    offset = timedelta(0)
    if zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        offset = sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    microseconds = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        wall = datetime(int(year), int(month), int(day), tzinfo=UTC) + timedelta(
            hours=int(hour), minutes=int(minute), seconds=int(second), microseconds=microseconds
        )
        return wall - offset
    except (ValueError, OverflowError):
        return _ZERO_TIME


# --- Go's fmt, for error texts that match Go's --------------------------------------------------


def _go_kind(value: object) -> str:
    """reflect.Kind of the Go value JSON decoding makes of `value`."""
    return {"map[string]interface {}": "map", "[]interface {}": "slice"}.get(
        _go_type(value), _go_type(value)
    )


def _go_type(value: object) -> str:
    """%T of the Go value JSON decoding makes of `value`."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64" if _is_int64(value) else "float64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "map[string]interface {}"
    return "[]interface {}"


def _go_value(value: object) -> str:
    """%v of the Go value JSON decoding makes of `value`."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and _is_int64(value):
        return str(value)
    if isinstance(value, int | float):
        return _go_float(float(value))
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        entries = (f"{key}:{_go_value(value[key])}" for key in sorted(value))
        return f"map[{' '.join(entries)}]"
    if isinstance(value, Iterable):
        return f"[{' '.join(_go_value(item) for item in value)}]"
    return str(value)


def _go_float(number: float) -> str:
    """%v of a float64: Go's %g with the shortest digits that round-trip."""
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    if number == 0:
        return "-0" if math.copysign(1.0, number) < 0 else "0"
    sign = "-" if number < 0 else ""
    # repr gives the shortest digits that round-trip, as Go's formatter does.
    _, digit_tuple, exponent = Decimal(repr(abs(number))).normalize().as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple))
    point = len(digits) + exponent  # digits before the decimal point
    decimal_exponent = point - 1
    # With shortest digits Go's %g switches to exponent form outside [1e-4, 1e6).
    if decimal_exponent < -4 or decimal_exponent >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        exponent_sign = "-" if decimal_exponent < 0 else "+"
        return f"{sign}{mantissa}e{exponent_sign}{abs(decimal_exponent):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"
