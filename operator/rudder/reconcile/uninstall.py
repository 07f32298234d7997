"""Uninstall on HelmRelease deletion, as `helm uninstall` does it.

The newest revision's objects are deleted in Helm's uninstall order, except those with a
`helm.sh/resource-policy` annotation and the custom resources of CRDs the chart ships in
`crds/` (those CRDs are never part of the manifest, so they stay too). Then the release
records are deleted, or with keepHistory the newest is marked `uninstalled`. Nothing here
waits on a finalizer: a missing namespace or CRD means the object is already gone, and an
object stuck terminating does not hold the HelmRelease forever.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import yaml

from rudder.kube.client import ApiError
from rudder.kube.ssa import Applier, ObjectRef
from rudder.model import UninstallSpec
from rudder.reconcile.hook_events import POST_DELETE, PRE_DELETE
from rudder.reconcile.hook_runner import HookFailed, HookRunner
from rudder.reconcile.identity import Identity, ReleaseClients
from rudder.release.codec import GoTime, Info
from rudder.release.manifest import split_manifests, uninstall_order
from rudder.release.store import Record

PROPAGATION = {"background": "Background", "foreground": "Foreground", "orphan": "Orphan"}


@dataclass(frozen=True)
class UninstallRequest:
    identity: Identity
    options: UninstallSpec
    timeout: float  # per hook wait


@dataclass(frozen=True)
class UninstallOutcome:
    done: bool
    message: str
    retry_after: float | None = None


def crd_kinds(record: Record) -> set[tuple[str, str]]:
    """(group, kind) of every CRD the chart ships in crds/."""
    kinds: set[tuple[str, str]] = set()
    chart = record.release.chart
    for file in (chart.files or []) if chart else []:
        if not file.name.startswith("crds/"):
            continue
        for document in split_manifests(file.data.decode(errors="replace")):
            try:
                crd = yaml.safe_load(document)
            except yaml.YAMLError:
                continue
            if isinstance(crd, dict) and crd.get("kind") == "CustomResourceDefinition":
                spec = crd.get("spec") or {}
                kinds.add(
                    (str(spec.get("group", "")), str((spec.get("names") or {}).get("kind", "")))
                )
    return kinds


class Uninstaller:
    def __init__(self) -> None:
        self.hook_runner = HookRunner()

    async def _hooks(
        self, request: UninstallRequest, applier: Applier, record: Record, event: str
    ) -> None:
        release = record.release
        if request.options.disable_hooks or not any(event in h.events for h in release.hooks):
            return
        await self.hook_runner.run(
            release.hooks,
            event,
            namespace=request.identity.target_namespace,
            release_name=request.identity.release_name,
            release_namespace=request.identity.storage_namespace,
            timeout=request.timeout,
            applier=applier,
        )

    async def uninstall(
        self, request: UninstallRequest, records: Sequence[Record], clients: ReleaseClients
    ) -> UninstallOutcome:
        identity = request.identity
        newest = max(records, key=lambda r: r.version)
        if newest.status == "uninstalled":
            return UninstallOutcome(
                True, f"Release {identity.release_name} was already uninstalled"
            )
        try:
            # As Helm: a failed pre-delete hook deletes nothing.
            await self._hooks(request, clients.applier, newest, PRE_DELETE)
        except HookFailed as failed:
            return UninstallOutcome(False, f"pre-delete hook failed: {failed.message}", 10.0)
        deleted, errors = await self._delete_objects(request, clients.applier, newest)
        if errors:
            return UninstallOutcome(False, "Uninstall failed: " + "; ".join(errors[:5]), 10.0)
        post_delete_error = ""
        try:
            await self._hooks(request, clients.applier, newest, POST_DELETE)
        except HookFailed as failed:  # as Helm: reported, but the release is still removed
            post_delete_error = f"; post-delete hook failed: {failed.message}"

        if request.options.keep_history:
            release = newest.release
            info = replace(
                release.info or Info(),
                status="uninstalled",
                deleted=GoTime.now(),
                description="Uninstallation complete",
            )
            await clients.store.update(newest, replace(release, info=info))
        else:
            for record in records:
                await clients.store.delete(identity.storage_namespace, record.secret_name)
        return UninstallOutcome(
            True,
            f"Uninstalled {identity.release_name}: {deleted} objects deleted{post_delete_error}",
        )

    @staticmethod
    async def _delete_objects(
        request: UninstallRequest, applier: Applier, newest: Record
    ) -> tuple[int, list[str]]:
        """Delete the newest revision's objects in Helm's uninstall order; (count, errors)."""
        propagation = PROPAGATION.get(request.options.deletion_propagation, "Background")
        protected = crd_kinds(newest)
        errors = []
        deleted = 0
        for manifest in uninstall_order(newest.release.manifest):
            obj = manifest.resource
            if obj is None:
                continue
            ref = ObjectRef.of(obj)
            if (ref.group, ref.kind) in protected:
                continue
            try:
                resource = await applier.resource_of(obj)
            except LookupError:
                continue  # the kind is no longer served: the object went with its CRD
            namespace = (
                (ref.namespace or request.identity.target_namespace) if resource.namespaced else ""
            )
            try:
                if await applier.delete(
                    ObjectRef(ref.api_version, ref.kind, namespace, ref.name),
                    propagation=propagation,
                ):
                    deleted += 1
            except ApiError as error:
                errors.append(f"{ref}: {error.message or error.reason}")
        return deleted, errors
