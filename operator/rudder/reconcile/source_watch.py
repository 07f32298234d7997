"""Reconcile a HelmRelease when a ConfigMap or Secret it takes values from changes.

Only referenced objects are watched: one watch per referenced (kind, namespace, name),
filtered on the server by `metadata.name`, so rudder never lists, receives or holds the
cluster's other Secrets. A watch ends when no HelmRelease references its object any more.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from rudder.kube.client import ApiError, KubeClient

log = logging.getLogger(__name__)

Source = tuple[str, str, str]  # (kind, namespace, name)
Key = tuple[str, str]  # the HelmRelease (namespace, name)
RETRY_DELAY = 5.0


class SourceWatcher:
    def __init__(self, kube: KubeClient, wake: Callable[[Key], None]) -> None:
        self._kube = kube
        self._wake = wake
        self._wanted: dict[Key, set[Source]] = {}
        self._tasks: dict[Source, asyncio.Task[None]] = {}

    def track(self, key: Key, sources: Iterable[Source]) -> None:
        """Set what `key` references now; start and stop watches accordingly."""
        wanted = set(sources)
        if self._wanted.get(key, set()) == wanted:
            return
        if wanted:
            self._wanted[key] = wanted
        else:
            self._wanted.pop(key, None)
        needed = set().union(*self._wanted.values()) if self._wanted else set()
        for source in needed - self._tasks.keys():
            self._tasks[source] = asyncio.create_task(self._watch(source))
        for source in self._tasks.keys() - needed:
            self._tasks.pop(source).cancel()

    def forget(self, key: Key) -> None:
        self.track(key, ())

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _referrers(self, source: Source) -> list[Key]:
        return [key for key, sources in self._wanted.items() if source in sources]

    async def _watch(self, source: Source) -> None:
        kind, namespace, name = source
        plural = "configmaps" if kind == "ConfigMap" else "secrets"
        path = f"/api/v1/namespaces/{namespace}/{plural}"
        selector = f"metadata.name={name}"
        while True:
            try:
                listed = await self._kube.get(path, fieldSelector=selector)
                version = str(listed.get("metadata", {}).get("resourceVersion", ""))
                async for event in self._kube.watch(
                    path, resource_version=version, fieldSelector=selector
                ):
                    if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                        for key in self._referrers(source):
                            self._wake(key)
            except asyncio.CancelledError:
                raise
            except (ApiError, OSError, ValueError) as error:
                log.debug("watch of %s %s/%s ended: %s", kind, namespace, name, error)
                await asyncio.sleep(RETRY_DELAY)
