"""The typed HelmRelease model: spec parsing and defaults, durations, chart references and
status conditions."""

from __future__ import annotations

import dataclasses
import datetime
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rudder.model import (
    DIGEST_REF_PATTERN,
    DURATION_PATTERN,
    MAX_CONDITION_MESSAGE,
    TAG_OR_DIGEST_REF_PATTERN,
    ChartReference,
    Condition,
    ConditionType,
    DependencyReference,
    DriftIgnoreRule,
    DriftIgnoreTarget,
    Reason,
    SpecError,
    ValuesReference,
    conditions_from_status,
    conditions_to_status,
    find_condition,
    format_time,
    parse_duration,
    parse_spec,
    remove_condition,
    set_condition,
)

DIGEST = "sha256:" + "ab" * 32
REF = f"oci://registry.example.com/charts/podinfo@{DIGEST}"


def minimal(**fields: Any) -> dict[str, Any]:
    return {"chart": {"ref": REF}, **fields}


def parse(spec: dict[str, Any]) -> Any:
    return parse_spec(spec, name="web", namespace="apps")


# --- parse_spec: defaults and derived values --------------------------------------------------


def test_minimal_spec_gets_every_default() -> None:
    spec = parse(minimal())
    assert spec.chart.ref == REF
    assert spec.chart.allow_tag is False
    assert spec.chart.insecure is False
    assert spec.chart.secret_ref is None
    assert spec.chart.verify_cosign_secret is None
    assert spec.release_name == "web"
    assert spec.target_namespace == "apps"
    assert spec.storage_namespace == "apps"
    assert spec.values == {}
    assert spec.values_from == ()
    assert spec.interval == 600
    assert spec.timeout == 300
    assert spec.suspend is False
    assert spec.service_account_user is None
    assert spec.depends_on == ()
    assert spec.max_history == 10
    assert spec.install.crds == "Create"
    assert spec.install.remediation.retries == 0
    assert spec.install.remediation.strategy == "uninstall"
    assert spec.upgrade.crds == "Skip"
    assert spec.upgrade.force_conflicts is False
    assert spec.upgrade.remediation.strategy == "rollback"
    assert spec.test.enable is False
    assert spec.test.timeout == 300
    assert spec.uninstall.deletion_propagation == "background"
    assert spec.uninstall.keep_history is False
    assert spec.drift_detection.mode == "disabled"
    assert spec.drift_detection.ignore == ()


def test_nulls_and_empty_strings_count_as_absent() -> None:
    explicit_nulls = minimal(
        install=None, upgrade=None, interval=None, releaseName="", targetNamespace=None
    )
    assert parse(explicit_nulls) == parse(minimal())


def test_storage_namespace_follows_target_namespace_unless_set() -> None:
    assert parse(minimal(targetNamespace="web")).storage_namespace == "web"
    both = parse(minimal(targetNamespace="web", storageNamespace="releases"))
    assert (both.target_namespace, both.storage_namespace) == ("web", "releases")


def test_release_name_overrides_metadata_name() -> None:
    assert parse(minimal(releaseName="frontend")).release_name == "frontend"


def test_a_release_name_longer_than_helm_allows_is_refused() -> None:
    assert parse_spec(minimal(), name="n" * 53, namespace="apps").release_name == "n" * 53
    with pytest.raises(SpecError) as error:
        parse_spec(minimal(), name="n" * 54, namespace="apps")
    assert error.value.field == "spec.releaseName"
    assert parse_spec(minimal(releaseName="web"), name="n" * 60, namespace="apps")


def test_values_are_a_copy_of_the_spec() -> None:
    body = minimal(values={"image": {"tag": "1.0"}})
    spec = parse(body)
    body["values"]["image"]["tag"] = "2.0"
    assert spec.values == {"image": {"tag": "1.0"}}


def test_service_account_is_impersonated_in_the_helmreleases_namespace() -> None:
    spec = parse(minimal(serviceAccountName="deployer"))
    assert spec.service_account_name == "deployer"
    assert spec.service_account_user == "system:serviceaccount:apps:deployer"


def test_depends_on_defaults_to_the_same_namespace() -> None:
    spec = parse(minimal(dependsOn=[{"name": "db", "namespace": "data"}, {"name": "cache"}]))
    assert spec.depends_on == (
        DependencyReference("db", "data"),
        DependencyReference("cache", "apps"),
    )


def test_values_from_entries_keep_order_and_defaults() -> None:
    spec = parse(
        minimal(
            valuesFrom=[
                {"kind": "ConfigMap", "name": "common"},
                {
                    "kind": "Secret",
                    "name": "db",
                    "valuesKey": "password",
                    "targetPath": "db.password",
                    "optional": True,
                },
            ]
        )
    )
    assert spec.values_from == (
        ValuesReference("ConfigMap", "common", "values.yaml", None, False),
        ValuesReference("Secret", "db", "password", "db.password", True),
    )


def test_the_design_example_parses_to_what_it_says() -> None:
    spec = parse_spec(
        {
            "chart": {
                "ref": REF,
                "secretRef": {"name": "regcred"},
                "certSecretRef": {"name": "registry-ca"},
                "insecure": True,
                "verify": {"cosign": {"publicKeySecretRef": {"name": "cosign-pub"}}},
            },
            "releaseName": "podinfo",
            "targetNamespace": "apps",
            "storageNamespace": "releases",
            "values": {"replicaCount": 2},
            "interval": "1h",
            "timeout": "5m30s",
            "suspend": True,
            "maxHistory": 0,
            "install": {
                "createNamespace": True,
                "crds": "CreateReplace",
                "remediation": {"retries": 3},
            },
            "upgrade": {
                "forceConflicts": True,
                "cleanupOnFail": True,
                "remediation": {"retries": 2, "strategy": "uninstall"},
            },
            "rollback": {"disableHooks": True},
            "test": {"enable": True, "timeout": "90s", "ignoreFailures": True},
            "uninstall": {"keepHistory": True, "deletionPropagation": "orphan"},
            "driftDetection": {
                "mode": "warn",
                "ignore": [
                    {"paths": ["/spec/replicas"], "target": {"kind": "Deployment"}},
                    {"paths": ["/data/a", "/data/b"]},
                ],
            },
        },
        name="ignored",
        namespace="default",
    )
    assert spec.chart.secret_ref == "regcred"
    assert spec.chart.cert_secret_ref == "registry-ca"
    assert spec.chart.insecure is True
    assert spec.chart.verify_cosign_secret == "cosign-pub"
    assert spec.chart.reference.name == "podinfo"
    assert (spec.release_name, spec.target_namespace, spec.storage_namespace) == (
        "podinfo",
        "apps",
        "releases",
    )
    assert spec.values == {"replicaCount": 2}
    assert (spec.interval, spec.timeout, spec.suspend, spec.max_history) == (3600, 330, True, 0)
    assert spec.install.create_namespace is True
    assert spec.install.crds == "CreateReplace"
    assert spec.install.remediation.retries == 3
    assert spec.upgrade.force_conflicts is True
    assert spec.upgrade.cleanup_on_fail is True
    assert spec.upgrade.remediation.retries == 2
    assert spec.upgrade.remediation.strategy == "uninstall"
    assert spec.rollback.disable_hooks is True
    assert (spec.test.enable, spec.test.timeout, spec.test.ignore_failures) == (True, 90, True)
    assert spec.uninstall.keep_history is True
    assert spec.uninstall.deletion_propagation == "orphan"
    assert spec.drift_detection.mode == "warn"
    assert spec.drift_detection.ignore == (
        DriftIgnoreRule(("/spec/replicas",), DriftIgnoreTarget(kind="Deployment")),
        DriftIgnoreRule(("/data/a", "/data/b"), None),
    )


def test_a_tag_is_accepted_only_with_allow_tag() -> None:
    tagged = "oci://registry.example.com/charts/podinfo:6.7.0"
    with pytest.raises(SpecError) as refused:
        parse({"chart": {"ref": tagged}})
    assert refused.value.field == "spec.chart.ref"
    assert "allowTag" in str(refused.value)

    chart = parse({"chart": {"ref": tagged, "allowTag": True}}).chart
    assert chart.reference.tag == "6.7.0"
    assert chart.reference.digest is None


# --- parse_spec: errors name the field --------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({}, "spec.chart"),
        ({"chart": {}}, "spec.chart.ref"),
        ({"chart": {"ref": "oci://registry.example.com/podinfo@sha256:abc"}}, "spec.chart.ref"),
        ({"chart": {"ref": REF, "allowTag": "yes"}}, "spec.chart.allowTag"),
        ({"chart": "podinfo"}, "spec.chart"),
        (minimal(timeout="5 minutes"), "spec.timeout"),
        (minimal(interval="0s"), "spec.interval"),
        (minimal(test={"timeout": "-1m"}), "spec.test.timeout"),
        (minimal(maxHistory="ten"), "spec.maxHistory"),
        (minimal(maxHistory=-1), "spec.maxHistory"),
        (minimal(maxHistory=True), "spec.maxHistory"),
        (minimal(install={"crds": "Replace"}), "spec.install.crds"),
        (
            minimal(upgrade={"remediation": {"strategy": "retry"}}),
            "spec.upgrade.remediation.strategy",
        ),
        (minimal(upgrade={"remediation": {"retries": -1}}), "spec.upgrade.remediation.retries"),
        (
            minimal(uninstall={"deletionPropagation": "Orphan"}),
            "spec.uninstall.deletionPropagation",
        ),
        (minimal(driftDetection={"mode": "on"}), "spec.driftDetection.mode"),
        (
            minimal(driftDetection={"ignore": [{"paths": []}]}),
            "spec.driftDetection.ignore[0].paths",
        ),
        (
            minimal(valuesFrom=[{"kind": "ConfigMap", "name": "a"}, {"name": "b"}]),
            "spec.valuesFrom[1].kind",
        ),
        (minimal(valuesFrom=[{"kind": "Secret"}]), "spec.valuesFrom[0].name"),
        (minimal(valuesFrom=[{"kind": "Pod", "name": "a"}]), "spec.valuesFrom[0].kind"),
        (minimal(valuesFrom={"kind": "Secret"}), "spec.valuesFrom"),
        (minimal(dependsOn=[{"namespace": "x"}]), "spec.dependsOn[0].name"),
        (minimal(releaseName=53), "spec.releaseName"),
        (minimal(values=["a"]), "spec.values"),
    ],
)
def test_spec_errors_name_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as error:
        parse(spec)
    assert error.value.field == field
    assert str(error.value).startswith(f"{field}: ")


def test_a_values_error_does_not_echo_the_values() -> None:
    with pytest.raises(SpecError) as error:
        parse(minimal(values="password=hunter2"))
    assert "hunter2" not in str(error.value)


# --- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10m", 600),
        ("5m30s", 330),
        ("1h", 3600),
        ("1.5h", 5400),
        ("250ms", 0.25),
        ("1h2m3.5s", 3723.5),
        ("0", 0),
        ("-2s", -2),
        ("+2s", 2),
        (".5s", 0.5),
        ("1.s", 1),
        ("1500us", 0.0015),
        ("3µs", 0.000003),
        ("4ns", 0.000000004),
        ("1m1m", 120),
    ],
)
def test_go_durations_parse_to_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12)


@pytest.mark.parametrize(
    "text", ["", "5", "m", "1d", "5 m", " 5m", "1h-2m", ".", ".s", "-", "++1s", "1.2.3s", "1M"]
)
def test_malformed_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}


@given(st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(list(UNIT_SECONDS))), min_size=1))
def test_a_duration_is_the_sum_of_its_terms(terms: list[tuple[int, str]]) -> None:
    text = "".join(f"{amount}{unit}" for amount, unit in terms)
    expected = sum(amount * UNIT_SECONDS[unit] for amount, unit in terms)
    assert parse_duration(text) == pytest.approx(expected, rel=1e-12)


@given(st.from_regex(DURATION_PATTERN, fullmatch=True))
def test_everything_the_crd_pattern_admits_parses(text: str) -> None:
    assert parse_duration(text) >= 0


# --- chart references -------------------------------------------------------------------------


def test_a_digest_reference_splits_into_its_parts() -> None:
    ref = ChartReference.parse(f"oci://127.0.0.1:5000/charts/team/podinfo@{DIGEST}")
    assert ref == ChartReference("127.0.0.1:5000", "charts/team/podinfo", None, DIGEST)
    assert ref.name == "podinfo"


def test_a_tag_and_a_digest_can_be_given_together() -> None:
    ref = ChartReference.parse(f"oci://ghcr.io/stefanprodan/charts/podinfo:6.7.0@{DIGEST}")
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        "ghcr.io",
        "stefanprodan/charts/podinfo",
        "6.7.0",
        DIGEST,
    )


def test_pinning_a_tag_reference_keeps_the_tag() -> None:
    ref = ChartReference.parse("oci://localhost:5000/podinfo:1.0.0")
    assert (ref.tag, ref.digest) == ("1.0.0", None)
    assert ref.pinned(DIGEST) == f"oci://localhost:5000/podinfo:1.0.0@{DIGEST}"


@pytest.mark.parametrize(
    "text",
    [
        f"registry.example.com/podinfo@{DIGEST}",  # no scheme
        f"https://registry.example.com/podinfo@{DIGEST}",
        f"oci://registry.example.com@{DIGEST}",  # no repository
        f"oci://registry.example.com/PodInfo@{DIGEST}",  # repositories are lowercase
        "oci://registry.example.com/podinfo@sha256:abc",  # short digest
        f"oci://registry.example.com/podinfo@{DIGEST.upper()}",
        f"oci://registry.example.com/podinfo@sha512:{'a' * 128}",
        "oci://registry.example.com/podinfo",  # neither tag nor digest
        "oci://registry.example.com/podinfo:",
        f"oci://registry.example.com/pod info@{DIGEST}",
        f"oci://registry.example.com/podinfo@{DIGEST}\n",
    ],
)
def test_malformed_references_are_refused_naming_the_field(text: str) -> None:
    with pytest.raises(SpecError) as error:
        ChartReference.parse(text, field="spec.chart.ref")
    assert error.value.field == "spec.chart.ref"


@given(st.from_regex(TAG_OR_DIGEST_REF_PATTERN, fullmatch=True))
def test_every_reference_the_crd_admits_with_allow_tag_parses(text: str) -> None:
    ref = ChartReference.parse(text)
    assert ref.tag is not None or ref.digest is not None
    pinned_by_digest = re.fullmatch(DIGEST_REF_PATTERN, text) is not None
    assert pinned_by_digest == (ref.digest is not None)


components = st.from_regex(r"[a-z0-9]+([._-][a-z0-9]+)*", fullmatch=True)


@given(
    registry=st.sampled_from(["ghcr.io", "127.0.0.1:5000", "localhost:5000", "registry.local"]),
    path=st.lists(components, min_size=1, max_size=4),
    tag=st.none() | st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True),
    digest=st.none() | st.from_regex(r"sha256:[a-f0-9]{64}", fullmatch=True),
)
def test_reference_parts_survive_a_round_trip(
    registry: str, path: list[str], tag: str | None, digest: str | None
) -> None:
    repository = "/".join(path)
    text = (
        f"oci://{registry}/{repository}{f':{tag}' if tag else ''}{f'@{digest}' if digest else ''}"
    )
    if tag is None and digest is None:
        with pytest.raises(SpecError):
            ChartReference.parse(text)
        return
    ref = ChartReference.parse(text)
    assert ref == ChartReference(registry, repository, tag, digest)
    assert ref.name == path[-1]
    if digest:
        assert ref.pinned(digest) == text


# --- conditions -------------------------------------------------------------------------------

T0 = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=5)


def ready(status: str, message: str = "ok", generation: int = 1) -> Condition:
    return Condition(ConditionType.READY, status, Reason.PROGRESSING, message, generation)


def test_a_new_condition_is_appended_and_stamped() -> None:
    stalled = Condition(ConditionType.STALLED, "True", Reason.INVALID_SPEC, "bad", 1, "x")
    conditions = set_condition([stalled], ready("Unknown"), T0)
    stamped = dataclasses.replace(ready("Unknown"), last_transition_time="2025-01-02T03:04:05Z")
    assert conditions == [stalled, stamped]


def test_same_status_keeps_the_transition_time_but_takes_the_new_message() -> None:
    first = set_condition([], ready("False", "pulling"), T0)
    second = set_condition(first, ready("False", "rendering", generation=2), T1)
    assert second[0].last_transition_time == "2025-01-02T03:04:05Z"
    assert (second[0].message, second[0].observed_generation) == ("rendering", 2)


def test_a_status_change_moves_the_transition_time() -> None:
    first = set_condition([], ready("False"), T0)
    second = set_condition(first, ready("True"), T1)
    assert second[0].status == "True"
    assert second[0].last_transition_time == "2025-01-02T03:09:05Z"


def test_setting_what_is_already_there_changes_nothing() -> None:
    stored = conditions_from_status(
        {"conditions": conditions_to_status(set_condition([], ready("True"), T0))}
    )
    assert set_condition(stored, ready("True"), T1) == stored


def test_set_condition_keeps_order_and_does_not_mutate_its_input() -> None:
    first = set_condition([], ready("Unknown"), T0)
    first = set_condition(first, Condition(ConditionType.RECONCILING, "True", "Progressing"), T0)
    before = list(first)
    updated = set_condition(first, ready("True"), T1)
    assert first == before
    assert [c.type for c in updated] == ["Ready", "Reconciling"]


def test_a_duplicate_type_collapses_into_one_entry() -> None:
    twice = [ready("True"), ready("False")]
    assert [c.type for c in set_condition(twice, ready("True"), T0)] == ["Ready"]


def test_an_overlong_message_is_cut_to_what_the_api_accepts() -> None:
    conditions = set_condition([], ready("False", "x" * (MAX_CONDITION_MESSAGE + 10)), T0)
    assert len(conditions[0].message) == MAX_CONDITION_MESSAGE


def test_remove_and_find_condition() -> None:
    conditions = set_condition([], ready("True"), T0)
    conditions = set_condition(conditions, Condition("Stalled", "True", "X"), T0)
    assert find_condition(conditions, "Stalled") is not None
    remaining = remove_condition(conditions, "Stalled")
    assert [c.type for c in remaining] == ["Ready"]
    assert find_condition(remaining, "Stalled") is None
    assert remove_condition(remaining, "Stalled") == remaining


def test_conditions_round_trip_through_status() -> None:
    entries = [
        {
            "type": "Ready",
            "status": "True",
            "reason": "InstallSucceeded",
            "message": "done",
            "observedGeneration": 3,
            "lastTransitionTime": "2025-01-02T03:04:05Z",
        },
        {
            "type": "Drifted",
            "status": "False",
            "reason": "NoDrift",
            "message": "",
            "lastTransitionTime": "2025-01-02T03:04:05Z",
        },
    ]
    conditions = conditions_from_status({"conditions": entries})
    assert conditions[0] == Condition(
        "Ready", "True", "InstallSucceeded", "done", 3, "2025-01-02T03:04:05Z"
    )
    assert conditions[1].observed_generation is None
    assert conditions_to_status(conditions) == entries


def test_malformed_stored_conditions_are_skipped() -> None:
    status = {"conditions": ["Ready", {"status": "True"}, {"type": "Ready", "status": "True"}]}
    assert [c.type for c in conditions_from_status(status)] == ["Ready"]
    assert conditions_from_status(None) == []
    assert conditions_from_status({}) == []


def test_times_are_written_as_utc_seconds() -> None:
    berlin = datetime.timezone(datetime.timedelta(hours=1))
    assert format_time(datetime.datetime(2025, 1, 2, 4, 4, 5, 999, tzinfo=berlin)) == (
        "2025-01-02T03:04:05Z"
    )
    assert format_time(datetime.datetime(2025, 1, 2, 3, 4, 5)) == "2025-01-02T03:04:05Z"


statuses = st.sampled_from(["True", "False", "Unknown"])
messages = st.text(max_size=20)


@given(
    st.lists(st.tuples(statuses, messages), min_size=1, max_size=8),
)
def test_transition_time_moves_exactly_when_the_status_changes(
    updates: list[tuple[str, str]],
) -> None:
    conditions: list[Condition] = []
    moment = T0
    last_change = None
    previous_status = None
    for status, message in updates:
        moment += datetime.timedelta(seconds=1)
        conditions = set_condition(conditions, ready(status, message), moment)
        if status != previous_status:
            last_change = format_time(moment)
        previous_status = status
        assert conditions[0].last_transition_time == last_change
        assert conditions[0].message == message
    assert len(conditions) == 1


def test_every_reason_and_type_fits_the_metav1_condition_schema() -> None:
    reason_pattern = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    reasons = [v for k, v in vars(Reason).items() if k.isupper()]
    types = [v for k, v in vars(ConditionType).items() if k.isupper()]
    assert len(reasons) == 26
    assert len(types) == 8
    for reason in reasons:
        assert reason_pattern.fullmatch(reason), reason
    assert set(types) == {
        "Ready",
        "Reconciling",
        "Stalled",
        "Released",
        "Conflicted",
        "Drifted",
        "TestSuccess",
        "Remediated",
    }
