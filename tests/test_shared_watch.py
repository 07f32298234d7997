"""Shared list+watches (`rudder.kube.shared_watch`), the write-your-own-reads floors
(`rudder.kube.versions`) and the release store reading records through them, against a
scripted stand-in for the API. The real API server is exercised by the scale benchmark's
smoke run (requests per install, none while idle) and the end-to-end suite."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from rudder.kube.client import JSON, ApiError
from rudder.kube.shared_watch import (
    LAST_APPLIED,
    METADATA_LIST,
    METADATA_OBJECT,
    SharedWatches,
    kept_form,
)
from rudder.kube.versions import Floor, Floors, at_least
from rudder.release.store import HELM_OWNED, RecordBodies, ReleaseStore

SECRETS = "/api/v1/namespaces/apps/secrets"


def secret(name: str, release: str, version: int = 0) -> JSON:
    return {
        "metadata": {
            "name": name,
            "namespace": "apps",
            "uid": f"uid-{name}",
            "resourceVersion": str(version),
            "labels": {"owner": "helm", "name": release, "version": "1", "status": "deployed"},
            "managedFields": [{"manager": "rudder"}],
        },
        "data": {"release": "payload"},
    }


def metadata_only(obj: JSON) -> JSON:
    return {"kind": "PartialObjectMetadata", "metadata": obj["metadata"]}


class Api:
    """One collection; every watch plays the events sent to it. Records lists (with what
    they accepted) and watches, and answers writes with the next resourceVersion."""

    def __init__(self, items: list[JSON] | None = None, user: str | None = None) -> None:
        self.items = list(items or [])
        self.version = 10
        self.lists: list[tuple[dict[str, Any], str]] = []
        self.watches: list[str] = []
        self.events: asyncio.Queue[JSON | BaseException] = asyncio.Queue()
        self.refuse: BaseException | None = None
        self.api = object()
        self.remote = ""
        self.impersonate_user = user

    def impersonate(self, user: str | None) -> Api:
        other = Api(self.items, user)
        other.api, other.events, other.lists = self.api, self.events, self.lists
        return other

    async def get(self, path: str, **query: str | int | bool) -> JSON:
        return await self.request("GET", path, query=dict(query))

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        accept: str = "application/json",
        **_: Any,
    ) -> JSON:
        if method == "GET":
            self.lists.append((dict(query or {}), accept))
            if self.refuse is not None:
                raise self.refuse
            wanted = [
                t.partition("=")
                for t in str((query or {}).get("labelSelector", "")).split(",")
                if t
            ]
            items = [
                metadata_only(item) if accept == METADATA_LIST else item
                for item in self.items
                if all(item["metadata"]["labels"].get(k) == v for k, _, v in wanted)
            ]
            return {"metadata": {"resourceVersion": str(self.version)}, "items": items}
        self.version += 1
        if body is None:  # a deletion
            return {"kind": "Status", "status": "Success"}
        meta = {**body["metadata"], "resourceVersion": str(self.version)}
        meta.setdefault("uid", f"uid-{meta['name']}")
        return {**body, "metadata": meta}

    async def watch(
        self,
        path: str,
        *,
        resource_version: str,
        timeout_seconds: int = 300,
        accept: str = "application/json",
        **query: str,
    ) -> AsyncIterator[JSON]:
        self.watches.append(accept)
        while True:
            event = await self.events.get()
            if isinstance(event, BaseException):
                raise event
            if accept == METADATA_OBJECT and event["type"] != "BOOKMARK":
                event = {"type": event["type"], "object": metadata_only(event["object"])}
            yield event

    def send(self, kind: str, obj: JSON) -> JSON:
        self.version += 1
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.version)}}
        self.events.put_nowait({"type": kind, "object": obj})
        return obj


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def test_versions_compare_as_numbers_and_anything_else_is_not_caught_up() -> None:
    assert at_least("12", "9")
    assert at_least("9", None)
    assert not at_least("9", "12")
    assert not at_least("abc", "1")
    assert not at_least("5", "abc")
    assert not at_least(None, "1")


def test_floors_rise_and_remember_deletions_until_met() -> None:
    floors = Floors()
    assert floors.allows("r", "1")
    floors.wrote("r", "20")
    floors.wrote("r", "15")  # an older answer does not lower the floor
    assert floors.floor("r") is not None
    assert floors.floor("r").version == "20"  # type: ignore[union-attr]
    assert floors.allows("r", "20")
    assert not floors.allows("r", "19")
    floors.deleted("r", "sh.helm.release.v1.r.v1")
    floor = floors.floor("r")
    assert floor is not None
    assert floor.absent == {"sh.helm.release.v1.r.v1"}
    # A cache at 30 lacks the name: any cache at 30 or later does (one version, no names).
    floors.met("r", floor, "30")
    assert floors.floor("r") == Floor(version="30")
    # ... and it stays: another identity's cache must catch up too.
    assert not floors.allows("r", "29")
    floors.forget("r")
    assert floors.floor("r") is None


def test_a_deleted_name_written_again_is_no_longer_absent() -> None:
    floors = Floors()
    floors.deleted("r", "v1")
    floors.wrote("r", "40", "v1")  # created again (or a direct read shows it again)
    assert floors.floor("r") == Floor(version="40")


def test_a_floor_that_moved_while_a_cache_was_read_is_not_compacted() -> None:
    floors = Floors()
    floors.deleted("r", "v1")
    seen = floors.floor("r")
    assert seen is not None
    floors.deleted("r", "v2")  # during the reader's wait
    floors.met("r", seen, "30")
    assert floors.floor("r") == Floor(absent=frozenset({"v1", "v2"}))


def test_past_the_limit_the_floor_written_longest_ago_goes() -> None:
    floors = Floors(limit=2)
    floors.wrote("a", "1")
    floors.wrote("b", "2")
    floors.wrote("a", "3")  # written again: now the newest
    floors.wrote("c", "4")
    assert floors.floor("b") is None
    assert floors.floor("a") == Floor(version="3")
    assert floors.floor("c") == Floor(version="4")


async def test_users_of_one_collection_share_its_list_and_watch() -> None:
    api = Api([secret("s1", "web", 5)])
    shared = SharedWatches()
    try:
        async with (
            shared.use(api, SECRETS, label_selector=HELM_OWNED) as first,
            shared.use(api, SECRETS, label_selector=HELM_OWNED) as second,
        ):
            assert first is second
            assert first is not None
            assert await first.wait_synced()
        assert api.lists == [({"labelSelector": HELM_OWNED}, "application/json")]
        assert first.get(("apps", "s1")) is not None
        assert "managedFields" not in first.get(("apps", "s1"))["metadata"]  # type: ignore[index]
        # Another identity gets a collection of its own: it sees only what it may list.
        tenant = api.impersonate("tenant")
        async with shared.use(tenant, SECRETS, label_selector=HELM_OWNED) as other:
            assert other is not first
        # So does a metadata-only watch of the same collection: it asks for metadata alone.
        async with shared.use(api, SECRETS, label_selector=HELM_OWNED, metadata_only=True) as meta:
            assert meta is not None
            assert await meta.wait_synced()
            assert "data" not in meta.get(("apps", "s1"))  # type: ignore[operator]
        assert api.lists[-1][1] == METADATA_LIST
        assert len(shared) == 3
    finally:
        await shared.close()


async def test_listeners_hear_only_their_objects_and_bookmarks_move_the_version() -> None:
    api = Api([secret("a", "web", 5), secret("b", "api", 6)])
    shared = SharedWatches()
    heard: list[object] = []
    try:
        async with shared.use(api, SECRETS) as cached:
            assert cached is not None
            assert await cached.wait_synced()
            stop = cached.listen([("apps", "a")], heard.append)
            api.send("MODIFIED", secret("b", "api"))
            changed = api.send("MODIFIED", secret("a", "web"))
            await settle()
            assert heard == [("apps", "a")]
            assert cached.version == changed["metadata"]["resourceVersion"]
            api.send("DELETED", secret("a", "web"))
            await settle()
            assert cached.get(("apps", "a")) is None
            assert len(heard) == 2
            api.events.put_nowait(
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "99"}}}
            )
            await settle()
            assert cached.caught_up("99")
            stop()
            api.send("ADDED", secret("a", "web"))
            await settle()
            assert len(heard) == 2
    finally:
        await shared.close()


async def test_an_unused_collection_closes_after_it_lingered() -> None:
    api = Api()
    shared = SharedWatches(linger=0.05)
    async with shared.use(api, SECRETS) as cached:
        assert cached is not None
        assert await cached.wait_synced()
    assert len(shared) == 1
    await asyncio.sleep(0.1)
    assert len(shared) == 0
    assert cached.task is not None
    assert cached.task.cancelled()


async def test_a_collection_that_stops_tells_its_readers_and_leaves() -> None:
    api = Api()
    shared = SharedWatches()
    heard: list[object] = []
    async with shared.use(api, SECRETS) as cached:
        assert cached is not None
        assert await cached.wait_synced()
        cached.listen([("apps", "x")], heard.append)
        await shared.close()
        await settle()
        assert heard == [None]
        assert not cached.synced
    async with shared.use(api, SECRETS) as after:
        assert after is None  # closed: readers read the API themselves


async def test_at_the_limit_readers_read_directly_until_a_collection_lingered_out() -> None:
    """Evicting an idle collection to open another would cost a list and a watch per read
    once more namespaces are read than the limit holds: a direct read costs one list."""
    api = Api()
    shared = SharedWatches(limit=1, linger=0.05)
    try:
        async with shared.use(api, SECRETS) as first:
            assert first is not None
        async with shared.use(api, "/api/v1/namespaces/other/secrets") as second:
            assert second is None  # the first lingers: the reader reads the API itself
        await asyncio.sleep(0.1)
        async with shared.use(api, "/api/v1/namespaces/other/secrets") as third:
            assert third is not None  # the first's linger ended: its slot is free
        assert len(shared) == 1
    finally:
        await shared.close()


async def test_refused_or_unlisted_collections_send_readers_to_the_api() -> None:
    shared = SharedWatches()
    try:
        refused = Api(user="tenant")
        refused.refuse = ApiError(403, {"message": "forbidden"}, "GET", SECRETS)
        async with shared.use(refused, SECRETS) as cached:
            assert cached is not None
            assert not await cached.wait_synced()
        async with shared.use(refused, SECRETS) as again:
            assert again is None  # not tried again at once
        assert len(refused.lists) == 1
        away = Api(user="other")
        away.refuse = OSError("connection refused")
        async with shared.use(away, SECRETS) as cached:
            assert cached is not None
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert not await cached.wait_synced()
            assert loop.time() - started < 1  # not the whole SYNC_WAIT
    finally:
        await shared.close()


async def test_the_store_reads_records_from_the_watch_once_caught_up_with_its_writes() -> None:
    api = Api([secret("sh.helm.release.v1.web.v1", "web", 5), secret("x", "api", 6)])
    api.version = 50  # the list's version is newer than any record in it
    shared = SharedWatches()
    store = ReleaseStore(api, shared)  # type: ignore[arg-type]
    try:
        # After a restart no body is kept: one list of the release brings them.
        first = await store.history("apps", "web")
        assert [r.secret_name for r in first] == ["sh.helm.release.v1.web.v1"]
        assert api.lists[-1] == ({"labelSelector": f"{HELM_OWNED},name=web"}, "application/json")
        before = len(api.lists)
        # From then on, nothing is read: the watch has what that list showed.
        for _ in range(3):
            assert [r.secret_name for r in await store.history("apps", "web")] == [
                "sh.helm.release.v1.web.v1"
            ]
        assert len(api.lists) == before
        # rudder writes revision 2; until the watch delivers it, the store lists.
        created = await store.create(secret("sh.helm.release.v1.web.v2", "web"))
        api.items.append(created.secret)
        await store.history("apps", "web")
        assert len(api.lists) == before + 1
        api.events.put_nowait({"type": "ADDED", "object": created.secret})
        await settle()
        names = [r.secret_name for r in await store.history("apps", "web")]
        assert names == ["sh.helm.release.v1.web.v1", "sh.helm.release.v1.web.v2"]
        assert len(api.lists) == before + 1
        # A deletion: the cache counts again once it no longer holds the name.
        await store.delete("apps", "sh.helm.release.v1.web.v1")
        api.items = [i for i in api.items if i["metadata"]["name"] != "sh.helm.release.v1.web.v1"]
        await store.history("apps", "web")
        assert len(api.lists) == before + 2
        api.send("DELETED", secret("sh.helm.release.v1.web.v1", "web"))
        await settle()
        names = [r.secret_name for r in await store.history("apps", "web")]
        assert names == ["sh.helm.release.v1.web.v2"]
        assert len(api.lists) == before + 2
        # Uninstall reads what the API holds, whatever the watch saw.
        await store.history("apps", "web", fresh=True)
        assert len(api.lists) == before + 3
    finally:
        await shared.close()


@contextlib.asynccontextmanager
async def web_v1_store() -> AsyncIterator[tuple[Api, ReleaseStore]]:
    """A store with shared watches over one record, `...web.v1`, already read once."""
    api = Api([secret(WEB_V1, "web", 5)])
    shared = SharedWatches()
    store = ReleaseStore(api, shared)  # type: ignore[arg-type]
    try:
        await store.history("apps", "web")
        yield api, store
    finally:
        await shared.close()


WEB_V1 = "sh.helm.release.v1.web.v1"


async def test_a_record_deleted_and_created_again_is_read_from_the_watch_again() -> None:
    """Remediation by uninstall, then install: `...v1` is deleted and created anew."""
    async with web_v1_store() as (api, store):
        await store.delete("apps", WEB_V1)
        api.items = []
        assert await store.history("apps", "web") == []  # the watch lags: a direct list
        again = secret(WEB_V1, "web")
        again["metadata"]["uid"] = "uid-again"
        created = await store.create(again)
        api.items = [created.secret]
        api.send("DELETED", secret(WEB_V1, "web"))
        api.events.put_nowait({"type": "ADDED", "object": created.secret})
        await settle()
        before = len(api.lists)
        for _ in range(3):
            assert [r.secret_name for r in await store.history("apps", "web")] == [WEB_V1]
        assert len(api.lists) == before, "the watch holds the new record: no list"


async def test_a_failed_deletion_leaves_no_floor_that_a_cache_can_never_meet() -> None:
    async with web_v1_store() as (api, store):
        original = api.request

        async def refuse_deletes(method: str, path: str, **kwargs: Any) -> JSON:
            if method == "DELETE":
                raise ApiError(503, {"message": "etcd is away"}, method, path)
            return await original(method, path, **kwargs)

        api.request = refuse_deletes  # type: ignore[method-assign]
        with pytest.raises(ApiError):
            await store.delete("apps", WEB_V1)
        before = len(api.lists)
        assert [r.secret_name for r in await store.history("apps", "web")] == [WEB_V1]
        assert len(api.lists) == before


def test_record_bodies_keep_the_newest_version_of_each_record_only() -> None:
    bodies = RecordBodies(budget=10_000)
    pending, deployed = secret("r.v1", "r", 5), secret("r.v1", "r", 9)
    bodies.keep(pending)
    bodies.keep(deployed)  # the pending body is never asked for again
    bodies.keep(pending)  # a late, older read changes nothing
    assert bodies.get(metadata_only(pending)) is None
    kept = bodies.get(metadata_only(deployed))
    assert kept is not None
    assert "managedFields" not in kept["metadata"]
    assert bodies.size == len("payload") + 1024
    for n in range(20):  # past the budget the least recently used go
        bodies.keep(secret(f"other.v{n}", "other", 10 + n))
    assert bodies.size <= 10_000
    assert bodies.get(metadata_only(deployed)) is None


def test_kept_objects_lose_managed_fields_and_kubectls_last_applied_copy_only() -> None:
    body = {
        "apiVersion": "rudder.dev/v1alpha1",
        "kind": "HelmRelease",
        "metadata": {
            "name": "web",
            "annotations": {LAST_APPLIED: '{"spec": {}}', "rudder.dev/approve": "sha256:ab"},
            "managedFields": [{"manager": "kubectl-client-side-apply"}],
        },
        "spec": {"interval": "5m"},
    }
    kept = kept_form(body)
    assert kept["metadata"] == {"name": "web", "annotations": {"rudder.dev/approve": "sha256:ab"}}
    assert kept["spec"] is body["spec"]
    assert body["metadata"]["managedFields"], "the object handed in is left as it was"
    plain = {"metadata": {"name": "web", "annotations": {"a": "b"}}}
    assert kept_form(plain) is plain
