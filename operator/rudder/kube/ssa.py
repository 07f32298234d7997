"""Server-side apply of a release's objects, stage by stage, with nothing half-applied.

Every object of a stage is first applied with `dryRun=All` under the same identity and field
manager; only when the whole stage passes is it applied for real. A 409 becomes a list of
`Conflict`s (which object, which field, which other manager) instead of a forced takeover;
`force=True` is the explicit opt-in. The API server decides merges, conflicts, validation,
defaulting and RBAC: nothing here second-guesses it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from rudder.kube.client import APPLY_PATCH, JSON, JSON_PATCH, ApiError, KubeClient
from rudder.kube.discovery import Discovery, Resource, UnknownKind
from rudder.kube.shared_watch import SharedWatches

_MANAGER_IN_MESSAGE = re.compile(r'conflict with "([^"]+)"')
# Concurrent requests per stage: enough to hide latency, few enough not to flood the server.
STAGE_PARALLELISM = 16


@dataclass(frozen=True, order=True)
class ObjectRef:
    api_version: str
    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, obj: JSON) -> ObjectRef:
        meta = obj.get("metadata", {})
        return cls(
            str(obj.get("apiVersion", "")),
            str(obj.get("kind", "")),
            str(meta.get("namespace") or ""),
            str(meta.get("name", "")),
        )

    @property
    def group(self) -> str:
        return self.api_version.split("/")[0] if "/" in self.api_version else ""

    def identity(self) -> tuple[str, str, str, str]:
        """Same object across API versions (apps/v1beta1 vs apps/v1 Deployment)."""
        return (self.group, self.kind, self.namespace, self.name)

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}/{where}{self.name}"


@dataclass(frozen=True)
class Conflict:
    api_version: str
    kind: str
    namespace: str
    name: str
    field: str
    manager: str

    def as_status(self) -> dict[str, str]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "field": self.field,
            "manager": self.manager,
        }


def parse_conflicts(ref: ObjectRef, error: ApiError) -> list[Conflict]:
    """The Status causes of an apply conflict: the field is in `field`, the manager quoted in
    `message` (the cause type itself sits under the JSON key `reason`)."""
    conflicts = []
    for cause in error.causes:
        if cause.get("reason") != "FieldManagerConflict":
            continue
        match = _MANAGER_IN_MESSAGE.search(str(cause.get("message", "")))
        conflicts.append(
            Conflict(
                ref.api_version,
                ref.kind,
                ref.namespace,
                ref.name,
                str(cause.get("field", "")),
                match.group(1) if match else "",
            )
        )
    if not conflicts:  # a 409 without causes (e.g. an optimistic-lock clash): still surfaced
        conflicts.append(
            Conflict(ref.api_version, ref.kind, ref.namespace, ref.name, "", error.message)
        )
    return conflicts


# RBAC refuses as `... is forbidden: User "<name>" cannot <verb> resource ...`; admission
# (webhooks, quota, PodSecurity) answers 403 too, but says why it refused the object.
RBAC_DENIAL = re.compile(r'is forbidden: User ".*" cannot ')


@dataclass(frozen=True)
class ObjectFailure:
    ref: ObjectRef
    code: int
    reason: str
    message: str

    @property
    def denied(self) -> bool:
        """Refused by RBAC (the identity may not), not by admission (the object may not)."""
        return self.code == 403 and RBAC_DENIAL.search(self.message) is not None

    def __str__(self) -> str:
        return f"{self.ref}: {self.message or self.reason}"


class StageRejected(Exception):
    """A stage failed: its dry run (`dry_run`; nothing of the stage was applied), or the
    apply itself after its dry run had passed (some objects may have been applied)."""

    def __init__(
        self,
        conflicts: Sequence[Conflict],
        failures: Sequence[ObjectFailure],
        *,
        dry_run: bool = True,
    ) -> None:
        self.conflicts = list(conflicts)
        self.failures = list(failures)
        self.dry_run = dry_run
        parts = [f"{c.kind}/{c.name} {c.field} owned by {c.manager}" for c in self.conflicts]
        parts += [str(failure) for failure in self.failures]
        super().__init__(
            "; ".join(parts[:5]) + (f" (+{len(parts) - 5} more)" if len(parts) > 5 else "")
        )

    @property
    def only_denied(self) -> bool:
        """Whether RBAC alone refused it: no conflict, every failure a denial."""
        return (
            not self.conflicts
            and bool(self.failures)
            and all(failure.denied for failure in self.failures)
        )


@dataclass
class StageResult:
    applied: list[JSON] = field(default_factory=list)


class Applier:
    """Applies, dry-runs, reads and deletes objects as one identity and field manager."""

    def __init__(
        self,
        kube: KubeClient,
        discovery: Discovery,
        field_manager: str,
        watches: SharedWatches | None = None,
    ) -> None:
        self.kube = kube
        self.discovery = discovery
        self.field_manager = field_manager
        self.watches = watches  # the cluster's shared watches (readiness, release records)

    def as_user(self, user: str | None) -> Applier:
        return Applier(
            self.kube.impersonate(user), self.discovery, self.field_manager, self.watches
        )

    async def resource_of(self, obj: JSON) -> Resource:
        return await self.discovery.resource(
            str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
        )

    async def path_of(self, ref: ObjectRef) -> str:
        resource = await self.discovery.resource(ref.api_version, ref.kind)
        return resource.path(ref.namespace or None, ref.name)

    async def apply(self, obj: JSON, *, dry_run: bool = False, force: bool = False) -> JSON:
        ref = ObjectRef.of(obj)
        query: dict[str, str | bool] = {"fieldManager": self.field_manager, "force": force}
        if dry_run:
            query["dryRun"] = "All"
        return await self.kube.request(
            "PATCH", await self.path_of(ref), query=query, body=obj, content_type=APPLY_PATCH
        )

    async def get(self, ref: ObjectRef) -> JSON | None:
        try:
            return await self.kube.get_or_none(await self.path_of(ref))
        except UnknownKind:
            return None

    async def delete(self, ref: ObjectRef, *, propagation: str = "Background") -> bool:
        """Delete if present; True when a delete was sent and accepted."""
        try:
            path = await self.path_of(ref)
        except UnknownKind:
            return False  # its CRD is gone, so is the object
        try:
            await self.kube.request(
                "DELETE",
                path,
                body={
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "propagationPolicy": propagation,
                },
            )
        except ApiError as error:
            if error.code == 404:
                return False
            raise
        return True

    async def dry_run_stage(
        self, objects: Sequence[JSON], *, force: bool, forced: AbstractSet[ObjectRef] = frozenset()
    ) -> list[JSON]:
        return await self._stage(objects, dry_run=True, force=force, forced=forced)

    async def apply_stage(
        self,
        objects: Sequence[JSON],
        *,
        force: bool,
        forced: AbstractSet[ObjectRef] = frozenset(),
        proven: AbstractSet[ObjectRef] = frozenset(),
    ) -> list[JSON]:
        """Dry-run every object; if all pass, apply them all. Raises StageRejected.
        `force` forces every object; `forced` only those (objects being adopted). `proven`
        objects passed a dry-run of the caller's just before and are not dry-run again."""
        unproven = [obj for obj in objects if ObjectRef.of(obj) not in proven]
        await self.dry_run_stage(unproven, force=force, forced=forced)
        return await self._stage(objects, dry_run=False, force=force, forced=forced)

    async def _stage(
        self,
        objects: Sequence[JSON],
        *,
        dry_run: bool,
        force: bool,
        forced: AbstractSet[ObjectRef],
    ) -> list[JSON]:
        limit = asyncio.Semaphore(STAGE_PARALLELISM)

        async def one(obj: JSON) -> JSON | Conflict | ObjectFailure | list[Conflict]:
            ref = ObjectRef.of(obj)
            async with limit:
                try:
                    return await self.apply(obj, dry_run=dry_run, force=force or ref in forced)
                except ApiError as error:
                    if error.code == 409:
                        return parse_conflicts(ref, error)
                    return ObjectFailure(ref, error.code, error.reason, error.message)
                except UnknownKind as error:
                    return ObjectFailure(ref, 404, "NotFound", str(error))

        results = await asyncio.gather(*(one(obj) for obj in objects))
        conflicts: list[Conflict] = []
        failures: list[ObjectFailure] = []
        applied: list[JSON] = []
        for result in results:
            if isinstance(result, list):
                conflicts.extend(result)
            elif isinstance(result, ObjectFailure):
                failures.append(result)
            elif isinstance(result, dict):
                applied.append(result)
        if conflicts or failures:
            raise StageRejected(conflicts, failures, dry_run=dry_run)
        return applied


def ensure_namespace(obj: JSON, resource: Resource, target_namespace: str) -> JSON:
    """Namespaced objects without a namespace get the release's; cluster-scoped lose theirs."""
    meta: dict[str, Any] = dict(obj.get("metadata") or {})
    if resource.namespaced:
        meta.setdefault("namespace", target_namespace)
        if not meta["namespace"]:
            meta["namespace"] = target_namespace
    else:
        meta.pop("namespace", None)
    return {**obj, "metadata": meta}


def refs(objects: Iterable[JSON]) -> list[ObjectRef]:
    return [ObjectRef.of(obj) for obj in objects]


def merge_field_sets(into: JSON, other: JSON) -> JSON:
    """Union of two managedFields `fieldsV1` trees."""
    merged = dict(into)
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_field_sets(merged[key], value)
        else:
            merged.setdefault(key, value)
    return merged


def takeover_managed_fields(
    managed: list[JSON], *, take_from: Iterable[str], field_manager: str, api_version: str
) -> list[JSON] | None:
    """managedFields with the entries of `take_from` managers folded into `field_manager`'s
    Apply entry (client-go csaupgrade's idea), or None when there is nothing to take."""
    donors = set(take_from)
    taken = [entry for entry in managed if entry.get("manager") in donors]
    if not taken:
        return None
    kept = [entry for entry in managed if entry.get("manager") not in donors]
    ours = next(
        (e for e in kept if e.get("manager") == field_manager and e.get("operation") == "Apply"),
        None,
    )
    fields: JSON = dict((ours or {}).get("fieldsV1") or {})
    for entry in taken:
        fields = merge_field_sets(fields, entry.get("fieldsV1") or {})
    entry = {
        "manager": field_manager,
        "operation": "Apply",
        "apiVersion": (ours or {}).get("apiVersion", api_version),
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    }
    if ours is not None:
        entry["time"] = ours.get("time")
        kept = [entry if e is ours else e for e in kept]
    else:
        kept.append(entry)
    return kept


async def take_over_fields(applier: Applier, ref: ObjectRef, take_from: Iterable[str]) -> bool:
    """Move the fields `take_from` managers own on `ref` to rudder's manager. True if moved.
    The resourceVersion test makes a concurrent writer's change fail this, not vanish."""
    live = await applier.get(ref)
    if live is None:
        return False
    meta = live.get("metadata", {})
    rewritten = takeover_managed_fields(
        meta.get("managedFields") or [],
        take_from=take_from,
        field_manager=applier.field_manager,
        api_version=ref.api_version,
    )
    if rewritten is None:
        return False
    patch = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": meta.get("resourceVersion")},
        {"op": "replace", "path": "/metadata/managedFields", "value": rewritten},
    ]
    await applier.kube.request(
        "PATCH", await applier.path_of(ref), body=patch, content_type=JSON_PATCH
    )
    return True
