"""Drift: has someone changed what the deployed revision set?

For each object of the deployed revision, a *forced* server-side dry-run apply shows the
object as the chart wants it; it is compared with the live object on the paths the chart
sets (lists compared whole). A differing path counts as drift only when a manager from
`--drift-managers` (people's tools: kubectl, helm) owns it now: `kubectl edit` takes the
field away from rudder, while an HPA writing replicas through /scale is another controller
doing its job. A missing object is drift. Ignore rules drop paths, optionally per target.
Everything in `detect` is reads and dry-runs: an undrifted release causes no write.

Two kinds of drift a forced apply cannot express:
- an item a drift manager added to a keyed list the chart sets (`drift_list_items`);
- a forced dry-run the API server refuses (the chart's port item and the renamed one both
  named `http`): a finding of its own, reported with the server's message.
Taking drift back is `drift_correct`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rudder.kube.client import JSON, ApiError
from rudder.kube.discovery import UnknownKind
from rudder.kube.ssa import Applier, ObjectRef, ensure_namespace
from rudder.model import DriftIgnoreRule
from rudder.reconcile.drift_list_items import ForeignItem, Path, foreign_items
from rudder.reconcile.plan import manifest_identities, with_helm_metadata

log = logging.getLogger(__name__)

# Longest API server message kept in status; its Status messages can list many causes.
MAX_MESSAGE = 512


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
