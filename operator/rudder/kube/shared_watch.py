"""One list+watch per collection, shared by every reader acting as the same identity.

Readiness waits and release-record reads used to list (and watch) per release: 200
releases in one namespace meant 200 lists of its Deployments and 200 of its Secrets. A
`SharedCollection` lists and watches a collection once — per connection (cluster),
impersonated user, collection path and label selector, so tenancy is kept: a reader only
ever sees what its own identity may list — and keeps the objects as last seen, without
their managedFields (nobody reading a cache needs them, and they are often most of an
object). `SharedWatches` hands collections out:

- `use()` is a context: the collection lives while anyone uses it and `linger` seconds
  after the last one left, so a wave of releases shares one list and the steady path reads
  nothing at all;
- at most `limit` collections are kept; past that `use()` gives None and the reader reads
  the API itself, as it does when a collection is refused (401, 403) or not served (404):
  a refused collection is tried again only after REFUSED_RETRY seconds;
- `floors` hold the resourceVersion of rudder's own writes (write-your-own-reads,
  `rudder.kube.versions`): a reader acts on the cache only once it has caught up with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Collection, Hashable, Iterable
from typing import Final, Protocol, runtime_checkable

from rudder.kube.client import JSON, ApiError
from rudder.kube.versions import Floors, at_least
from rudder.kube.watch import (
    Changed,
    Listed,
    ListWatchClient,
    changes,
    log_unexpected_end,
    resource_version,
)

log = logging.getLogger(__name__)

LINGER: Final = 60.0
MAX_COLLECTIONS: Final = 256
REFUSED_RETRY: Final = 60.0
# How long a reader waits for a new collection's first list before reading the API itself.
SYNC_WAIT: Final = 10.0

ObjectKey = tuple[str, str]  # (namespace, name)
CollectionKey = tuple[int, str, str | None, str, str]  # connection, server, user, path, labels


@runtime_checkable
class SharedClient(ListWatchClient, Protocol):
    """What a shared watch needs of the API client (`KubeClient` has it): list and watch,
    and what tells connections and identities apart."""

    @property
    def api(self) -> object: ...

    @property
    def remote(self) -> str: ...

    @property
    def impersonate_user(self) -> str | None: ...


def object_key(obj: JSON) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _without_managed_fields(obj: JSON) -> JSON:
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or "managedFields" not in meta:
        return obj
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


class SharedCollection:
    """One collection as a list and then a watch left it (see the module's docstring)."""

    def __init__(self, kube: SharedClient, path: str, label_selector: str) -> None:
        self.kube = kube
        self.path = path
        self.label_selector = label_selector
        self.objects: dict[ObjectKey, JSON] = {}
        self.version: str | None = None  # of the newest list or event; None: not listed yet
        self.refused: ApiError | None = None  # the list or watch was refused: read directly
        self.refused_at = 0.0
        self.users = 0
        self.closer: asyncio.TimerHandle | None = None
        self._settled = asyncio.Event()  # listed once, or refused
        self._listeners: dict[ObjectKey, set[Callable[[], None]]] = {}
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"shared watch {self.path}")
        self.task.add_done_callback(self._ended)

    @property
    def synced(self) -> bool:
        return self.version is not None and self.refused is None

    async def wait_synced(self, timeout: float = SYNC_WAIT) -> bool:  # noqa: ASYNC109
        """Whether the collection is listed (waiting up to `timeout` for its first list)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), timeout)
        return self.synced

    def caught_up(self, floor: str | None) -> bool:
        """Whether the cache holds every change up to resourceVersion `floor`."""
        return self.synced and at_least(self.version, floor)

    def get(self, key: ObjectKey) -> JSON | None:
        return self.objects.get(key)

    def items(self) -> Iterable[JSON]:
        return self.objects.values()

    def listen(
        self, keys: Collection[ObjectKey], callback: Callable[[], None]
    ) -> Callable[[], None]:
        """Call `callback` whenever one of `keys` changes, the collection is listed again, or
        it is refused; returns what stops it."""
        for key in keys:
            self._listeners.setdefault(key, set()).add(callback)

        def stop() -> None:
            for key in keys:
                listeners = self._listeners.get(key)
                if listeners is not None:
                    listeners.discard(callback)
                    if not listeners:
                        del self._listeners[key]

        return stop

    def _notify(self, key: ObjectKey | None = None) -> None:
        if key is None:
            everyone = {callback for group in self._listeners.values() for callback in group}
        else:
            everyone = set(self._listeners.get(key, ()))
        for callback in everyone:
            callback()

    async def _run(self) -> None:
        query = {"labelSelector": self.label_selector} if self.label_selector else {}
        try:
            async for change in changes(self.kube, self.path, query=query, fatal=(401, 403, 404)):
                if isinstance(change, Listed):
                    self.objects = {
                        object_key(item): _without_managed_fields(item) for item in change.items
                    }
                    self.version = change.version
                    self._settled.set()
                    self._notify()
                elif isinstance(change, Changed):
                    key = object_key(change.object)
                    if change.type == "DELETED":
                        self.objects.pop(key, None)
                    else:
                        self.objects[key] = _without_managed_fields(change.object)
                    self.version = resource_version(change.object, self.version or "")
                    self._notify(key)
        except ApiError as error:
            # Often a tenant allowed to list but not watch: its readers read directly.
            user = self.kube.impersonate_user or "rudder"
            log.debug("shared watch of %s as %s refused: %s", self.path, user, error)
            self.refused = error
            self.refused_at = asyncio.get_running_loop().time()
            self._settled.set()
            self._notify()

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self.refused is None:
            log_unexpected_end(task)

    async def stop(self) -> None:
        if self.closer is not None:
            self.closer.cancel()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


class SharedWatches:
    """The shared collections of one process (see the module's docstring)."""

    def __init__(self, *, linger: float = LINGER, limit: int = MAX_COLLECTIONS) -> None:
        self.linger = linger
        self.limit = limit
        self.floors = Floors()
        self._collections: dict[CollectionKey, SharedCollection] = {}

    @staticmethod
    def _key(kube: SharedClient, path: str, label_selector: str) -> CollectionKey:
        return (id(kube.api), kube.remote, kube.impersonate_user, path, label_selector)

    def floor_key(self, kube: SharedClient, path: str, item: Hashable) -> Hashable:
        """The floors' key of `item` (what the caller keys its writes by) in `path`: whoever
        wrote it, on this connection."""
        return (id(kube.api), kube.remote, path, item)

    @contextlib.asynccontextmanager
    async def use(
        self,
        kube: SharedClient,
        path: str,
        *,
        label_selector: str = "",
        linger: float | None = None,
    ) -> AsyncIterator[SharedCollection | None]:
        """The shared collection of `path` as `kube`'s identity; None when none can be had
        (too many, or refused lately): the caller then reads the API itself."""
        key = self._key(kube, path, label_selector)
        collection = self._acquire(key, kube, path, label_selector)
        try:
            yield collection
        finally:
            if collection is not None:
                self._release(key, collection, self.linger if linger is None else linger)

    def _acquire(
        self, key: CollectionKey, kube: SharedClient, path: str, label_selector: str
    ) -> SharedCollection | None:
        collection = self._collections.get(key)
        if collection is not None and collection.refused is not None:
            age = asyncio.get_running_loop().time() - collection.refused_at
            if age < REFUSED_RETRY:
                return None
            del self._collections[key]
            if collection.closer is not None:
                collection.closer.cancel()
            collection = None
        if collection is None:
            if len(self._collections) >= self.limit:
                return None
            collection = self._collections[key] = SharedCollection(kube, path, label_selector)
            collection.start()
        collection.users += 1
        if collection.closer is not None:
            collection.closer.cancel()
            collection.closer = None
        return collection

    def _release(self, key: CollectionKey, collection: SharedCollection, linger: float) -> None:
        collection.users -= 1
        if collection.users > 0 or self._collections.get(key) is not collection:
            return
        if collection.closer is not None:
            collection.closer.cancel()
        collection.closer = asyncio.get_running_loop().call_later(
            linger, self._close_idle, key, collection
        )

    def _close_idle(self, key: CollectionKey, collection: SharedCollection) -> None:
        if collection.users > 0 or self._collections.get(key) is not collection:
            return
        del self._collections[key]
        if collection.task is not None:
            collection.task.cancel()

    def __len__(self) -> int:
        return len(self._collections)

    async def close(self) -> None:
        collections = list(self._collections.values())
        self._collections.clear()
        await asyncio.gather(*(c.stop() for c in collections), return_exceptions=True)
