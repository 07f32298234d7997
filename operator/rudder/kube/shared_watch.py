"""One list+watch per collection, shared by every reader acting as the same identity.

Readiness waits and release-record reads used to list (and watch) per release: 200
releases in one namespace meant 200 lists of its Deployments and 200 of its Secrets. A
`SharedCollection` lists and watches a collection once — per connection (cluster),
impersonated user, collection path, label selector and flavour, so tenancy is kept: a
reader only ever sees what its own identity may list — and keeps the objects as last
seen, without their managedFields (nobody reading a cache needs them, and they are often
most of an object). With `metadata_only` it asks the API server for metadata alone
(PartialObjectMetadata): release records are watched that way, their payloads are not kept
(see `rudder.release.store`). `SharedWatches` hands collections out:

- `use()` is a context: the collection lives while anyone uses it and `linger` seconds
  after the last one left, so a wave of releases shares one list and the steady path reads
  nothing at all;
- at most `limit` collections are kept; past it `use()` gives None and the reader reads
  the API itself (a slot frees when a collection's linger ends: evicting one to open
  another would cost a list and a watch per read where a direct read costs one list), as
  it does when a collection is refused (401, 403) or not served (404) — tried again only
  after REFUSED_RETRY seconds — or not listed yet because the API server is away;
- a collection whose watch ends for good (closed, or a bug) tells its readers and leaves
  the registry, so nobody reads a cache that no longer follows the API;
- `floors` hold what rudder's own writes require of a cache (write-your-own-reads,
  `rudder.kube.versions`).

A cache is authorized when its list and watch start: an identity's lost permission to
read shows on its reads at the next watch (within WATCH_SECONDS); its writes are checked on
every request as always.
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
    Bookmark,
    Changed,
    Interrupted,
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
SYNC_WAIT: Final = 5.0
# What a metadata-only list and watch ask for.
METADATA_LIST: Final = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
METADATA_OBJECT: Final = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"

ObjectKey = tuple[str, str]  # (namespace, name)
# connection, server, user, path, label selector, metadata only
CollectionKey = tuple[int, str, str | None, str, str, bool]
# Told which object changed; None: any may have (listed again, or the watch ended).
Listener = Callable[[ObjectKey | None], None]


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

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str | int | bool] | None = ...,
        accept: str = ...,
    ) -> JSON: ...


class _MetadataOnly:
    """List and watch as `kube`, asking for metadata alone."""

    def __init__(self, kube: SharedClient) -> None:
        self.kube = kube

    async def get(self, path: str, **query: str | int | bool) -> JSON:
        return await self.kube.request("GET", path, query=dict(query), accept=METADATA_LIST)

    def watch(
        self, path: str, *, resource_version: str, timeout_seconds: int = 300, **query: str
    ) -> AsyncIterator[JSON]:
        return self.kube.watch(
            path,
            resource_version=resource_version,
            timeout_seconds=timeout_seconds,
            accept=METADATA_OBJECT,
            **query,
        )


def object_key(obj: JSON) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def kept_form(obj: JSON) -> JSON:
    """An object as rudder keeps it in memory: without its managedFields and kubectl's
    last-applied copy of it, often most of an object and read by nothing that keeps it."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return obj
    annotations = meta.get("annotations")
    if not isinstance(annotations, dict):
        annotations = {}
    last_applied = LAST_APPLIED in annotations
    if "managedFields" not in meta and not last_applied:
        return obj
    kept = {k: v for k, v in meta.items() if k != "managedFields"}
    if last_applied:
        kept["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    return {**obj, "metadata": kept}


class SharedCollection:
    """One collection as a list and then a watch left it (see the module's docstring)."""

    def __init__(
        self, kube: SharedClient, path: str, label_selector: str, *, metadata_only: bool
    ) -> None:
        self.kube = kube
        self.path = path
        self.label_selector = label_selector
        self.metadata_only = metadata_only
        self.objects: dict[ObjectKey, JSON] = {}
        self.version: str | None = None  # of the newest list, event or bookmark
        self.refused: ApiError | None = None  # the list or watch was refused: read directly
        self.refused_at = 0.0
        self.ended = False  # stopped, or died: it follows the API no more
        self.users = 0
        self.idle_since = 0.0
        self.closer: asyncio.TimerHandle | None = None
        self._settled = asyncio.Event()  # listed once, refused, failed to list, or ended
        self._listeners: dict[ObjectKey, set[Listener]] = {}
        self.task: asyncio.Task[None] | None = None

    def start(self, on_end: Callable[[SharedCollection], None]) -> None:
        self.task = asyncio.create_task(self._run(), name=f"shared watch {self.path}")
        self.task.add_done_callback(lambda task: self._ended(task, on_end))

    @property
    def synced(self) -> bool:
        """Listed, and still following the API: what it holds may be read."""
        return self.version is not None and self.refused is None and not self.ended

    async def wait_synced(self, timeout: float = SYNC_WAIT) -> bool:  # noqa: ASYNC109
        """Whether the collection can be read (waiting up to `timeout` for its first list)."""
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

    def listen(self, keys: Collection[ObjectKey], callback: Listener) -> Callable[[], None]:
        """Call `callback` with the key whenever one of `keys` changes, and with None when
        the collection is listed again or stops following the API; returns what stops it."""
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
            callback(key)

    async def _run(self) -> None:
        query = {"labelSelector": self.label_selector} if self.label_selector else {}
        client: ListWatchClient = _MetadataOnly(self.kube) if self.metadata_only else self.kube
        stream = changes(client, self.path, query=query, fatal=(401, 403, 404), bookmarks=True)
        try:
            async for change in stream:
                if isinstance(change, Listed):
                    self.objects = {object_key(item): kept_form(item) for item in change.items}
                    self.version = change.version
                    self._settled.set()
                    self._notify()
                elif isinstance(change, Changed):
                    key = object_key(change.object)
                    if change.type == "DELETED":
                        self.objects.pop(key, None)
                    else:
                        self.objects[key] = kept_form(change.object)
                    self.version = resource_version(change.object, self.version or "")
                    self._notify(key)
                elif isinstance(change, Bookmark):
                    self.version = change.version or self.version
                elif isinstance(change, Interrupted) and self.version is None:
                    # Not listed yet (the API server is away): readers read directly
                    # meanwhile rather than each waiting SYNC_WAIT.
                    self._settled.set()
        except ApiError as error:
            # Often a tenant allowed to list but not watch: its readers read directly.
            user = self.kube.impersonate_user or "rudder"
            log.debug("shared watch of %s as %s refused: %s", self.path, user, error)
            self.refused = error
            self.refused_at = asyncio.get_running_loop().time()

    def _ended(self, task: asyncio.Task[None], on_end: Callable[[SharedCollection], None]) -> None:
        if self.refused is None:
            log_unexpected_end(task)
        self.ended = self.refused is None
        self._settled.set()
        self._notify()
        on_end(self)

    def stop(self) -> None:
        if self.closer is not None:
            self.closer.cancel()
            self.closer = None
        if self.task is not None:
            self.task.cancel()


class SharedWatches:
    """The shared collections of one process (see the module's docstring)."""

    def __init__(self, *, linger: float = LINGER, limit: int = MAX_COLLECTIONS) -> None:
        self.linger = linger
        self.limit = limit
        self.floors = Floors()
        self.closed = False
        self._collections: dict[CollectionKey, SharedCollection] = {}
        self._full = False  # said once per time the limit is reached

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
        metadata_only: bool = False,
        linger: float | None = None,
    ) -> AsyncIterator[SharedCollection | None]:
        """The shared collection of `path` as `kube`'s identity; None when none can be had
        (too many in use, refused lately, or closed): the caller then reads the API itself."""
        key = (
            id(kube.api),
            kube.remote,
            kube.impersonate_user,
            path,
            label_selector,
            metadata_only,
        )
        collection = self._acquire(key, kube, path, label_selector, metadata_only)
        try:
            yield collection
        finally:
            if collection is not None:
                self._release(key, collection, self.linger if linger is None else linger)

    def _acquire(
        self,
        key: CollectionKey,
        kube: SharedClient,
        path: str,
        label_selector: str,
        metadata_only: bool,
    ) -> SharedCollection | None:
        if self.closed:
            return None
        now = asyncio.get_running_loop().time()
        collection = self._collections.get(key)
        if collection is not None and collection.refused is not None:
            if now - collection.refused_at < REFUSED_RETRY:
                return None
            self._drop(key, collection)
            collection = None
        if collection is None:
            if len(self._collections) >= self.limit:
                if not self._full:
                    log.info(
                        "%d shared watches open: further collections are read directly", self.limit
                    )
                self._full = True
                return None
            self._full = False
            collection = SharedCollection(kube, path, label_selector, metadata_only=metadata_only)
            self._collections[key] = collection
            collection.start(lambda ended: self._forget(key, ended))
        collection.users += 1
        if collection.closer is not None:
            collection.closer.cancel()
            collection.closer = None
        return collection

    def _release(self, key: CollectionKey, collection: SharedCollection, linger: float) -> None:
        collection.users -= 1
        if collection.users > 0 or self._collections.get(key) is not collection:
            return
        loop = asyncio.get_running_loop()
        collection.idle_since = loop.time()
        if collection.closer is not None:
            collection.closer.cancel()
        collection.closer = loop.call_later(linger, self._close_idle, key, collection)

    def _close_idle(self, key: CollectionKey, collection: SharedCollection) -> None:
        if collection.users == 0:
            self._drop(key, collection)

    def _drop(self, key: CollectionKey, collection: SharedCollection) -> None:
        if self._collections.get(key) is collection:
            del self._collections[key]
        collection.stop()

    def _forget(self, key: CollectionKey, collection: SharedCollection) -> None:
        """A collection's watch ended; a refused one stays until REFUSED_RETRY has passed."""
        if collection.refused is None and self._collections.get(key) is collection:
            del self._collections[key]

    def __len__(self) -> int:
        return len(self._collections)

    async def close(self) -> None:
        self.closed = True
        collections = list(self._collections.values())
        self._collections.clear()
        for collection in collections:
            collection.stop()
        tasks = [c.task for c in collections if c.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
