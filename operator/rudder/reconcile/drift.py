"""Drift: has someone changed what the deployed revision set?

For each object of the deployed revision, a *forced* server-side dry-run apply shows the
object as the chart wants it; it is compared with the live object on the paths the chart
sets (lists compared whole). A differing path counts as drift only when a manager from
`--drift-managers` (people's tools: kubectl, helm) owns it now: `kubectl edit` takes the
field away from rudder, while an HPA writing replicas through /scale is another controller
doing its job. A missing object is drift. Ignore rules drop paths, optionally per target.
Everything in `detect` is reads and dry-runs: an undrifted release causes no write.

Two kinds of drift a forced apply cannot express:
- an item a drift manager added to a keyed list the chart sets (a renamed container, env
  var or Service port is a new item beside the chart's): SSA never removes another
  manager's item, so the forced dry-run keeps it and a forced apply leaves it behind;
- a forced dry-run the API server refuses (the chart's port item and the renamed one both
  named `http`): a finding of its own, reported with the server's message.
`correct` hands such items over to rudder in managedFields (only items no manager outside
the drift managers owns), guarded by resourceVersion, so the forced apply that follows
removes them as SSA removes whatever its applier stopped setting.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rudder.kube.client import JSON, JSON_PATCH, ApiError
from rudder.kube.discovery import UnknownKind
from rudder.kube.ssa import Applier, ObjectRef, ensure_namespace, merge_field_sets
from rudder.model import DriftIgnoreRule
from rudder.reconcile.deploy import manifest_identities, with_helm_metadata

log = logging.getLogger(__name__)

Path = tuple[str, ...]
# Longest API server message kept in status; its Status messages can list many causes.
MAX_MESSAGE = 512


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


@dataclass(frozen=True)
class DriftedObject:
    ref: ObjectRef
    fields: tuple[str, ...]  # JSON pointers; empty with missing=True
    missing: bool = False
    desired: JSON | None = None  # what to re-apply to correct it
    foreign: tuple[ForeignItem, ...] = ()  # items to hand over before re-applying
    rejected: str = ""  # the API server's message when it refused the forced dry-run

    def as_status(self) -> dict[str, Any]:
        if self.missing:
            fields = ["(missing)"]
        else:
            fields = [f"(dry-run rejected: {self.rejected})"] if self.rejected else []
            fields += [*self.fields, *(item.text for item in self.foreign)]
        return {
            "apiVersion": self.ref.api_version,
            "kind": self.ref.kind,
            "namespace": self.ref.namespace,
            "name": self.ref.name,
            "fields": fields,
        }

    def __str__(self) -> str:
        if self.missing:
            return f"{self.ref} (missing)"
        parts = [*self.fields, *(item.text for item in self.foreign)]
        if self.rejected:
            parts.append(f"(dry-run rejected: {self.rejected})")
        return f"{self.ref} {' '.join(parts)}"


@dataclass(frozen=True)
class NotCorrected:
    ref: ObjectRef
    message: str

    def __str__(self) -> str:
        return f"{self.ref}: {self.message}"


def summarize(items: Sequence[object], limit: int = 5) -> str:
    text = ", ".join(str(item) for item in items[:limit])
    return text + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def pointer(path: Path) -> str:
    return "/" + "/".join(part.replace("~", "~0").replace("/", "~1") for part in path)


def leaf_paths(obj: Any, prefix: Path = ()) -> list[Path]:
    """Paths of every scalar or list the object sets (maps are walked, lists are leaves)."""
    if isinstance(obj, dict) and obj:
        out: list[Path] = []
        for key, value in obj.items():
            out.extend(leaf_paths(value, (*prefix, str(key))))
        return out
    return [prefix]


def chart_paths(obj: JSON) -> list[Path]:
    """The paths a rendered object sets, without identity and server-owned metadata."""
    paths = []
    for path in leaf_paths(obj):
        if path[:1] in (("apiVersion",), ("kind",), ("status",)):
            continue
        if path[:1] == ("metadata",) and path[1:2] not in (("labels",), ("annotations",)):
            continue
        paths.append(path)
    return paths


def lookup(obj: Any, path: Path) -> Any:
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def owners(managed: Iterable[JSON], path: Path) -> set[str]:
    """Managers whose fieldsV1 claim `path` or anything below it."""
    found = set()
    for entry in managed:
        node: Any = entry.get("fieldsV1") or {}
        for part in path:
            if not isinstance(node, dict) or f"f:{part}" not in node:
                node = None
                break
            node = node[f"f:{part}"]
        if node is not None:
            found.add(str(entry.get("manager", "")))
    return found


def ignored(rules: Sequence[DriftIgnoreRule], ref: ObjectRef, path: Path) -> bool:
    text = pointer(path)
    for rule in rules:
        target = rule.target
        if target is not None and (
            (target.kind and target.kind != ref.kind)
            or (target.name and target.name != ref.name)
            or (target.namespace and target.namespace != ref.namespace)
            or (target.group is not None and target.group != ref.group)
        ):
            continue
        if any(text == p or text.startswith(p.rstrip("/") + "/") for p in rule.paths):
            return True
    return False


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


async def detect(
    applier: Applier,
    manifest: str,
    *,
    release_name: str,
    release_namespace: str,
    target_namespace: str,
    drift_managers: Sequence[str],
    ignore: Sequence[DriftIgnoreRule],
) -> list[DriftedObject]:
    drifted = []
    for obj in manifest_identities(manifest, target_namespace).values():
        try:
            resource = await applier.resource_of(obj)
        except UnknownKind:
            continue
        desired = with_helm_metadata(
            ensure_namespace(obj, resource, target_namespace), release_name, release_namespace
        )
        ref = ObjectRef.of(desired)
        live = await applier.get(ref)
        if live is None:
            drifted.append(DriftedObject(ref, (), missing=True, desired=desired))
            continue
        wanted: JSON | None = None
        rejected = ""
        try:
            wanted = await applier.apply(desired, dry_run=True, force=True)
        except ApiError as error:
            if error.code == 429 or error.code >= 500:
                log.info("drift check of %s skipped this time: %s", ref, error)
                continue  # the server's trouble, not the object's: checked next interval
            rejected = (error.message or error.reason or str(error))[:MAX_MESSAGE]
        managed = live.get("metadata", {}).get("managedFields") or []
        fields = []
        if wanted is not None:
            for path in chart_paths(obj):
                if ignored(ignore, ref, path):
                    continue
                if lookup(wanted, path) == lookup(live, path):
                    continue
                if owners(managed, path) & set(drift_managers):
                    fields.append(pointer(path))
        foreign = tuple(
            item
            for item in foreign_items(obj, live, managed, drift_managers)
            if not ignored(ignore, ref, item.list_path)
        )
        if fields or foreign or rejected:
            drifted.append(
                DriftedObject(
                    ref, tuple(fields), desired=desired, foreign=foreign, rejected=rejected
                )
            )
    return drifted


async def _hand_over_foreign(
    applier: Applier, drifted: DriftedObject, drift_managers: Collection[str]
) -> None:
    """Give rudder the foreign items that are still foreign now, in one managedFields patch
    that fails if the object changed since it was read."""
    live = await applier.get(drifted.ref)
    if live is None or drifted.desired is None:
        return
    meta = live.get("metadata", {})
    managed = meta.get("managedFields") or []
    still = foreign_items(drifted.desired, live, managed, drift_managers)
    now = {item.keys: item for item in still}
    items = [now[item.keys] for item in drifted.foreign if item.keys in now]
    if not items:
        return
    rewritten = hand_over(
        managed, items, field_manager=applier.field_manager, api_version=drifted.ref.api_version
    )
    patch = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": meta.get("resourceVersion")},
        {"op": "replace", "path": "/metadata/managedFields", "value": rewritten},
    ]
    await applier.kube.request(
        "PATCH", await applier.path_of(drifted.ref), body=patch, content_type=JSON_PATCH
    )


async def correct(
    applier: Applier, drifted: Sequence[DriftedObject], drift_managers: Collection[str]
) -> list[NotCorrected]:
    """Take drifted objects back: hand over their foreign items, then a forced apply. What
    could not be taken back is returned, with the reason; nothing is deleted that a manager
    outside `drift_managers` owns."""
    failed: list[NotCorrected] = []
    for item in drifted:
        if item.desired is None:
            continue
        if item.rejected and not item.foreign:
            failed.append(
                NotCorrected(
                    item.ref,
                    "cannot be corrected automatically: the API server rejects the chart's "
                    f"object ({item.rejected})",
                )
            )
            continue
        try:
            if item.foreign:
                await _hand_over_foreign(applier, item, drift_managers)
            await applier.apply(item.desired, force=True)
        except ApiError as error:
            message = (error.message or error.reason or str(error))[:MAX_MESSAGE]
            failed.append(NotCorrected(item.ref, f"correction failed: {message}"))
    return failed
