"""Rendered files into and out of post-renderers, as Helm 4's renderResources does."""

from __future__ import annotations

import base64
import json
import re

import pytest

from rudder.postrender.checks import (
    NAME_LABEL,
    NAMESPACE_LABEL,
    OutputPolicy,
    check_additions,
    check_objects,
    with_origin,
)
from rudder.postrender.errors import POST_RENDER_FAILED, PostRenderError
from rudder.postrender.message import input_message, output_manifests
from rudder.postrender.stream import (
    FILENAME_ANNOTATION,
    annotated,
    as_files,
    dump_stream,
    groups,
    merge_files,
    parse_stream,
    passed_by,
)
from rudder.release.manifest import ManifestError, sort_manifests

RENDERED = {
    "shop/templates/NOTES.txt": "Thanks for installing",
    "shop/templates/_helpers.tpl": "",
    "shop/templates/config.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shop\ndata:\n"
        "  enabled: yes\n  port: '8080'\n"
        "---\n# only a comment\n"
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: shop\n"
    ),
    "shop/templates/job.yaml": (
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: migrate\n  annotations:\n"
        "    helm.sh/hook: pre-install\nspec: {}\n"
    ),
}


def paths(group_documents: tuple[tuple[str, str], ...]) -> list[str]:
    return [path for path, _ in group_documents]


def test_combined_sends_every_document_in_file_order_without_notes_or_partials() -> None:
    [group] = groups(RENDERED, "combined")
    assert group.post_render
    assert paths(group.documents) == [
        "shop/templates/config.yaml",
        "shop/templates/config.yaml",
        "shop/templates/job.yaml",
    ]


@pytest.mark.parametrize(("strategy", "hooks_rendered"), [("separate", True), ("nohooks", False)])
def test_separate_and_nohooks_split_hooks_from_the_rest(
    strategy: str, hooks_rendered: bool
) -> None:
    hooks, others = groups(RENDERED, strategy)
    assert (hooks.name, hooks.post_render) == ("hooks", hooks_rendered)
    assert paths(hooks.documents) == ["shop/templates/job.yaml"]
    assert (others.name, others.post_render) == ("manifests", True)
    assert len(others.documents) == 2


def test_each_object_carries_its_file_and_comes_back_to_it() -> None:
    [group] = groups(RENDERED, "combined")
    objects = annotated(group)
    assert {o["metadata"]["annotations"][FILENAME_ANNOTATION] for o in objects} == {
        "shop/templates/config.yaml",
        "shop/templates/job.yaml",
    }
    files = as_files(parse_stream(dump_stream(objects), "test"), "")
    assert sorted(files) == ["shop/templates/config.yaml", "shop/templates/job.yaml"]
    assert FILENAME_ANNOTATION not in files["shop/templates/config.yaml"]
    hooks, manifests = sort_manifests(files)
    assert [h.name for h in hooks] == ["migrate"]
    assert [(m.kind, m.path) for m in manifests] == [
        ("Secret", "shop/templates/config.yaml"),
        ("ConfigMap", "shop/templates/config.yaml"),
    ]
    # The annotations map the filename left behind is gone; the hook's own stay.
    assert "annotations" not in manifests[1].resource["metadata"]  # type: ignore[index]
    assert hooks[0].manifest.count("helm.sh/hook") == 1


def test_values_keep_the_meaning_helm_gives_them() -> None:
    """Written out and read back, every value means what it meant to Helm's reader
    (`yes` is a boolean to go-yaml v2, a quoted '8080' a string)."""
    [group] = groups(RENDERED, "combined")
    objects = annotated(group)
    assert parse_stream(dump_stream(objects), "test") == objects
    assert objects[0]["data"] == {"enabled": True, "port": "8080"}


def test_new_documents_get_helms_generated_file_names() -> None:
    made_up = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "extra"}}
    assert list(as_files([made_up], "")) == ["generated-by-postrender-0.yaml"]
    assert list(as_files([made_up], "hooks")) == ["generated-by-postrender-hooks-0.yaml"]


def test_passed_by_groups_and_merges_keep_every_document() -> None:
    hooks, _ = groups(RENDERED, "nohooks")
    untouched = passed_by(hooks)
    assert untouched == {"shop/templates/job.yaml": hooks.documents[0][1]}
    merged = merge_files([{"a.yaml": "x: 1"}, {"a.yaml": "y: 2", "b.yaml": "z: 3"}])
    assert merged == {"a.yaml": "x: 1\n---\ny: 2", "b.yaml": "z: 3"}


# --- the message --------------------------------------------------------------------------


def test_the_input_message_is_helms_proposed_fix_or_base64() -> None:
    text = json.loads(input_message("kind: A\n", ["--team", "x"]))
    assert text == {"manifests": "kind: A\n", "extraArgs": ["--team", "x"]}
    encoded = json.loads(input_message("kind: A\n", [], "base64"))
    assert base64.b64decode(encoded["manifests"]) == b"kind: A\n"


def test_output_is_read_as_text_or_base64() -> None:
    yaml_text = "apiVersion: v1\nkind: ConfigMap\n"
    assert output_manifests(json.dumps({"manifests": yaml_text}).encode(), "p") == yaml_text
    b64 = base64.b64encode(yaml_text.encode()).decode()
    assert output_manifests(json.dumps({"manifests": b64}).encode(), "p") == yaml_text
    assert output_manifests(b'{"manifests": ""}', "p") == ""


@pytest.mark.parametrize(
    "output",
    [b"not json", b'{"manifests": {}}', b"[]", b'{"other": "x"}'],
    ids=["not-json", "helm-4.2.3-buffer", "not-object", "no-manifests"],
)
def test_output_that_is_not_a_message_is_refused_naming_the_plugin(output: bytes) -> None:
    with pytest.raises(PostRenderError) as failure:
        output_manifests(output, "spec.postRenderers[0] (p 1.0.0)")
    assert failure.value.reason == POST_RENDER_FAILED
    assert failure.value.message.startswith("spec.postRenderers[0] (p 1.0.0): ")


# --- checks -------------------------------------------------------------------------------


def obj(kind: str, name: str, namespace: str | None = None, api: str = "v1") -> dict:
    metadata: dict = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": api, "kind": kind, "metadata": metadata}


def test_every_object_needs_apiversion_kind_and_name() -> None:
    check_objects([obj("ConfigMap", "a")], "p")
    with pytest.raises(PostRenderError, match=r"p: output document 2 has no kind, metadata.name"):
        check_objects([obj("ConfigMap", "a"), {"apiVersion": "v1", "metadata": {}}], "p")


def test_denied_kinds_and_namespaces_are_refused_only_when_added() -> None:
    crb = obj("ClusterRoleBinding", "x", api="rbac.authorization.k8s.io/v1")
    policy = OutputPolicy(
        deny_kinds=frozenset({"rbac.authorization.k8s.io/ClusterRoleBinding"}),
        deny_namespaces=frozenset({"kube-system"}),
    )
    check_additions([crb], [crb], policy, "p")  # the chart's own: the chart's business
    added = re.escape("added ClusterRoleBinding.rbac.authorization.k8s.io x")
    with pytest.raises(PostRenderError, match=added):
        check_additions([], [crb], policy, "p")
    with pytest.raises(PostRenderError, match="namespace kube-system is denied"):
        check_additions([], [obj("ConfigMap", "c", "kube-system")], policy, "p")
    check_additions([], [obj("ConfigMap", "c", "shop")], policy, "p")
    by_kind = OutputPolicy(deny_kinds=frozenset({"ClusterRoleBinding"}))
    with pytest.raises(PostRenderError):
        check_additions([], [crb], by_kind, "p")


def test_origin_labels_are_added_and_nothing_else_changes() -> None:
    original = obj("ConfigMap", "a")
    original["metadata"]["labels"] = {"app": "shop"}
    [labelled] = with_origin([original], "shop", "team-a")
    assert labelled["metadata"]["labels"] == {
        "app": "shop",
        NAME_LABEL: "shop",
        NAMESPACE_LABEL: "team-a",
    }
    assert original["metadata"]["labels"] == {"app": "shop"}


@pytest.mark.parametrize(
    "text",
    ["y", "Y", "n", "N", "08", "08540", "1e3", "0o17", "8217e93", "~", "null", "", "0x10",
     ".5", "+1", "1_000", "on", "yes", "true", "<<", "-", "a: b", "#x", "@x", "'q'", '"dq"',
     "multi\nline", " padded ", "ünïcode"],
)  # fmt: skip
def test_every_string_and_key_reads_back_as_the_same_string(text: str) -> None:
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
           "data": {"value": text, text or "empty": "key"}}  # fmt: skip
    assert parse_stream(dump_stream([obj]), "test") == [obj]


def test_aliases_in_post_renderer_output_are_refused() -> None:
    head = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
    bomb = head + "data:\n  a: &a [x, x]\n  b: [*a, *a]\n"
    with pytest.raises(ManifestError, match="aliases"):
        parse_stream(bomb, "p")


def hook(kind: str, name: str, events: str = "pre-install") -> dict:
    made = obj(kind, name)
    made["metadata"]["annotations"] = {"helm.sh/hook": events}
    return made


@pytest.mark.parametrize(
    ("before", "after", "says"),
    [
        (
            [obj("ConfigMap", "a")],
            [obj("ConfigMap", "a"), hook("Job", "x")],
            "may not add Helm hooks",
        ),
        ([obj("ConfigMap", "a")], [hook("ConfigMap", "a")], "may not make or unmake hooks"),
        ([hook("Job", "x")], [obj("Job", "x")], "may not make or unmake hooks"),
        ([hook("Job", "x")], [hook("Job", "x", "post-delete")], "may not make or unmake hooks"),
    ],
    ids=["added-hook", "made-hook", "unmade-hook", "other-events"],
)
def test_post_renderers_may_not_make_or_change_hooks(before: list, after: list, says: str) -> None:
    with pytest.raises(PostRenderError, match=says):
        check_additions(before, after, OutputPolicy(), "p")


def test_writing_out_the_namespace_is_the_same_object() -> None:
    policy = OutputPolicy(deny_kinds=frozenset({"ConfigMap"}))
    check_additions([hook("ConfigMap", "a")], [_in(hook("ConfigMap", "a"), "shop")], policy, "p")
    check_additions([_in(obj("ConfigMap", "a"), "shop")], [obj("ConfigMap", "a")], policy, "p")
    with pytest.raises(PostRenderError, match="denied"):
        check_additions(
            [_in(obj("ConfigMap", "a"), "shop")], [_in(obj("ConfigMap", "a"), "other")], policy, "p"
        )


def _in(made: dict, namespace: str) -> dict:
    made["metadata"]["namespace"] = namespace
    return made


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ({"apiVersion": "v1", "kind": "List", "metadata": {"name": "l"}}, "is a List"),
        (_in(obj("ConfigMap", "a"), ["x"]), "metadata.namespace"),  # type: ignore[arg-type]
        ({**obj("ConfigMap", "a"), "metadata": {"name": "a", "labels": {"n": 1}}}, "labels"),
        (
            {**obj("ConfigMap", "a"), "metadata": {"name": "a", "annotations": {
                FILENAME_ANNOTATION: "shop/templates/NOTES.txt"}}},
            "holds no objects",
        ),
    ],
    ids=["list", "namespace-list", "label-number", "notes-file"],
)  # fmt: skip
def test_output_objects_must_have_the_shape_rudder_applies(document: dict, says: str) -> None:
    with pytest.raises(PostRenderError, match=says):
        check_objects([document], "p")
