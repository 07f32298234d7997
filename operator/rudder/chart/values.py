"""Composing a release's values the way Helm does.

Two different operations, as in Helm:

- `merge_values` composes the *user's* value sets (`spec.valuesFrom` in order, then
  `spec.values`) like `helm -f a.yaml -f b.yaml` (Helm's `mergeMaps`, which Flux uses for
  the same fields): maps merge recursively, anything else in the override replaces,
  and a `null` is kept, not dropped: it is the user's instruction to delete the chart's
  default for that key. The merged values are what Helm stores as the release's `config`.
- `coalesce_values` applies them to a chart's defaults (Helm's `CoalesceValues`, which
  the render performs): this is where a user's `null` deletes the default key.

Dropping a `null` at merge time would be wrong: `values: {ingress: null}` over a
`valuesFrom` that sets `ingress` would bring the chart's default `ingress` back.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any


def merge_values(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` merged over `base` (Helm's `mergeMaps`); the inputs are not modified."""
    merged: dict[str, Any] = copy.deepcopy(dict(base))
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            merged[key] = merge_values(current, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _without_nulls(table: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: _without_nulls(value) if isinstance(value, Mapping) else copy.deepcopy(value)
        for key, value in table.items()
        if value is not None
    }


def _coalesce_tables(user: dict[str, Any], defaults: Mapping[str, Any]) -> None:
    """Fill `user` (in place) from `defaults`, which hold no nulls; the user's values win."""
    for key, default in defaults.items():
        if key not in user:
            user[key] = copy.deepcopy(default)
        elif user[key] is None:
            del user[key]
        elif isinstance(default, Mapping) and isinstance(user[key], dict):
            _coalesce_tables(user[key], default)
        # Otherwise the user's value stands (Helm warns when a table meets a non-table).


def coalesce_values(
    chart_defaults: Mapping[str, Any], user_values: Mapping[str, Any]
) -> dict[str, Any]:
    """The values a chart without subcharts renders with (Helm's `CoalesceValues`).

    - A user `null` deletes the key when the chart has a default for it; a `null` the
      chart has no default for stays (nested), as Helm leaves it.
    - Maps merge recursively; any other user value replaces the default, and a user map
      replaces a non-map default (and the reverse).
    - `null`s among the chart's own defaults are dropped.

    Subcharts and `global` propagation are not modelled: the render does those.
    """
    result: dict[str, Any] = copy.deepcopy(dict(user_values))
    for key, default in chart_defaults.items():
        if key in result:
            value = result[key]
            if value is None:
                del result[key]
            elif isinstance(value, dict) and isinstance(default, Mapping):
                _coalesce_tables(value, _without_nulls(default))
        elif isinstance(default, Mapping):
            result[key] = _without_nulls(default)
        elif default is not None:
            result[key] = copy.deepcopy(default)
    return result


def split_path(path: str) -> list[str]:
    """The keys of a dotted `targetPath`: `a.b.c` -> [a, b, c].

    `\\.` is a dot inside a key and `\\\\` a backslash (`nginx\\.ingress\\.kubernetes\\.io/x`
    is one key); any other backslash, and an empty key, are errors.
    """
    keys: list[str] = []
    current: list[str] = []
    chars = iter(path)
    for char in chars:
        if char == "\\":
            escaped = next(chars, None)
            if escaped not in (".", "\\"):
                raise ValueError("in a values path, '\\' may only escape '.' or '\\'")
            current.append(escaped)
        elif char == ".":
            keys.append("".join(current))
            current = []
        else:
            current.append(char)
    keys.append("".join(current))
    if any(not key for key in keys):
        raise ValueError("a values path may not have an empty key")
    return keys


def set_at_path(values: Mapping[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `values` with `value` at the dotted `path` (see `split_path`).

    Missing maps on the way are created; a non-map on the way is replaced by a map, as
    Helm's `--set` does.
    """
    keys = split_path(path)
    result: dict[str, Any] = copy.deepcopy(dict(values))
    table = result
    for key in keys[:-1]:
        child = table.get(key)
        if not isinstance(child, dict):
            child = {}
            table[key] = child
        table = child
    table[keys[-1]] = copy.deepcopy(value)
    return result


def values_digest(values: Mapping[str, Any]) -> str:
    """`sha256:<hex>` of the canonical JSON of `values` (sorted keys, no spaces, UTF-8).

    Independent of dict ordering; `1` and `1.0` differ, as they may render differently.
    """
    canonical = json.dumps(
        values, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()
