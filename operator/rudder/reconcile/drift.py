"""Drift: has someone changed what the deployed revision set?

For each object of the deployed revision, a *forced* server-side dry-run apply shows the
object as the chart wants it; it is compared with the live object on the paths the chart
sets (lists compared whole). A differing path counts as drift only when a manager from
`--drift-managers` (people's tools: kubectl, helm) owns it now: `kubectl edit` takes the
field away from rudder, while an HPA writing replicas through /scale is another controller
doing its job. A missing object is drift. Ignore rules drop paths, optionally per target.
Everything here is reads and dry-runs: an undrifted release causes no write.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rudder.kube.client import JSON, ApiError
from rudder.kube.discovery import UnknownKind
from rudder.kube.ssa import Applier, ObjectRef, ensure_namespace
from rudder.model import DriftIgnoreRule
from rudder.reconcile.deploy import manifest_identities, with_helm_metadata

Path = tuple[str, ...]


@dataclass(frozen=True)
class DriftedObject:
    ref: ObjectRef
    fields: tuple[str, ...]  # JSON pointers; empty with missing=True
    missing: bool = False
    desired: JSON | None = None  # what to re-apply to correct it

    def as_status(self) -> dict[str, Any]:
        return {
            "apiVersion": self.ref.api_version,
            "kind": self.ref.kind,
            "namespace": self.ref.namespace,
            "name": self.ref.name,
            "fields": ["(missing)"] if self.missing else list(self.fields),
        }


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
        try:
            wanted = await applier.apply(desired, dry_run=True, force=True)
        except ApiError:
            continue  # a rejected dry run is the next upgrade's problem, not drift
        managed = live.get("metadata", {}).get("managedFields") or []
        fields = []
        for path in chart_paths(obj):
            if ignored(ignore, ref, path):
                continue
            if lookup(wanted, path) == lookup(live, path):
                continue
            if owners(managed, path) & set(drift_managers):
                fields.append(pointer(path))
        if fields:
            drifted.append(DriftedObject(ref, tuple(fields), desired=desired))
    return drifted
