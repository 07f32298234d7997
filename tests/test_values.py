"""Merging user values, coalescing them with chart defaults, paths and digests.

Coalescing is checked against Helm itself: helm-python-sdk's `Chart.merge_values` runs
Helm's CoalesceValues for a chart whose values.yaml holds the generated defaults.
"""

from __future__ import annotations

import copy
import json
import random
import tempfile
from pathlib import Path
from typing import Any

import helm_python
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rudder.chart.values import (
    coalesce_values,
    merge_values,
    set_at_path,
    split_path,
    values_digest,
)

# --- merging user values --------------------------------------------------------------------


def test_maps_merge_and_everything_else_replaces() -> None:
    base = {"image": {"repository": "app", "tag": "1"}, "ports": [80, 443], "debug": True}
    override = {"image": {"tag": "2"}, "ports": [8080], "debug": {"level": 3}}
    assert merge_values(base, override) == {
        "image": {"repository": "app", "tag": "2"},
        "ports": [8080],
        "debug": {"level": 3},
    }


def test_a_null_override_is_kept_so_the_chart_default_is_deleted_later() -> None:
    from_config_map = {"ingress": {"host": "example.com"}}
    inline = {"ingress": None}
    merged = merge_values(from_config_map, inline)
    assert merged == {"ingress": None}
    chart_defaults = {"ingress": {"enabled": True, "className": "nginx"}, "replicas": 1}
    # Had the null been dropped while merging, the chart's ingress would come back.
    assert coalesce_values(chart_defaults, merged) == {"replicas": 1}


def test_merging_does_not_modify_its_inputs() -> None:
    base = {"a": {"b": [1, {"c": 2}]}}
    override = {"a": {"d": {"e": 3}}}
    before = copy.deepcopy((base, override))
    merged = merge_values(base, override)
    merged["a"]["b"][1]["c"] = 99
    merged["a"]["d"]["e"] = 99
    assert (base, override) == before


keys = st.sampled_from(list("abcde"))
scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from(["x", "yes", "1.5"])
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(keys, inner, max_size=3),
    max_leaves=10,
)
value_maps = st.dictionaries(keys, values, max_size=4)


@given(value_maps, value_maps)
def test_merge_keeps_every_key_and_the_override_wins_unless_both_are_maps(
    base: dict[str, Any], override: dict[str, Any]
) -> None:
    merged = merge_values(base, override)
    assert set(merged) == set(base) | set(override)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            assert merged[key] == merge_values(base[key], value)
        else:
            assert merged[key] == value
    assert merge_values(base, {}) == base
    assert merge_values({}, override) == override


# --- coalescing with chart defaults, against Helm -------------------------------------------


def helm_coalesce(defaults: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        chart = Path(directory)
        (chart / "Chart.yaml").write_text("apiVersion: v2\nname: c\nversion: 0.1.0\n")
        (chart / "values.yaml").write_text(json.dumps(defaults))  # JSON is YAML
        with helm_python.Chart.load(chart) as loaded:
            result: dict[str, Any] = loaded.merge_values(user)
            return result


@pytest.mark.parametrize(
    ("defaults", "user", "expected"),
    [
        ({"a": 1, "b": 2}, {"a": None}, {"b": 2}),  # null deletes the default
        ({"a": {"x": 1, "y": 2}}, {"a": {"x": None}}, {"a": {"y": 2}}),
        ({}, {"a": None, "b": {"c": None}}, {"a": None, "b": {"c": None}}),  # no default: kept
        ({"a": {"x": 1}}, {"a": {"z": None}}, {"a": {"x": 1, "z": None}}),
        ({"a": None}, {"a": None}, {}),
        ({"a": {"x": None}}, {"a": {"x": None}}, {"a": {"x": None}}),  # Helm's nested quirk
        ({"a": {"x": None, "y": 1}}, {}, {"a": {"y": 1}}),  # nulls among defaults dropped
        ({"a": {"x": 1}}, {"a": [1]}, {"a": [1]}),  # user non-map replaces a map
        ({"a": 5}, {"a": {"x": 1}}, {"a": {"x": 1}}),  # user map replaces a non-map
    ],
)
def test_coalescing_examples_match_helm(
    defaults: dict[str, Any], user: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert coalesce_values(defaults, user) == expected
    assert helm_coalesce(defaults, user) == expected


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value_maps, value_maps, value_maps)
def test_coalescing_merged_user_values_matches_helm(
    defaults: dict[str, Any], first: dict[str, Any], second: dict[str, Any]
) -> None:
    user = merge_values(first, second)
    assert coalesce_values(defaults, user) == helm_coalesce(defaults, user)


# --- target paths ---------------------------------------------------------------------------


def test_set_at_path_creates_maps_and_replaces_non_maps() -> None:
    values = {"a": {"keep": 1, "b": "scalar"}}
    assert set_at_path(values, "a.b.c", 2) == {"a": {"keep": 1, "b": {"c": 2}}}
    assert set_at_path({}, "x", [1]) == {"x": [1]}
    assert values == {"a": {"keep": 1, "b": "scalar"}}


def test_escaped_dots_stay_inside_a_key() -> None:
    path = r"podAnnotations.prometheus\.io/scrape"
    assert split_path(path) == ["podAnnotations", "prometheus.io/scrape"]
    assert set_at_path({}, path, "true") == {"podAnnotations": {"prometheus.io/scrape": "true"}}
    assert split_path(r"a\\.b") == ["a\\", "b"]


@pytest.mark.parametrize("path", ["", "a..b", ".a", "a.", r"a\b", "a\\"])
def test_malformed_paths_are_refused(path: str) -> None:
    with pytest.raises(ValueError, match="values path"):
        split_path(path)


path_keys = st.text(alphabet="ab.\\/", min_size=1, max_size=4)


@given(value_maps, st.lists(path_keys, min_size=1, max_size=3), values)
def test_the_value_set_at_a_path_is_found_there(
    base: dict[str, Any], path: list[str], value: Any
) -> None:
    escaped = ".".join(key.replace("\\", "\\\\").replace(".", "\\.") for key in path)
    assert split_path(escaped) == path
    result = set_at_path(base, escaped, value)
    found: Any = result
    for key in path:
        found = found[key]
    assert found == value
    assert set(result) == set(base) | {path[0]}


# --- digests --------------------------------------------------------------------------------


@given(value_maps, st.randoms(use_true_random=False))
def test_digest_ignores_key_order(values_map: dict[str, Any], rng: random.Random) -> None:
    def shuffled(value: Any) -> Any:
        if isinstance(value, dict):
            items = list(value.items())
            rng.shuffle(items)
            return {k: shuffled(v) for k, v in items}
        if isinstance(value, list):
            return [shuffled(item) for item in value]
        return value

    assert values_digest(shuffled(values_map)) == values_digest(values_map)


def test_digest_is_sha256_of_canonical_json_and_tells_values_apart() -> None:
    digest = values_digest({"b": 1, "a": "é"})
    assert digest == values_digest({"a": "é", "b": 1})
    assert digest.startswith("sha256:")
    assert len(digest) == len("sha256:") + 64
    assert values_digest({"a": 1}) != values_digest({"a": 1.0})
    assert values_digest({"a": 1}) != values_digest({"a": "1"})
    assert values_digest({}) != values_digest({"a": None})
