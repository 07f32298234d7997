"""The HelmRelease being reconciled, as read at the start of the reconcile."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from rudder.kube.client import JSON
from rudder.model import APPROVE_ANNOTATION
from rudder.release.store import Owner

FINALIZER = "rudder.dev/finalizer"
HELMRELEASES = "/apis/rudder.dev/v1alpha1/namespaces/{namespace}/helmreleases/{name}"
REQUESTED_AT_ANNOTATION = "rudder.dev/requestedAt"


@dataclass(frozen=True)
class Target:
    body: JSON

    @property
    def meta(self) -> JSON:
        meta: JSON = self.body.get("metadata", {})
        return meta

    @property
    def namespace(self) -> str:
        return str(self.meta.get("namespace", ""))

    @property
    def name(self) -> str:
        return str(self.meta.get("name", ""))

    @property
    def generation(self) -> int:
        return int(self.meta.get("generation", 0))

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    @property
    def path(self) -> str:
        return HELMRELEASES.format(namespace=self.namespace, name=self.name)

    @property
    def owner(self) -> Owner:
        return Owner(self.namespace, self.name)

    @property
    def deleting(self) -> bool:
        return bool(self.meta.get("deletionTimestamp"))

    @property
    def has_finalizer(self) -> bool:
        return FINALIZER in (self.meta.get("finalizers") or [])

    @property
    def requested_at(self) -> str | None:
        value = (self.meta.get("annotations") or {}).get(REQUESTED_AT_ANNOTATION)
        return None if value is None else str(value)

    @property
    def approved(self) -> str | None:
        """The preview digest a person approved (`rudder.dev/approve`)."""
        value = (self.meta.get("annotations") or {}).get(APPROVE_ANNOTATION)
        return None if value is None else str(value).strip()

    def deleting_for(self) -> float:
        """Seconds since the HelmRelease was marked for deletion."""
        stamp = str(self.meta.get("deletionTimestamp", ""))
        try:
            since = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            return 0.0
        return (datetime.datetime.now(datetime.UTC) - since).total_seconds()

    def finalizers_patch(self, *, present: bool) -> JSON:
        """A merge patch adding or removing rudder's finalizer, guarded by resourceVersion."""
        others = [f for f in self.meta.get("finalizers") or [] if f != FINALIZER]
        return {
            "metadata": {
                "finalizers": [*others, FINALIZER] if present else others,
                "resourceVersion": self.meta.get("resourceVersion"),
            }
        }
