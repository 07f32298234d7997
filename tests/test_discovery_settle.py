"""Discovery serves a new CRD a moment after the CRD's watch event: a snapshot taken in that
moment must not be kept, or renders never see the new API (`.Capabilities.APIVersions`)."""

from __future__ import annotations

from typing import Any

from rudder.kube.discovery import REFETCH_SECONDS, SETTLE_SECONDS, Discovery


def groups(*names: str) -> dict[str, Any]:
    return {
        "items": [
            {"metadata": {"name": name}, "versions": [{"version": "v1", "resources": []}]}
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
