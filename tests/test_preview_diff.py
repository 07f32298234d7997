"""The preview as data: fields rudder owns, Secret masking, diff text, digest."""

from __future__ import annotations

from typing import Any

from rudder.kube.ssa import ObjectRef
from rudder.reconcile.preview_diff import (
    ADDED,
    CHANGED,
    REMOVED,
    UNCHANGED,
    ObjectChange,
    Preview,
    on_rudder_fields,
    project,
    unified,
)

MANAGER = "rudder"


def managed(fields: dict[str, Any], manager: str = MANAGER) -> dict[str, Any]:
    return {"manager": manager, "operation": "Apply", "fieldsV1": fields}


def deployment(replicas: int, image: str, *, fields: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "app", "uid": "u", "managedFields": fields},
        "spec": {
            "replicas": replicas,
            "template": {
                "spec": {
                    "containers": [
                        {"name": "web", "image": image, "imagePullPolicy": "IfNotPresent"},
                        {"name": "sidecar", "image": "proxy:1"},
                    ]
                }
            },
        },
        "status": {"replicas": replicas},
    }


CHART_FIELDS = {
    "f:spec": {
        "f:replicas": {},
        "f:template": {
            "f:spec": {"f:containers": {'k:{"name":"web"}': {".": {}, "f:name": {}, "f:image": {}}}}
        },
    }
}


def test_projection_keeps_only_the_fields_the_set_names_and_list_items_by_key() -> None:
    obj = deployment(2, "web:1", fields=[])
    assert project(obj, CHART_FIELDS) == {
        "spec": {
            "replicas": 2,
            "template": {"spec": {"containers": [{"name": "web", "image": "web:1"}]}},
        }
    }


def test_projection_of_set_and_index_items() -> None:
    assert project(["a", "b", "c"], {'v:"c"': {}, 'v:"a"': {}}) == ["a", "c"]
    assert project([{"x": 1}, {"x": 2}], {"i:1": {"f:x": {}}}) == [{"x": 2}]


def test_defaulting_and_other_managers_make_no_noise() -> None:
    live = deployment(2, "web:1", fields=[managed(CHART_FIELDS), managed({"f:x": {}}, "hpa")])
    answer = deployment(2, "web:1", fields=[managed(CHART_FIELDS)])
    answer["spec"]["template"]["spec"]["containers"][1]["image"] = "proxy:2"  # not ours
    answer["status"] = {"replicas": 9}
    before, after = on_rudder_fields(live, answer, MANAGER)
    assert before == after


def test_a_field_the_chart_stops_setting_shows_as_removed() -> None:
    live = deployment(2, "web:1", fields=[managed(CHART_FIELDS)])
    fewer = {"f:spec": {"f:template": CHART_FIELDS["f:spec"]["f:template"]}}
    answer = deployment(1, "web:1", fields=[managed(fewer)])
    del answer["spec"]["replicas"]
    before, after = on_rudder_fields(live, answer, MANAGER)
    assert before["spec"]["replicas"] == 2
    assert "replicas" not in after["spec"]


def secret(data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": data}


def test_secret_values_never_appear_and_a_changed_one_is_marked() -> None:
    ref = ObjectRef("v1", "Secret", "app", "s")
    item = ObjectChange(
        ref,
        CHANGED,
        before=secret({"password": "aHVudGVyMg==", "user": "YWRtaW4="}),
        after=secret({"password": "c3dvcmRmaXNo", "user": "YWRtaW4="}),
    )
    text = unified(item)
    assert "aHVudGVyMg" not in text
    assert "c3dvcmRmaXNo" not in text
    assert "YWRtaW4" not in text
    assert "-  password: (secret value)" in text
    assert "+  password: (secret value, changed)" in text
    assert "   user: (secret value)" in text  # unchanged: context only
    assert "+  user" not in text
    assert "-  user" not in text


def test_an_added_secret_is_masked_too() -> None:
    item = ObjectChange(ObjectRef("v1", "Secret", "app", "s"), ADDED, after=secret({"k": "djE="}))
    text = unified(item)
    assert "djE=" not in text
    assert "--- /dev/null" in text
    assert "+++ next/Secret/app/s" in text


def test_values_from_secrets_are_redacted_in_the_text() -> None:
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    item = ObjectChange(
        ObjectRef("v1", "ConfigMap", "app", "c"),
        CHANGED,
        before={**config, "data": {"token": "old"}},
        after={**config, "data": {"token": "s3cr3t"}},
    )
    text = unified(item, redact=lambda s: s.replace("s3cr3t", "[redacted]"))
    assert "s3cr3t" not in text
    assert "+  token: '[redacted]'" in text or "+  token: [redacted]" in text


def test_unchanged_objects_have_no_text() -> None:
    item = ObjectChange(ObjectRef("v1", "ConfigMap", "app", "c"), UNCHANGED, {"a": 1}, {"a": 1})
    assert unified(item) == ""


def preview(**overrides: Any) -> Preview:
    fields: dict[str, Any] = {
        "action": "upgrade",
        "revision": 3,
        "chart_digest": "sha256:" + "a" * 64,
        "values_digest": "sha256:" + "b" * 64,
        "objects": (
            ObjectChange(ObjectRef("v1", "ConfigMap", "app", "c"), CHANGED, {"a": 1}, {"a": 2}),
            ObjectChange(ObjectRef("v1", "Service", "app", "old"), REMOVED, {"a": 1}),
        ),
    }
    fields.update(overrides)
    return Preview(**fields)


def test_the_digest_follows_inputs_revision_and_live_state() -> None:
    base = preview()
    assert base.digest == preview().digest
    assert base.digest.startswith("sha256:")
    assert preview(revision=4).digest != base.digest
    assert preview(values_digest="sha256:" + "c" * 64).digest != base.digest
    other_live = (
        ObjectChange(ObjectRef("v1", "ConfigMap", "app", "c"), CHANGED, {"a": 0}, {"a": 2}),
        base.objects[1],
    )
    assert preview(objects=other_live).digest != base.digest


def test_a_changed_live_secret_value_changes_the_digest_though_its_text_does_not() -> None:
    ref = ObjectRef("v1", "Secret", "app", "s")
    one = preview(
        objects=(ObjectChange(ref, CHANGED, secret({"k": "YQ=="}), secret({"k": "Yg=="})),)
    )
    two = preview(
        objects=(ObjectChange(ref, CHANGED, secret({"k": "Yw=="}), secret({"k": "Yg=="})),)
    )
    assert one.digest != two.digest
    assert unified(one.objects[0]) == unified(two.objects[0])


def test_random_rendering_keeps_the_digest_but_the_spec_generation_does_not() -> None:
    """A chart that renders random values (randAlphaNum) must stay approvable."""
    ref = ObjectRef("v1", "ConfigMap", "app", "c")
    one = preview(objects=(ObjectChange(ref, CHANGED, {"a": 1}, {"a": "x8Fq"}),))
    two = preview(objects=(ObjectChange(ref, CHANGED, {"a": 1}, {"a": "Zk3p"}),))
    assert one.digest == two.digest
    assert preview(generation=2).digest != preview(generation=3).digest


def test_secret_values_are_redacted_however_the_dump_would_write_them() -> None:
    pem = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END KEY-----\n"
    long = "correct horse battery staple " * 5
    accented = "pässwört\tzwei"
    secrets = (pem, long, accented)

    def redact(text: str) -> str:
        for value in secrets:
            text = text.replace(value, "[redacted]")
        return text

    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    item = ObjectChange(
        ObjectRef("v1", "ConfigMap", "app", "c"),
        ADDED,
        after={**config, "data": {"key.pem": pem, "phrase": long, "word": accented}},
    )
    text = unified(item, redact)
    for fragment in ("MIIEvQIBADAN", "battery staple", "pässw", "p\\xE4ssw", "zwei"):
        assert fragment not in text, fragment
    assert text.count("[redacted]") == 3


def test_an_object_rudder_owns_nothing_of_shows_nothing_not_everything() -> None:
    live = deployment(2, "web:1", fields=[managed(CHART_FIELDS, "helm")])
    assert on_rudder_fields(live, None, MANAGER) == ({}, None)
    # Fields a manager hands over to rudder (after a helm CLI revision) count as rudder's.
    before, _ = on_rudder_fields(live, None, MANAGER, handed_over=("helm",))
    assert before["spec"]["replicas"] == 2
    assert "status" not in before


def test_summary_and_status() -> None:
    item = ObjectChange(
        ObjectRef("v1", "ConfigMap", "app", "x"),
        CHANGED,
        {},
        {"a": 1},
        ("f:data owned by kubectl",),
    )
    p = preview(objects=(*preview().objects, item), hooks=("Job/migrate (pre-upgrade)",))
    assert p.summary() == "0 added, 2 changed, 1 removed, 1 conflicting, 1 hooks"
    status = p.as_status("2026-12-02T20:00:00Z")
    assert status["digest"] == p.digest
    assert (status["added"], status["changed"], status["removed"], status["conflicting"]) == (
        0,
        2,
        1,
        1,
    )
    assert "{'a': 1}" not in repr(item)  # live and next content stay out of reprs and logs
