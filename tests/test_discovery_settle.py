"""Discovery serves a new CRD a moment after the CRD's watch event: a snapshot taken in that
moment must not be kept, or renders never see the new API (`.Capabilities.APIVersions`)."""

from __future__ import annotations

from typing import Any

import pytest

from rudder.kube.discovery import REFETCH_SECONDS, SETTLE_SECONDS, Discovery, UnknownKind

KINDS = {"apps": "Deployment", "gadgets.example.test": "Gadget"}


def groups(*names: str) -> dict[str, Any]:
    def resource(group: str) -> dict[str, Any]:
        kind = KINDS[group]
        return {"resource": kind.lower() + "s", "responseKind": {"kind": kind}}

    return {
        "items": [
            {
                "metadata": {"name": name},
                "versions": [{"version": "v1", "resources": [resource(name)]}],
            }
            for name in names
        ]
    }


class FakeServer:
    """Serves /api, /apis and /version; counts discovery round trips."""

    def __init__(self) -> None:
        self.served: tuple[str, ...] = ("apps",)
        self.fetches = 0

    async def request(self, method: str, path: str, **_: Any) -> dict[str, Any]:
        if path == "/api":
            self.fetches += 1
            return {"items": []}
        return groups(*self.served)

    async def get(self, path: str) -> dict[str, Any]:
        return {"gitVersion": "v1.35.0"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_snapshot_taken_while_discovery_catches_up_is_taken_again() -> None:
    server, clock = FakeServer(), Clock()
    discovery = Discovery(server, clock)  # type: ignore[arg-type]
    assert "gadgets.example.test/v1" not in (await discovery.snapshot()).api_versions
    clock.now += 60
    await discovery.snapshot()
    assert server.fetches == 1, "a settled snapshot is kept"

    discovery.invalidate()  # the CRD's watch event; discovery does not serve it yet
    assert "gadgets.example.test/v1" not in (await discovery.snapshot()).api_versions
    await discovery.snapshot()
    assert server.fetches == 2, "refetched at most once per REFETCH_SECONDS"

    server.served = ("apps", "gadgets.example.test")  # discovery catches up, no event
    clock.now += REFETCH_SECONDS
    assert "gadgets.example.test/v1" in (await discovery.snapshot()).api_versions

    clock.now += SETTLE_SECONDS
    await discovery.snapshot()  # taken after the window: kept from then on
    fetches = server.fetches
    clock.now += 3600
    await discovery.snapshot()
    assert server.fetches == fetches


async def test_a_kind_asked_for_right_after_its_crd_changed_is_waited_for() -> None:
    """The deploy resolves a chart's custom resources right after their CRD is Established:
    discovery serving the kind a moment later is not UnknownKind."""
    server, clock = FakeServer(), Clock()

    async def sleep(seconds: float) -> None:
        clock.now += seconds
        if server.fetches >= 3:
            server.served = ("apps", "gadgets.example.test")

    discovery = Discovery(server, clock, sleep)  # type: ignore[arg-type]
    await discovery.snapshot()
    discovery.invalidate()
    clock.now += SETTLE_SECONDS
    with pytest.raises(UnknownKind):  # outside a settle window: one refresh, then unknown
        await discovery.resource("example.test/v1", "Widget")
    discovery.invalidate()
    server.fetches = 0
    found = await discovery.resource("gadgets.example.test/v1", "Gadget")
    assert found.kind == "Gadget"
