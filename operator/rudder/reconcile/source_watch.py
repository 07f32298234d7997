"""Reconcile a HelmRelease when a ConfigMap or Secret it takes values from changes.

Only referenced objects are watched: one watch per referenced (kind, namespace, name) and
identity, filtered on the server by `metadata.name`, so rudder never lists, receives or
holds the cluster's other Secrets. Each watch is made as the HelmRelease's identity (its
ServiceAccount, in tenant mode), like every other read of the release's values. A watch
ends when no HelmRelease references its object any more, and only then: `rudder.kube.watch`
rides out API server restarts and broken connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from contextlib import aclosing

from rudder.kube.watch import (
    DEFAULT_BACKOFF,
    Backoff,
    Changed,
    Listed,
    ListWatchClient,
    changes,
    log_unexpected_end,
    resource_version,
)

Source = tuple[str, str, str]  # (kind, namespace, name)
Key = tuple[str, str]  # the HelmRelease (namespace, name)
Watched = tuple[str | None, Source]  # (the user it is read as, None: rudder itself; source)


class SourceWatcher:
    def __init__(
        self,
        kube: ListWatchClient,
        wake: Callable[[Key], None],
        *,
        backoff: Backoff = DEFAULT_BACKOFF,
        as_user: Callable[[str | None], ListWatchClient] | None = None,
    ) -> None:
        self._kube = kube
        self._as_user = as_user
        self._wake = wake
        self._backoff = backoff
        self._wanted: dict[Key, set[Watched]] = {}
        self._tasks: dict[Watched, asyncio.Task[None]] = {}

    def track(self, key: Key, sources: Iterable[Source], user: str | None = None) -> None:
        """Set what `key` references now, read as `user`; start and stop watches."""
        wanted = {(user, source) for source in sources}
        if self._wanted.get(key, set()) == wanted:
            return
        if wanted:
            self._wanted[key] = wanted
        else:
            self._wanted.pop(key, None)
        needed = set().union(*self._wanted.values()) if self._wanted else set()
        for source in needed - self._tasks.keys():
            task = asyncio.create_task(self._watch(source))
            task.add_done_callback(log_unexpected_end)
            self._tasks[source] = task
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

    def _referrers(self, watched: Watched) -> list[Key]:
        return [key for key, sources in self._wanted.items() if watched in sources]

    async def _watch(self, watched: Watched) -> None:
        user, (kind, namespace, name) = watched
        kube = self._as_user(user) if self._as_user is not None else self._kube
        plural = "configmaps" if kind == "ConfigMap" else "secrets"
        path = f"/api/v1/namespaces/{namespace}/{plural}"
        seen: str | None = None  # the object's resourceVersion as last seen ("": absent)
        query = {"fieldSelector": f"metadata.name={name}"}
        stream = changes(kube, path, query=query, backoff=self._backoff)
        async with aclosing(stream):
            async for change in stream:
                if isinstance(change, Listed):
                    current = resource_version(change.items[0]) if change.items else ""
                    # The first list only sets the baseline (the reconcile that started
                    # this watch reads the source itself); a relist after a gap stands
                    # for the events that were missed.
                    changed = change.relisted and current != seen
                    seen = current
                elif isinstance(change, Changed):
                    seen = "" if change.type == "DELETED" else resource_version(change.object)
                    changed = True
                else:
                    continue
                if changed:
                    for key in self._referrers(watched):
                        self._wake(key)
