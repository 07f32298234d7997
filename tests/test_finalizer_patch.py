"""The finalizer patch is guarded by the resourceVersion the reconcile saw, which comes
from the watch and may be older than a write by someone else: read again, patch once more."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from rudder.kube.client import JSON, ApiError
from rudder.kube.versions import Floors
from rudder.reconcile.context import patch_finalizer
from rudder.reconcile.target import FINALIZER, Target


def helmrelease(version: str, finalizers: list[str]) -> JSON:
    return {
        "apiVersion": "rudder.dev/v1alpha1",
        "kind": "HelmRelease",
        "metadata": {
            "name": "web",
            "namespace": "apps",
            "resourceVersion": version,
            "finalizers": finalizers,
        },
    }


class Kube:
    """The HelmRelease as the API holds it: a patch at another version is a conflict."""

    def __init__(self, live: JSON | None) -> None:
        self.live = live
        self.patches: list[JSON] = []

    async def request(self, method: str, path: str, *, body: Any = None, **_: Any) -> JSON:
        assert method == "PATCH"
        self.patches.append(body)
        if self.live is None:
            raise ApiError(404, {"reason": "NotFound"}, method, path)
        if body["metadata"]["resourceVersion"] != self.live["metadata"]["resourceVersion"]:
            raise ApiError(409, {"reason": "Conflict"}, method, path)
        version = str(int(self.live["metadata"]["resourceVersion"]) + 1)
        self.live = helmrelease(version, body["metadata"]["finalizers"])
        return self.live

    async def get_or_none(self, path: str) -> JSON | None:
        return self.live


def services(kube: Kube) -> Any:
    return SimpleNamespace(kube=kube, written=Floors())


async def test_a_finalizer_removal_after_someone_elses_write_is_made_again() -> None:
    # The watch delivered version 5; a GitOps tool added its own finalizer since (6).
    kube = Kube(helmrelease("6", [FINALIZER, "gitops.example/cleanup"]))
    seen = Target(helmrelease("5", [FINALIZER]))
    after = await patch_finalizer(services(kube), seen, present=False)
    assert kube.live is not None
    assert kube.live["metadata"]["finalizers"] == ["gitops.example/cleanup"]  # kept theirs
    assert after.meta["resourceVersion"] == "7"
    assert len(kube.patches) == 2


async def test_a_helmrelease_gone_meanwhile_holds_nothing() -> None:
    kube = Kube(None)
    seen = Target(helmrelease("5", [FINALIZER]))
    assert await patch_finalizer(services(kube), seen, present=False) is seen
    with pytest.raises(ApiError):
        await patch_finalizer(services(kube), seen, present=True)
