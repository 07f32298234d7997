"""Which release a HelmRelease drives, and as whom every request for that release is made.

The identity is resolved once, first, from the spec (tenancy applied) or — when the spec
cannot be parsed — from what status last recorded, so deletion works with any spec. Actions
receive `ReleaseClients` built from it and never rudder's own client: a request for a
release made as rudder itself has no way to be written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rudder.chart.render import Renderer
from rudder.kube.client import KubeClient
from rudder.kube.ssa import Applier
from rudder.model import DEFAULT_KUBECONFIG_KEY, HelmReleaseSpec, KubeConfigSpec
from rudder.release.store import ReleaseStore


def service_account_user(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


@dataclass(frozen=True)
class Identity:
    release_name: str
    storage_namespace: str
    target_namespace: str
    service_account: str  # name in the HelmRelease's namespace; "" acts as rudder itself
    user: str | None  # the impersonated user, None for rudder itself
    kube_config: KubeConfigSpec | None = None  # the release's cluster; None: this one

    @classmethod
    def of(cls, spec: HelmReleaseSpec) -> Identity:
        return cls(
            release_name=spec.release_name,
            storage_namespace=spec.storage_namespace,
            target_namespace=spec.target_namespace,
            service_account=spec.service_account_name or "",
            user=spec.service_account_user,
            kube_config=spec.kube_config,
        )

    @classmethod
    def recorded(cls, status: Mapping[str, Any] | None, namespace: str) -> Identity | None:
        """The identity status last recorded (None when no release was ever recorded)."""
        release = (status or {}).get("release") or {}
        name, storage = release.get("name"), release.get("namespace")
        if not name or not storage:
            return None
        account = str(release.get("serviceAccountName") or "")
        secret = release.get("kubeConfigSecret")
        kube_config = (
            KubeConfigSpec(str(secret), str(release.get("kubeConfigKey") or DEFAULT_KUBECONFIG_KEY))
            if secret
            else None
        )
        return cls(
            release_name=str(name),
            storage_namespace=str(storage),
            # Recorded since targetNamespace could differ; older status: Helm's default.
            target_namespace=str(release.get("targetNamespace") or storage),
            service_account=account,
            user=service_account_user(namespace, account) if account else None,
            kube_config=kube_config,
        )

    def as_status(self) -> dict[str, str]:
        # serviceAccountName is always written ("" for rudder itself), so a status without
        # it is one written before it was recorded.
        recorded = {
            "name": self.release_name,
            "namespace": self.storage_namespace,
            "targetNamespace": self.target_namespace,
            "serviceAccountName": self.service_account,
        }
        if self.kube_config is not None:
            recorded["kubeConfigSecret"] = self.kube_config.secret_name
            recorded["kubeConfigKey"] = self.kube_config.key
        return recorded


@dataclass(frozen=True)
class ReleaseClients:
    """Everything that talks to the API for one release, all as its identity. `kube` is
    the cluster the HelmRelease is in (its values sources and Secrets); the applier, the
    store and the renderer talk to the cluster the release is in — the same one, or the
    one spec.kubeConfig names."""

    kube: KubeClient
    applier: Applier
    store: ReleaseStore
    renderer: Renderer | None = None  # None: the deployer's, for the cluster rudder runs in

    @classmethod
    def acting_as(
        cls,
        user: str | None,
        kube: KubeClient,
        applier: Applier,
        renderer: Renderer | None = None,
    ) -> ReleaseClients:
        release_side = applier.as_user(user)
        store = ReleaseStore(release_side.kube, release_side.watches)
        return cls(kube.impersonate(user), release_side, store, renderer)
