"""Plan a revision's objects: resolve each against discovery, place it in its namespace,
stamp Helm's ownership metadata, and split it into Helm's stages.

Stage one is CRDs and Namespaces; stage two everything else; `deferred` are objects whose
kind only a CRD of this same release defines (resolved once that CRD is Established). An
object rendered exactly as in the deployed previous revision is marked unchanged and is
not sent again — unless it no longer exists, which `mark_unchanged` callers check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import yaml

from rudder.kube.client import JSON
from rudder.kube.discovery import Discovery, UnknownKind
from rudder.kube.ssa import ObjectRef, ensure_namespace
from rudder.release.manifest import Manifest, parse_document, split_manifests

MANAGED_BY = ("app.kubernetes.io/managed-by", "Helm")
RELEASE_NAME_ANNOTATION = "meta.helm.sh/release-name"
RELEASE_NAMESPACE_ANNOTATION = "meta.helm.sh/release-namespace"
CRD = "CustomResourceDefinition"

ObjectKey = tuple[str, str, str, str]  # (group, kind, namespace, name)


class PlanError(Exception):
    """The chart's objects cannot be planned: a malformed crds/ file, an unknown kind."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class Planned:
    """An object ready to apply, with its identity resolved against discovery."""

    obj: JSON
    ref: ObjectRef
    cluster_scoped: bool
    unchanged: bool = False  # same as in the deployed previous revision: no apply needed


@dataclass
class Plan:
    stage_one: list[Planned] = field(default_factory=list)  # CRDs and Namespaces
    stage_two: list[Planned] = field(default_factory=list)
    deferred: list[Planned] = field(default_factory=list)  # kinds a CRD of this release adds
    # crds/ CRDs already there (policy Create): not applied, but waited for all the same.
    required_crds: list[ObjectRef] = field(default_factory=list)
    # Unchanged objects as read just before the action (readiness starts from them).
    live_unchanged: list[JSON] = field(default_factory=list)
    # Force-replace: objects deleted and re-created because their update is refused.
    replaced: list[ObjectRef] = field(default_factory=list)

    @property
    def planned(self) -> list[Planned]:
        return self.stage_one + self.stage_two

    def changed(self, stage: Sequence[Planned]) -> list[JSON]:
        return [p.obj for p in stage if not p.unchanged]


@dataclass(frozen=True)
class Placement:
    release_name: str
    storage_namespace: str
    target_namespace: str


def with_helm_metadata(obj: JSON, release_name: str, release_namespace: str) -> JSON:
    """Helm's ownership metadata on an applied object (not in the stored manifest)."""
    meta = dict(obj.get("metadata") or {})
    labels = dict(meta.get("labels") or {})
    annotations = dict(meta.get("annotations") or {})
    labels[MANAGED_BY[0]] = MANAGED_BY[1]
    annotations[RELEASE_NAME_ANNOTATION] = release_name
    annotations[RELEASE_NAMESPACE_ANNOTATION] = release_namespace
    meta["labels"] = labels
    meta["annotations"] = annotations
    return {**obj, "metadata": meta}


def owned_by_release(live: JSON, release_name: str, release_namespace: str) -> bool:
    meta = live.get("metadata", {})
    annotations = meta.get("annotations") or {}
    labels = meta.get("labels") or {}
    return (
        annotations.get(RELEASE_NAME_ANNOTATION) == release_name
        and annotations.get(RELEASE_NAMESPACE_ANNOTATION) == release_namespace
        and labels.get(MANAGED_BY[0]) == MANAGED_BY[1]
    )


def strip_helm_metadata(obj: JSON) -> JSON:
    meta = dict(obj.get("metadata") or {})
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k != MANAGED_BY[0]}
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if k not in (RELEASE_NAME_ANNOTATION, RELEASE_NAMESPACE_ANNOTATION)
    }
    meta["labels"], meta["annotations"] = labels, annotations
    return {**obj, "metadata": meta}


def namespace_object(name: str) -> JSON:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def manifest_identities(manifest_text: str, namespace: str) -> dict[ObjectKey, JSON]:
    """Objects of a stored manifest by identity (namespace defaulted to the release's)."""
    out: dict[ObjectKey, JSON] = {}
    for index, document in enumerate(split_manifests(manifest_text)):
        parsed = parse_document(document, f"manifest-{index}")
        if parsed.resource is None:
            continue
        obj = parsed.resource
        ref = ObjectRef.of(obj)
        out[(ref.group, ref.kind, ref.namespace or namespace, ref.name)] = obj
    return out


def mark_unchanged(planned: Sequence[Planned], previous_manifest: str, namespace: str) -> None:
    """Flag objects whose rendered form equals the previous revision's."""
    before = manifest_identities(previous_manifest, namespace)
    for item in planned:
        old = before.get(item.ref.identity())
        if old is None:
            continue
        # Compare the chart's text, not what rudder adds when applying.
        item.unchanged = _chart_text(item.obj) == _chart_text(old)


def _chart_text(obj: JSON) -> JSON:
    meta = dict(obj.get("metadata") or {})
    meta.pop("namespace", None)
    return strip_helm_metadata({**obj, "metadata": meta})


def crd_documents(crds: Sequence[dict[str, str]]) -> list[JSON]:
    """The CRDs of the chart's crds/ files; PlanError naming the file that does not parse."""
    documents = []
    for crd in crds:
        name = crd.get("name", "crds/")
        for document in split_manifests(crd.get("data", "")):
            try:
                loaded = yaml.safe_load(document)
            except yaml.YAMLError as error:
                raise PlanError("InvalidChart", f"{name}: {error}") from error
            if isinstance(loaded, dict) and loaded.get("kind"):
                documents.append(loaded)
            elif loaded is not None:
                raise PlanError("InvalidChart", f"{name}: not a Kubernetes object")
    return documents


def defined_kinds(crd: JSON) -> set[tuple[str, str]]:
    """(apiVersion, kind) of every version a CRD defines."""
    spec = crd.get("spec") or {}
    kind = str((spec.get("names") or {}).get("kind", ""))
    return {(f"{spec.get('group')}/{v.get('name')}", kind) for v in spec.get("versions") or []}


class Planner:
    def __init__(self, discovery: Discovery) -> None:
        self.discovery = discovery

    async def resolve(self, obj: JSON, place: Placement) -> Planned:
        """`obj` placed and stamped; UnknownKind when the API serves no such kind."""
        resource = await self.discovery.resource(
            str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
        )
        placed = ensure_namespace(obj, resource, place.target_namespace)
        placed = with_helm_metadata(placed, place.release_name, place.storage_namespace)
        return Planned(placed, ObjectRef.of(placed), not resource.namespaced)

    async def plan(
        self,
        place: Placement,
        manifests: Sequence[Manifest],
        crds: Sequence[JSON],
        *,
        create_namespace: bool,
    ) -> Plan:
        plan = Plan()
        new_kinds = set().union(*(defined_kinds(crd) for crd in crds)) if crds else set()
        if create_namespace:
            namespace = namespace_object(place.target_namespace)
            plan.stage_one.append(Planned(namespace, ObjectRef.of(namespace), True, unchanged=True))
        plan.stage_one += [Planned(crd, ObjectRef.of(crd), True) for crd in crds]
        for manifest in manifests:
            obj = manifest.resource
            if obj is None:
                continue
            kind = str(obj.get("kind", ""))
            if kind == CRD:
                new_kinds |= defined_kinds(obj)
            try:
                planned = await self.resolve(obj, place)
            except UnknownKind as error:
                if (str(obj.get("apiVersion", "")), kind) in new_kinds:
                    plan.deferred.append(Planned(obj, ObjectRef.of(obj), False))
                    continue
                raise PlanError(
                    "UnknownKind", f"{manifest.path}: {error} (is its CRD installed?)"
                ) from error
            (plan.stage_one if kind in (CRD, "Namespace") else plan.stage_two).append(planned)
        return plan
