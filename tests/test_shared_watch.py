"""Shared list+watches (`rudder.kube.shared_watch`), the write-your-own-reads floors
(`rudder.kube.versions`) and the release store reading records through them, against a
scripted stand-in for the API. The real API server is exercised by the scale benchmark's
smoke run (requests per install) and the end-to-end suite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from rudder.kube.client import JSON, ApiError
from rudder.kube.shared_watch import SharedWatches
from rudder.kube.versions import UNKNOWN, Floors, at_least
from rudder.release.store import HELM_OWNED, ReleaseStore

SECRETS = "/api/v1/namespaces/apps/secrets"


def secret(name: str, release: str, version: int) -> JSON:
    return {
        "metadata": {
            "name": name,
            "namespace": "apps",
            "resourceVersion": str(version),
            "labels": {"owner": "helm", "name": release, "version": "1", "status": "deployed"},
            "managedFields": [{"manager": "rudder"}],
        }
    }


class Api:
    """One collection; every watch plays the events sent to it. Counts lists and watches,
    and answers writes with the next resourceVersion."""

    def __init__(self, items: list[JSON] | None = None, user: str | None = None) -> None:
        self.items = list(items or [])
        self.version = 10
        self.lists: list[dict[str, Any]] = []
        self.watches: list[dict[str, Any]] = []
        self.events: asyncio.Queue[JSON] = asyncio.Queue()
        self.refuse: ApiError | None = None
        self.api = object()
        self.remote = ""
        self.impersonate_user = user

    def impersonate(self, user: str | None) -> Api:
        other = Api(self.items, user)
        other.api, other.events, other.lists, other.watches = (
            self.api,
            self.events,
            self.lists,
            self.watches,
        )
        return other

    async def get(self, path: str, **query: str | int | bool) -> JSON:
        self.lists.append(dict(query))
        if self.refuse is not None:
            raise self.refuse
        wanted = str(query.get("labelSelector", "")).split(",")
        items = [
            item
            for item in self.items
            if all(
                (item["metadata"]["labels"]).get(k) == v
                for k, _, v in (term.partition("=") for term in wanted if term)
            )
        ]
        return {"metadata": {"resourceVersion": str(self.version)}, "items": items}

    async def watch(
        self, path: str, *, resource_version: str, timeout_seconds: int = 300, **query: str
    ) -> AsyncIterator[JSON]:
        self.watches.append(dict(query))
        while True:
            yield await self.events.get()

    async def request(self, method: str, path: str, *, body: Any = None, **_: Any) -> JSON:
        self.version += 1
        if body is None:  # a deletion
            return {"kind": "Status", "status": "Success"}
        written = {**body, "metadata": {**body["metadata"], "resourceVersion": str(self.version)}}
        return written

    def send(self, kind: str, obj: JSON) -> JSON:
        self.version += 1
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.version)}}
        self.events.put_nowait({"type": kind, "object": obj})
        return obj


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_versions_compare_as_numbers_and_anything_else_is_not_caught_up() -> None:
    assert at_least("12", "9")
    assert at_least("9", None)
    assert not at_least("9", "12")
    assert not at_least("abc", "1")
    assert not at_least("5", "abc")
    assert not at_least(None, "1")
    floors = Floors()
    floors.wrote("r", "20")
    floors.wrote("r", "15")  # an older answer does not lower the floor
    assert floors.floor("r") == "20"
    assert floors.allows("r", "20")
    assert not floors.allows("r", "19")
    floors.changed_unseen("r")
    assert floors.floor("r") == UNKNOWN
    assert not floors.allows("r", "999")
    floors.wrote("r", "30")
    assert floors.allows("r", "30")
    assert floors.allows("other", "1")


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
        assert api.lists == [{"labelSelector": HELM_OWNED}]
        assert first.get(("apps", "s1")) is not None
        assert "managedFields" not in first.get(("apps", "s1"))["metadata"]  # type: ignore[index]
        # Another identity gets a collection of its own: it sees only what it may list.
        async with shared.use(
            api.impersonate("tenant"), SECRETS, label_selector=HELM_OWNED
        ) as other:
            assert other is not first
        assert len(shared) == 2
    finally:
        await shared.close()


async def test_listeners_hear_only_their_objects() -> None:
    api = Api([secret("a", "web", 5), secret("b", "api", 6)])
    shared = SharedWatches()
    heard: list[str] = []
    try:
        async with shared.use(api, SECRETS) as cached:
            assert cached is not None
            assert await cached.wait_synced()
            stop = cached.listen([("apps", "a")], lambda: heard.append("a"))
            api.send("MODIFIED", secret("b", "api", 0))
            changed = api.send("MODIFIED", secret("a", "web", 0))
            await settle()
            assert heard == ["a"]
            assert cached.version == changed["metadata"]["resourceVersion"]
            api.send("DELETED", secret("a", "web", 0))
            await settle()
            assert cached.get(("apps", "a")) is None
            assert heard == ["a", "a"]
            stop()
            api.send("ADDED", secret("a", "web", 0))
            await settle()
            assert heard == ["a", "a"]
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


async def test_past_the_limit_and_when_refused_readers_read_themselves() -> None:
    api = Api()
    shared = SharedWatches(limit=1)
    try:
        async with shared.use(api, SECRETS) as first:
            assert first is not None
            async with shared.use(api, "/api/v1/namespaces/other/secrets") as second:
                assert second is None
        refused = Api(user="tenant")
        refused.refuse = ApiError(403, {"message": "forbidden"}, "GET", SECRETS)
        await shared.close()
        async with shared.use(refused, SECRETS) as cached:
            assert cached is not None
            assert not await cached.wait_synced()
        async with shared.use(refused, SECRETS) as again:
            assert again is None  # not tried again at once
        assert len(refused.lists) == 1
    finally:
        await shared.close()


async def test_the_store_reads_records_from_the_watch_once_caught_up_with_its_writes() -> None:
    api = Api([secret("sh.helm.release.v1.web.v1", "web", 5), secret("x", "api", 6)])
    shared = SharedWatches()
    store = ReleaseStore(api, shared)  # type: ignore[arg-type]
    try:
        first = await store.history("apps", "web")
        assert [r.secret_name for r in first] == ["sh.helm.release.v1.web.v1"]
        assert len(api.lists) == 1  # the shared list, not one of the release's own
        await store.history("apps", "web")
        assert len(api.lists) == 1
        # rudder writes revision 2; until the watch delivers it, the store lists.
        created = await store.create(secret("sh.helm.release.v1.web.v2", "web", 0))
        listed_before = len(api.lists)
        api.items.append(created.secret)
        await store.history("apps", "web")
        assert len(api.lists) == listed_before + 1
        assert api.lists[-1] == {"labelSelector": f"{HELM_OWNED},name=web"}
        api.events.put_nowait({"type": "ADDED", "object": created.secret})
        await settle()
        names = [r.secret_name for r in await store.history("apps", "web")]
        assert names == ["sh.helm.release.v1.web.v1", "sh.helm.release.v1.web.v2"]
        assert len(api.lists) == listed_before + 1
        # A deletion's version is not known: the next read lists.
        await store.delete("apps", "sh.helm.release.v1.web.v1")
        await store.history("apps", "web")
        assert len(api.lists) == listed_before + 2
    finally:
        await shared.close()
