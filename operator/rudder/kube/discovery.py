"""What the API server serves: resources by kind, their scope, the version set Helm's
`.Capabilities` needs, and the server version. One aggregated-discovery round trip
(`/api` + `/apis`) fills the cache; it is refreshed when CRDs or APIServices change
(`invalidate`, and again while discovery catches up) or when a kind is not found, never
once per render."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass

from rudder.kube.client import JSON, KubeClient
from rudder.kube.watch import Changed, Listed, ListWatchClient, changes

AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None, name: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base


@dataclass(frozen=True)
class Snapshot:
    resources: dict[tuple[str, str], Resource]  # (apiVersion, kind) -> resource
    api_versions: tuple[str, ...]  # Helm's VersionSet: "g/v" and "g/v/Kind"
    kube_version: str  # e.g. "v1.36.3"


class UnknownKind(LookupError):
    def __init__(self, api_version: str, kind: str) -> None:
        super().__init__(f"the API server does not serve {kind} in {api_version}")
        self.api_version = api_version
        self.kind = kind


def parse_discovery(documents: list[JSON], version: JSON) -> Snapshot:
    """Build a snapshot from the aggregated discovery documents of /api and /apis."""
    resources: dict[tuple[str, str], Resource] = {}
    versions: set[str] = set()
    for document in documents:
        for group in document.get("items", []):
            group_name = group.get("metadata", {}).get("name", "")
            for entry in group.get("versions", []):
                group_version = (
                    f"{group_name}/{entry['version']}" if group_name else entry["version"]
                )
                versions.add(group_version)
                for item in entry.get("resources", []):
                    kind = (item.get("responseKind") or {}).get("kind", "")
                    if not kind:
                        continue
                    versions.add(f"{group_version}/{kind}")
                    resources.setdefault(
                        (group_version, kind),
                        Resource(
                            group=group_name,
                            version=entry["version"],
                            kind=kind,
                            plural=item["resource"],
                            namespaced=item.get("scope") == "Namespaced",
                        ),
                    )
                    for sub in item.get("subresources", []):
                        sub_kind = (sub.get("responseKind") or {}).get("kind", "")
                        if sub_kind:
                            versions.add(f"{group_version}/{sub_kind}")
    return Snapshot(resources, tuple(sorted(versions)), str(version.get("gitVersion", "")))


# The API server serves a changed CRD or APIService a moment after the watch event that
# announced it (its discovery controller catches up on its own): a snapshot taken within
# SETTLE_SECONDS of a change may predate it, so it is taken again, at most once every
# REFETCH_SECONDS, until one is taken after the window. Quiet again once settled.
SETTLE_SECONDS = 10.0
REFETCH_SECONDS = 1.0


class Discovery:
    def __init__(
        self,
        kube: KubeClient,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._kube = kube
        self._clock = clock
        self._sleep = sleep
        self._snapshot: Snapshot | None = None
        self._taken = 0.0
        self._changed_at = -SETTLE_SECONDS
        self._lock = asyncio.Lock()

    async def snapshot(self) -> Snapshot:
        if self._snapshot is None or not self._settled():
            async with self._lock:
                if self._snapshot is None or not self._settled():
                    await self._take()
        assert self._snapshot is not None
        return self._snapshot

    def invalidate(self) -> None:
        self._changed_at = self._clock()
        self._snapshot = None

    def _settles_at(self) -> float:
        """When the settle window of the last change ends."""
        return self._changed_at + SETTLE_SECONDS

    def _settled(self) -> bool:
        """Whether the snapshot may be kept: taken after the settle window of the last
        change, or taken less than REFETCH_SECONDS ago."""
        return self._taken >= self._settles_at() or self._clock() - self._taken < REFETCH_SECONDS

    async def _take(self) -> None:
        taken = self._clock()  # when the request left: the answer is at least this fresh
        core, groups, version = await asyncio.gather(
            self._kube.request("GET", "/api", accept=AGGREGATED),
            self._kube.request("GET", "/apis", accept=AGGREGATED),
            self._kube.get("/version"),
        )
        self._snapshot, self._taken = parse_discovery([core, groups], version), taken

    async def resource(self, api_version: str, kind: str) -> Resource:
        """The resource serving `kind`; refreshes if the kind is new (a fresh CRD): once,
        and while discovery catches up with a change, until it serves the kind or the
        settle window ends (a CRD just Established is served a moment later)."""
        found = (await self.snapshot()).resources.get((api_version, kind))
        while found is None:
            async with self._lock:
                await self._take()
            assert self._snapshot is not None
            found = self._snapshot.resources.get((api_version, kind))
            if found is None:
                if self._clock() >= self._settles_at():
                    raise UnknownKind(api_version, kind)
                await self._sleep(REFETCH_SECONDS)
        return found


WATCHED_FOR_CHANGES = (
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
    "/apis/apiregistration.k8s.io/v1/apiservices",
)


async def invalidate_on_changes(discovery: Discovery, kube: ListWatchClient) -> None:
    """Drop the cached snapshot whenever a CRD or an APIService is added, changed or removed,
    or may have been while the watch was down, so the next render sees the cluster's
    current APIs. Runs until cancelled, whatever happens to the connection."""

    async def follow(path: str) -> None:
        # Only the resourceVersion of the list is needed, not the (possibly large) items.
        stream = changes(kube, path, list_limit=1)
        async with aclosing(stream):
            async for change in stream:
                if isinstance(change, Changed) or (isinstance(change, Listed) and change.relisted):
                    discovery.invalidate()

    await asyncio.gather(*(follow(path) for path in WATCHED_FOR_CHANGES))
