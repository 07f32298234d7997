"""Drift in keyed lists that a forced apply cannot express, read from managedFields.

An item a drift manager added to a keyed list the chart sets (a renamed container, env var
or Service port is a new item beside the chart's) is not the chart's: SSA never removes
another manager's item, so the forced dry-run keeps it and a forced apply leaves it behind.
`foreign_items` finds such items (only items no manager outside the drift managers owns);
`hand_over` moves them to rudder in managedFields, so the forced apply that follows removes
them as SSA removes whatever its applier stopped setting.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rudder.kube.client import JSON
from rudder.kube.ssa import merge_field_sets

Path = tuple[str, ...]


@dataclass(frozen=True)
class ForeignItem:
    """A list item the chart does not set, in a keyed list it does set, owned by drift
    managers only. `keys` is where it sits in a managedFields `fieldsV1` tree."""

    keys: tuple[str, ...]  # e.g. ("f:spec", "f:ports", 'k:{"port":8081,"protocol":"TCP"}')
    owners: frozenset[str]

    @property
    def text(self) -> str:
        """`/spec/ports[port=8081,protocol=TCP]`: a pointer to the list, then the item."""
        out = ""
        for key in self.keys:
            kind, _, rest = key.partition(":")
            if kind == "f":
                out += "/" + rest.replace("~", "~0").replace("/", "~1")
            elif kind == "k":
                fields = json.loads(rest)
                out += "[" + ",".join(f"{k}={v}" for k, v in fields.items()) + "]"
            else:
                out += f"[{rest}]"
        return out

    @property
    def list_path(self) -> Path:
        """The path of the outermost list, the one the chart's paths name."""
        path = []
        for key in self.keys:
            if not key.startswith("f:"):
                break
            path.append(key[2:])
        return tuple(path)


def _item_key(key: str) -> tuple[str, Any] | None:
    """('k', {"name": "app"}) or ('v', "value") from a fieldsV1 list-item key."""
    kind, _, rest = key.partition(":")
    if kind not in ("k", "v"):
        return None
    try:
        return kind, json.loads(rest)
    except ValueError:
        return None


def _find_item(items: Sequence[Any], key: tuple[str, Any], *, exact: bool) -> int | None:
    """Index of the item `key` names. Not exact (the chart's items): a key field the chart
    leaves out is one the server defaults (a port's protocol), so it matches any value."""
    kind, value = key
    for index, item in enumerate(items):
        if kind == "v":
            matches = item == value
        else:
            matches = (
                isinstance(item, dict)
                and isinstance(value, dict)
                and all(
                    (field in item and item[field] == wanted) or (not exact and field not in item)
                    for field, wanted in value.items()
                )
            )
        if matches:
            return index
    return None


def _children(trees: Sequence[tuple[str, JSON]], key: str) -> list[tuple[str, JSON]]:
    return [(m, tree[key]) for m, tree in trees if isinstance(tree.get(key), dict)]


def _walk(
    chart: Any,
    live: Any,
    trees: list[tuple[str, JSON]],
    keys: tuple[str, ...],
    drift_managers: Collection[str],
    found: list[ForeignItem],
) -> None:
    if not trees:
        return
    if isinstance(chart, dict) and isinstance(live, dict):
        for name, value in chart.items():
            key = f"f:{name}"
            _walk(value, live.get(name), _children(trees, key), (*keys, key), drift_managers, found)
    elif isinstance(chart, list) and isinstance(live, list):
        owners: dict[str, set[str]] = {}
        for manager, tree in trees:
            for key in tree:
                if _item_key(key) is not None:
                    owners.setdefault(key, set()).add(manager)
        for key, managers in owners.items():
            parsed = _item_key(key)
            assert parsed is not None
            at = _find_item(live, parsed, exact=True)
            if at is None:
                continue  # a stale entry: nothing live to speak of
            mine = _find_item(chart, parsed, exact=False)
            if mine is not None:
                children = _children(trees, key)
                _walk(chart[mine], live[at], children, (*keys, key), drift_managers, found)
            elif managers <= set(drift_managers):
                found.append(ForeignItem((*keys, key), frozenset(managers)))


def foreign_items(
    chart: JSON, live: JSON, managed: Iterable[JSON], drift_managers: Collection[str]
) -> list[ForeignItem]:
    """Items of the keyed lists (and sets) the chart sets that the chart does not set and
    that only drift managers own. An item another controller also owns (an injected
    sidecar, a mutating webhook's env var) is never one of them."""
    # An entry recorded in another API version may name other paths: left out, to be safe.
    version = live.get("apiVersion")
    trees = [
        (str(entry.get("manager", "")), entry["fieldsV1"])
        for entry in managed
        if isinstance(entry.get("fieldsV1"), dict) and entry.get("apiVersion") in (None, version)
    ]
    found: list[ForeignItem] = []
    for name, value in chart.items():
        if name in ("apiVersion", "kind", "metadata", "status"):
            continue  # no keyed lists among the metadata the chart's paths cover
        key = f"f:{name}"
        _walk(value, live.get(name), _children(trees, key), (key,), drift_managers, found)
    return found


def _pop(tree: JSON, keys: Sequence[str]) -> JSON | None:
    """Remove and return the subtree at `keys`, dropping parents it leaves empty (an empty
    node in fieldsV1 would claim the parent field itself)."""
    node = tree.get(keys[0])
    if not isinstance(node, dict):
        return None
    if len(keys) == 1:
        popped: JSON = tree.pop(keys[0])
        return popped
    taken = _pop(node, keys[1:])
    if taken is not None and not node:
        del tree[keys[0]]
    return taken


def hand_over(
    managed: Sequence[JSON],
    items: Sequence[ForeignItem],
    *,
    field_manager: str,
    api_version: str,
) -> list[JSON]:
    """managedFields with `items` moved from their owners' entries to `field_manager`'s
    Apply entry; an entry left with nothing is dropped. The next apply as `field_manager`,
    which does not set them, then removes them."""
    entries = copy.deepcopy(list(managed))
    taken: JSON = {}
    for item in items:
        for entry in entries:
            if entry.get("manager") not in item.owners:
                continue
            tree = entry.get("fieldsV1")
            subtree = _pop(tree, item.keys) if isinstance(tree, dict) else None
            if subtree is None:
                continue
            nested: JSON = subtree
            for key in reversed(item.keys):
                nested = {key: nested}
            taken = merge_field_sets(taken, nested)
    entries = [e for e in entries if e.get("fieldsV1") or "fieldsV1" not in e]
    ours = next(
        (
            e
            for e in entries
            if e.get("manager") == field_manager
            and e.get("operation") == "Apply"
            and not e.get("subresource")
        ),
        None,
    )
    if ours is None:
        ours = {
            "manager": field_manager,
            "operation": "Apply",
            "apiVersion": api_version,
            "fieldsType": "FieldsV1",
            "fieldsV1": {},
        }
        entries.append(ours)
    ours["fieldsV1"] = merge_field_sets(ours.get("fieldsV1") or {}, taken)
    return entries
