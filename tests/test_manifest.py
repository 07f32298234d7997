"""Splitting, sorting and assembling manifests exactly as Helm does.

The judges are Helm itself: the release JSON the v4.2.3 CLI wrote (a fixture) and the
manifest Helm's install action builds in helm-python-sdk (a dry run, no cluster).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rudder.release.codec import Hook, Release, release_to_json
from rudder.release.manifest import (
    INSTALL_ORDER,
    UNINSTALL_ORDER,
    Manifest,
    ManifestError,
    assemble_manifest,
    hook_resource,
    hooks_for_event,
    kept_on_uninstall,
    parse_document,
    release_notes,
    sort_manifests,
    split_manifests,
    uninstall_order,
    with_default_delete_policy,
)

FIXTURES = Path(__file__).parent / "fixtures" / "releases"


# --- splitting ------------------------------------------------------------------------------


def test_a_separator_with_a_comment_splits_and_the_comment_starts_the_next_document() -> None:
    text = "a: 1\n---  # second\nb: 2\n"
    assert split_manifests(text) == ["a: 1", "# second\nb: 2\n"]


def test_text_glued_to_a_separator_starts_the_next_document() -> None:
    assert split_manifests("a: 1\n---b: 2") == ["a: 1", "b: 2"]


def test_an_indented_separator_does_not_split() -> None:
    text = "a: |\n  ---\n  x\n"
    assert split_manifests(text) == [text]


def test_only_the_last_document_keeps_its_trailing_whitespace() -> None:
    text = "\n\n  a: 1  \n\n---\n\n  b: 2\n\n"
    assert split_manifests(text) == ["a: 1", "b: 2\n\n"]


def test_blank_documents_are_dropped_and_comment_only_ones_kept() -> None:
    text = "---\n# only a comment\n---\na: 1\n"
    assert split_manifests(text) == ["# only a comment", "a: 1\n"]
    assert split_manifests(" \n---\n \n") == []


def test_a_separator_right_after_another_stays_in_the_document() -> None:
    # The first match swallows the newline the second `---` would need.
    assert split_manifests("a: 1\n---\n---\nb: 2") == ["a: 1", "---\nb: 2"]


plain_lines = st.text(alphabet="abc: #-\t", min_size=1, max_size=12).filter(
    # A first line of " ---" would be a separator once leading whitespace is trimmed.
    lambda line: not line.lstrip(" \t").startswith("-") and line.strip(" \t")
)
documents = st.lists(plain_lines, min_size=1, max_size=4).map("\n".join)


@settings(max_examples=200)
@given(
    st.lists(documents, min_size=1, max_size=5),
    st.sampled_from(["\n---\n", "\n---  # c\n", "  \n---\t\n\n", "\n---"]),
)
def test_split_returns_the_documents_joined_by_separators(docs: list[str], sep: str) -> None:
    pieces = split_manifests(sep.join(docs))
    # Whitespace around a separator is consumed, up to a comment after it, which then
    # opens the next document; the last document keeps its trailing whitespace.
    expected = []
    for index, doc in enumerate(docs):
        if index > 0:
            doc = "# c\n" + doc if "#" in sep else doc.lstrip(" \t")
        expected.append(doc.rstrip(" \t") if index < len(docs) - 1 else doc)
    expected[0] = expected[0].lstrip(" \t")
    assert pieces == expected


# --- parsing: go-yaml v2 scalars ------------------------------------------------------------


@pytest.mark.parametrize(
    ("scalar", "value"),
    [
        ("y", True),
        ("on", True),
        ("NO", False),
        ("~", None),
        ("1:20", "1:20"),
        ("2024-01-01", "2024-01-01"),
        ("1e3", 1000),
        ("0x1F", 31),
        ("0o17", 15),
        ("0777", 511),
        ("08", 8),
        ("1_000", 1000),
        (".5", 0.5),
        ("+.5", 0.5),
        ("=", "="),
        ("'yes'", "yes"),
        ("9223372036854775808", 9223372036854775808),
        ("1e400", "1e400"),
        ("t", "t"),
    ],
)
def test_scalars_read_as_go_yaml_v2_reads_them(scalar: str, value: Any) -> None:
    resource = parse_document(f"v: {scalar}\n", "t.yaml").resource
    assert resource == {"v": value}
    assert type(resource["v"]) is type(value)


def test_keys_become_strings_as_sigs_yaml_makes_them() -> None:
    resource = parse_document("1: a\ntrue: b\n1.5: c\nn: d\n", "t.yaml").resource
    assert resource == {"1": "a", "true": "b", "1.5": "c", "false": "d"}


def test_head_fields_turn_scalars_into_strings() -> None:
    doc = "apiVersion: 1\nkind: on\nmetadata:\n  name: 1.0\n  annotations:\n    w: 5\n    x: null\n"
    manifest = parse_document(doc, "t.yaml")
    assert (manifest.api_version, manifest.kind, manifest.name) == ("1", "true", "1")
    assert manifest.annotations == {"w": "5", "x": ""}


@pytest.mark.parametrize(
    "doc",
    [
        "- a list\n- hunter2-SECRET\n",
        "just a string hunter2-SECRET\n",
        "kind: [hunter2-SECRET]\n",
        "metadata: [hunter2-SECRET]\n",
        "metadata:\n  annotations: hunter2-SECRET\n",
        "a: [unclosed hunter2-SECRET\n",
        "a: .nan\nb: hunter2-SECRET\n",
    ],
)
def test_documents_helm_refuses_are_errors_that_do_not_quote_them(doc: str) -> None:
    with pytest.raises(ManifestError) as caught:
        sort_manifests({"c/templates/x.yaml": doc})
    assert "c/templates/x.yaml" in str(caught.value)
    assert "hunter2" not in str(caught.value)


# --- sorting --------------------------------------------------------------------------------


def _doc(kind: str, name: str, annotations: str = "") -> str:
    meta = f"metadata:\n  name: {name}\n"
    if annotations:
        meta += "  annotations:\n" + "".join(f"    {line}\n" for line in annotations.split(";"))
    return f"apiVersion: v1\nkind: {kind}\n{meta}"


def test_manifests_follow_install_order_then_unknown_kinds_alphabetically() -> None:
    rendered = {
        "c/templates/b.yaml": _doc("Deployment", "d") + "---\n" + _doc("Zebra", "z"),
        "c/templates/a.yaml": _doc("Widget", "w") + "---\n" + _doc("Namespace", "ns"),
        "c/templates/c.yaml": _doc("ConfigMap", "cm2") + "---\n" + _doc("Apple", "a"),
        "c/templates/0.yaml": _doc("ConfigMap", "cm1"),
    }
    _, manifests = sort_manifests(rendered)
    assert [(m.kind, m.name) for m in manifests] == [
        ("Namespace", "ns"),
        ("ConfigMap", "cm1"),  # same kind: file path order, then order in the file
        ("ConfigMap", "cm2"),
        ("Deployment", "d"),
        ("Apple", "a"),
        ("Widget", "w"),
        ("Zebra", "z"),
    ]


def test_partials_notes_and_blank_files_are_not_manifests() -> None:
    rendered = {
        "c/templates/_helpers.tpl": _doc("ConfigMap", "partial"),
        "c/templates/NOTES.txt": "Thanks!",
        "c/charts/sub/templates/NOTES.txt": "Sub thanks!",
        "c/templates/blank.yaml": " \n\n",
        "c/templates/cm.yaml": _doc("ConfigMap", "cm"),
    }
    hooks, manifests = sort_manifests(rendered)
    assert hooks == []
    assert [m.name for m in manifests] == ["cm"]
    assert release_notes(rendered, "c") == "Thanks!"
    assert release_notes({"c/charts/sub/templates/NOTES.txt": "x"}, "c") == ""


def test_comment_only_documents_stay_in_the_manifest_without_an_object() -> None:
    _, manifests = sort_manifests({"c/templates/x.yaml": "# nothing here\n"})
    assert [(m.kind, m.resource, m.content) for m in manifests] == [("", None, "# nothing here\n")]


def test_hooks_carry_events_weight_and_policies_as_helm_records_them() -> None:
    annotations = (
        '"helm.sh/hook": " Pre-Install, test-success ";'
        '"helm.sh/hook-weight": "-3";'
        '"helm.sh/hook-delete-policy": "hook-succeeded, Before-Hook-Creation";'
        '"helm.sh/hook-output-log-policy": hook-failed'
    )
    rendered = {"c/templates/job.yaml": _doc("Job", "migrate", annotations)}
    hooks, manifests = sort_manifests(rendered)
    assert manifests == []
    assert hooks == [
        Hook(
            name="migrate",
            kind="Job",
            path="c/templates/job.yaml",
            manifest=rendered["c/templates/job.yaml"],
            events=["pre-install", "test"],
            weight=-3,
            delete_policies=["hook-succeeded", "before-hook-creation"],
            output_log_policies=["hook-failed"],
        )
    ]
    resource = hook_resource(hooks[0])
    assert resource is not None
    assert resource["metadata"]["annotations"]["helm.sh/hook-weight"] == "-3"


@pytest.mark.parametrize(
    ("weight", "expected"),
    [
        ("5", 5),
        ('"+7"', 7),
        ('" 3"', 0),
        ("abc", 0),
        ("1.0", 1),
        ("1e7", 0),
        ('"99999999999999999999"', 0),
    ],
)
def test_hook_weight_is_parsed_like_go_atoi(weight: str, expected: int) -> None:
    annotations = f'"helm.sh/hook": post-install;"helm.sh/hook-weight": {weight}'
    hooks, _ = sort_manifests({"c/templates/h.yaml": _doc("ConfigMap", "h", annotations)})
    assert [hook.weight for hook in hooks] == [expected]


def test_a_hook_with_an_unknown_event_is_dropped_entirely() -> None:
    rendered = {
        "c/templates/h.yaml": _doc("ConfigMap", "h", '"helm.sh/hook": pre-install,pre-lunch'),
        "c/templates/e.yaml": _doc("ConfigMap", "e", '"helm.sh/hook": ""'),
    }
    assert sort_manifests(rendered) == ([], [])


def test_annotated_documents_without_a_hook_are_manifests() -> None:
    rendered = {"c/templates/cm.yaml": _doc("ConfigMap", "cm", "a: b")}
    _, manifests = sort_manifests(rendered)
    assert [m.annotations for m in manifests] == [{"a": "b"}]


def test_hooks_are_sorted_by_kind_and_run_by_weight_then_name() -> None:
    rendered = {
        "c/templates/h.yaml": "---\n".join(
            [
                _doc("Job", "b", '"helm.sh/hook": post-install;"helm.sh/hook-weight": "1"'),
                _doc("Job", "a", '"helm.sh/hook": post-install;"helm.sh/hook-weight": "1"'),
                _doc("ConfigMap", "z", '"helm.sh/hook": post-install;"helm.sh/hook-weight": "0"'),
                _doc("Secret", "s", '"helm.sh/hook": pre-install'),
            ]
        )
    }
    hooks, _ = sort_manifests(rendered)
    assert [h.name for h in hooks] == ["s", "z", "b", "a"]
    assert [h.name for h in hooks_for_event(hooks, "post-install")] == ["z", "a", "b"]


kinds = st.sampled_from([*INSTALL_ORDER[:12], "Widget", "Apple", "Zebra", ""])


@settings(max_examples=100)
@given(
    st.dictionaries(st.sampled_from("abcde"), st.lists(kinds, min_size=1, max_size=4), max_size=5)
)
def test_sorting_orders_by_kind_and_keeps_file_order_among_equals(
    files: dict[str, list[str]],
) -> None:
    rendered = {
        f"c/templates/{name}.yaml": "---\n".join(
            _doc(kind, f"{name}{index}") if kind else "# comment\n"
            for index, kind in enumerate(kind_list)
        )
        for name, kind_list in files.items()
    }
    _, manifests = sort_manifests(rendered)
    in_file_order = [
        (name, index, kind) for name in sorted(files) for index, kind in enumerate(files[name])
    ]
    assert len(manifests) == len(in_file_order)

    def rank(kind: str) -> tuple[int, str]:
        return (INSTALL_ORDER.index(kind), "") if kind in INSTALL_ORDER else (99, kind)

    expected = sorted(in_file_order, key=lambda item: rank(item[2]))
    assert [m.kind for m in manifests] == [kind for _, _, kind in expected]
    named = [m.name for m in manifests if m.kind]
    assert named == [f"{name}{index}" for name, index, kind in expected if kind]


# --- the stored manifest --------------------------------------------------------------------


def test_assembled_manifest_hooks_and_notes_equal_what_the_helm_cli_stored() -> None:
    stored = json.loads((FIXTURES / "showcase-dry-run.helm4.json").read_text())
    values = json.loads((FIXTURES / "showcase-values.json").read_text())
    with helm_python.Chart.load(FIXTURES / "showcase") as chart:
        rendered = chart.render(values, name="demo", namespace="apps", revision=1, is_install=True)
    hooks, manifests = sort_manifests(rendered)
    assert assemble_manifest(manifests) == stored["manifest"]
    as_stored = release_to_json(Release(name="demo", version=1, namespace="apps", hooks=hooks))
    assert as_stored["hooks"] == stored["hooks"]
    assert release_notes(rendered, "showcase") == stored["info"]["notes"]


def test_assembly_is_source_comment_then_document_per_manifest() -> None:
    manifests = [
        Manifest(path="c/templates/a.yaml", content="a: 1", resource={"a": 1}),
        Manifest(path="c/templates/b.yaml", content="b: 2\n\n", resource={"b": 2}),
    ]
    assert assemble_manifest(manifests) == (
        "---\n# Source: c/templates/a.yaml\na: 1\n---\n# Source: c/templates/b.yaml\nb: 2\n\n\n"
    )


@pytest.fixture(scope="module")
def helm_offline() -> Iterator[helm_python.Config]:
    # Memory storage and a client-side dry run: Helm's install action, no cluster.
    with helm_python.Config(
        storage_driver="memory", namespace="apps", kube_apiserver="https://127.0.0.1:1"
    ) as config:
        yield config


hook_annotations = st.sampled_from(
    [
        "",
        "a: b",
        '"helm.sh/hook": pre-install',
        '"helm.sh/hook": post-install,pre-upgrade;"helm.sh/hook-weight": "2"',
        '"helm.sh/hook": not-an-event',
        '"helm.sh/resource-policy": keep',
    ]
)
generated_docs = st.one_of(
    st.builds(
        _doc,
        st.sampled_from(["ConfigMap", "Secret", "Service", "Namespace", "Widget", "Job", "Role"]),
        st.sampled_from(["one", "two", "three"]),
        hook_annotations,
    ),
    # Rarely a document Helm refuses, so most generated charts get compared.
    st.sampled_from(["# a comment only", "   "] * 6 + ["- not\n- a mapping"]),
)
generated_files = st.tuples(
    st.lists(generated_docs, min_size=1, max_size=6),
    st.sampled_from(["---\n", "---  # note\n", "\n---\n\n", "---\t\n"]),
    st.sampled_from(["", "\n", "\n\n  \n"]),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.dictionaries(
        st.sampled_from(["a.yaml", "b.yaml", "sub/c.yaml", "_p.tpl", "NOTES.txt", "z.txt"]),
        generated_files,
        min_size=1,
        max_size=5,
    )
)
def test_manifest_and_notes_equal_helms_install_for_generated_charts(
    helm_offline: helm_python.Config, files: dict[str, tuple[list[str], str, str]]
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory) / "gen"
        (root / "templates" / "sub").mkdir(parents=True)
        (root / "Chart.yaml").write_text("apiVersion: v2\nname: gen\nversion: 0.1.0\n")
        for name, (docs, separator, trailer) in files.items():
            (root / "templates" / name).write_text(separator.join(docs) + trailer)
        with helm_python.Chart.load(root) as chart:
            rendered = chart.render({}, name="rel", namespace="apps", revision=1, is_install=True)
            try:
                _, manifests = sort_manifests(rendered)
            except ManifestError:
                event("both refuse the chart")
                with pytest.raises(helm_python.HelmError):
                    helm_offline.install(chart, "rel", {}, namespace="apps", dry_run="client")
                return
            result = helm_offline.install(chart, "rel", {}, namespace="apps", dry_run="client")
    event(f"compared {len(manifests)} manifests")
    assert assemble_manifest(manifests) == result.get("manifest", "")
    assert release_notes(rendered, "gen") == result.get("notes", "")


# --- uninstall ------------------------------------------------------------------------------


def test_uninstall_follows_uninstall_order_and_spares_resource_policy_documents() -> None:
    docs = [
        _doc("Namespace", "ns"),
        _doc("ValidatingWebhookConfiguration", "vw"),
        _doc("ConfigMap", "kept", '"helm.sh/resource-policy": " Keep "'),
        _doc("ConfigMap", "odd", '"helm.sh/resource-policy": something-else'),
        _doc("Service", "svc"),
        _doc("MutatingWebhookConfiguration", "mw"),
    ]
    stored = assemble_manifest(
        Manifest(path="c/templates/x.yaml", content=d, resource=None) for d in docs
    )
    assert [m.name for m in uninstall_order(stored)] == ["vw", "mw", "svc", "ns"]
    assert [m.name for m in kept_on_uninstall(stored)] == ["kept"]
    assert UNINSTALL_ORDER[:2] == ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")


def test_uninstall_visits_stored_documents_in_string_order_among_equal_kinds() -> None:
    # Helm names the stored documents manifest-0..n and sorts those names as strings.
    docs = [_doc("ConfigMap", f"cm{n}") for n in range(12)]
    stored = assemble_manifest(
        Manifest(path="c/templates/x.yaml", content=d, resource=None) for d in docs
    )
    names = [m.name for m in uninstall_order(stored)]
    assert names == ["cm0", "cm1", "cm10", "cm11", *[f"cm{n}" for n in range(2, 10)]]


def test_a_run_hook_without_delete_policy_is_recorded_with_before_hook_creation() -> None:
    hooks, _ = sort_manifests(
        {
            "c/templates/h.yaml": _doc("ConfigMap", "a", '"helm.sh/hook": post-install')
            + "---\n"
            + _doc(
                "ConfigMap",
                "b",
                '"helm.sh/hook": post-install;"helm.sh/hook-delete-policy": hook-succeeded',
            )
        }
    )
    assert [with_default_delete_policy(h).delete_policies for h in hooks] == [
        ["before-hook-creation"],
        ["hook-succeeded"],
    ]
