"""The list-then-watch primitive (`rudder.kube.watch.changes`) against a scripted stand-in
for the API: it resumes from the last resourceVersion, lists again on 410, backs off, and
outlives every connection error (a SIGKILLed API server raises aiohttp errors that are not
OSErrors). The real API server is exercised in e2e/test_apiserver_reconnect.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from rudder.kube.client import JSON, ApiError
from rudder.kube.discovery import invalidate_on_changes
from rudder.kube.watch import Backoff, Change, Changed, Interrupted, Listed, changes

PATH = "/api/v1/namespaces/apps/configmaps"

# What a watch stream does next: deliver an event, raise an error, or end (None).
Step = JSON | BaseException | None


class FakeKube:
    """Collections of objects; each watch request plays the steps queued for its path and
    then waits for more. Records every list and watch request and counts open streams."""

    def __init__(self, objects: dict[str, list[JSON]] | None = None) -> None:
        self.objects = objects or {}
        self.version = 10
        self.list_errors: list[BaseException] = []  # raised by the next lists, in order
        self.lists: list[tuple[str, dict[str, Any]]] = []
        self.watches: list[tuple[str, str, int, dict[str, Any]]] = []
        self.queues: dict[str, asyncio.Queue[Step]] = {}
        self.open = 0

    def queue(self, path: str = PATH) -> asyncio.Queue[Step]:
        return self.queues.setdefault(path, asyncio.Queue())

    def play(self, *steps: Step, path: str = PATH) -> None:
        for step in steps:
            self.queue(path).put_nowait(step)

    def event(self, kind: str, name: str, path: str = PATH) -> JSON:
        """A watch event for `name` at the next resourceVersion (the object is updated)."""
        self.version += 1
        obj = {"metadata": {"name": name, "resourceVersion": str(self.version)}}
        items = [i for i in self.objects.get(path, []) if i["metadata"]["name"] != name]
        self.objects[path] = items if kind == "DELETED" else [*items, obj]
        return {"type": kind, "object": obj}

    async def get(self, path: str, **query: str | int | bool) -> JSON:
        self.lists.append((path, dict(query)))
        if self.list_errors:
            raise self.list_errors.pop(0)
        items = self.objects.get(path, [])
        selector = str(query.get("fieldSelector", ""))
        if selector.startswith("metadata.name="):
            wanted = selector.removeprefix("metadata.name=")
            items = [item for item in items if item["metadata"]["name"] == wanted]
        return {"metadata": {"resourceVersion": str(self.version)}, "items": list(items)}

    async def watch(
        self, path: str, *, resource_version: str, timeout_seconds: int = 300, **query: str
    ) -> AsyncIterator[JSON]:
        self.watches.append((path, resource_version, timeout_seconds, dict(query)))
        self.open += 1
        try:
            queue = self.queue(path)
            while True:
                step = await queue.get()
                if step is None:
                    return
                if isinstance(step, BaseException):
                    raise step
                yield step
        finally:
            self.open -= 1


async def until(condition: Callable[[], object], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - polling the fake's state is simplest here
            await asyncio.sleep(0.001)


@dataclass(frozen=True)
class Recorded(Backoff):
    """No waiting; remembers the failure count of each back-off."""

    calls: list[int] = field(default_factory=list)

    def delay(self, failures: int) -> float:
        self.calls.append(failures)
        return 0.0


class Consumer:
    """Runs `changes` in a task and keeps what it yields."""

    def __init__(self, kube: FakeKube, **options: Any) -> None:
        self.seen: list[Change] = []
        options.setdefault("backoff", Recorded())
        self.task = asyncio.create_task(self._run(changes(kube, PATH, **options)))

    async def _run(self, stream: Any) -> None:
        async with aclosing(stream):
            async for change in stream:
                self.seen.append(change)

    def of(self, kind: type[Any]) -> list[Any]:
        return [change for change in self.seen if isinstance(change, kind)]

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


def cm(name: str, version: str) -> JSON:
    return {"metadata": {"name": name, "resourceVersion": version}}


async def test_lists_then_yields_each_change() -> None:
    kube = FakeKube({PATH: [cm("a", "5")]})
    consumer = Consumer(kube, query={"fieldSelector": "metadata.name=a"})
    await until(lambda: kube.watches)
    kube.play(
        kube.event("MODIFIED", "a"),
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "30"}}},
        kube.event("DELETED", "a"),
        kube.event("ADDED", "a"),
    )
    await until(lambda: len(consumer.seen) == 4)
    assert consumer.seen[0] == Listed([cm("a", "5")], relisted=False, version="10")
    assert [(c.type, c.object["metadata"]["resourceVersion"]) for c in consumer.of(Changed)] == [
        ("MODIFIED", "11"),
        ("DELETED", "12"),
        ("ADDED", "13"),
    ]
    assert kube.lists == [(PATH, {"fieldSelector": "metadata.name=a"})]
    assert kube.watches == [(PATH, "10", 300, {"fieldSelector": "metadata.name=a"})]
    await consumer.stop()
    assert kube.open == 0


@pytest.mark.parametrize(
    "error",
    [
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientPayloadError("Response payload is not completed"),
        aiohttp.ClientConnectionResetError("Connection reset by peer"),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError(),
        ValueError("a JSON line cut in half"),
    ],
    ids=lambda error: type(error).__name__,
)
async def test_a_broken_watch_resumes_from_the_last_version_seen(error: BaseException) -> None:
    kube = FakeKube()
    backoff = Recorded()
    consumer = Consumer(kube, backoff=backoff)
    await until(lambda: kube.watches)
    kube.play(kube.event("ADDED", "a"), error)
    await until(lambda: len(kube.watches) == 2)
    assert [version for _, version, _, _ in kube.watches] == ["10", "11"]
    assert len(kube.lists) == 1  # resumed, not listed again: nothing was missed
    assert consumer.of(Interrupted) == [Interrupted(error)]
    assert backoff.calls == [1]
    kube.play(kube.event("MODIFIED", "a"))
    await until(lambda: len(consumer.of(Changed)) == 2)
    await consumer.stop()


async def test_a_watch_the_server_ends_resumes_from_the_last_bookmark() -> None:
    kube = FakeKube()
    backoff = Recorded()
    consumer = Consumer(kube, backoff=backoff)
    await until(lambda: kube.watches)
    kube.play({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "42"}}}, None)
    await until(lambda: len(kube.watches) == 2)
    assert kube.watches[1][1] == "42"
    assert consumer.of(Interrupted) == []
    assert backoff.calls == []  # a normal end is resumed at once
    await consumer.stop()


@pytest.mark.parametrize(
    "expiry",
    [
        ApiError(410, {"reason": "Expired"}, "WATCH", PATH),
        {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}},
    ],
    ids=["answer", "event"],
)
async def test_an_expired_watch_lists_again_and_says_events_may_be_missed(expiry: Step) -> None:
    kube = FakeKube({PATH: [cm("a", "5")]})
    backoff = Recorded()
    consumer = Consumer(kube, backoff=backoff)
    await until(lambda: kube.watches)
    kube.objects[PATH] = [cm("a", "9")]  # changed while nobody watched
    kube.version = 20
    kube.play(expiry)
    await until(lambda: len(kube.watches) == 2)
    assert consumer.of(Listed) == [
        Listed([cm("a", "5")], relisted=False, version="10"),
        Listed([cm("a", "9")], relisted=True, version="20"),
    ]
    assert kube.watches[1][1] == "20"
    assert consumer.of(Interrupted) == []
    assert backoff.calls == []
    await consumer.stop()


async def test_other_api_errors_back_off_and_list_again() -> None:
    kube = FakeKube()
    backoff = Recorded()
    consumer = Consumer(kube, backoff=backoff)
    await until(lambda: kube.watches)
    kube.play({"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "etcd"}})
    await until(lambda: len(kube.watches) == 2)
    [interrupted] = consumer.of(Interrupted)
    assert isinstance(interrupted.error, ApiError)
    assert interrupted.error.code == 500
    assert len(kube.lists) == 2
    assert backoff.calls == [1]
    await consumer.stop()


async def test_failing_lists_are_retried_with_a_growing_back_off() -> None:
    kube = FakeKube()
    kube.list_errors = [
        aiohttp.ClientConnectorError(
            aiohttp.client_reqrep.ConnectionKey("h", 1, True, None, None, None, None),
            OSError(111, "refused"),
        ),
        aiohttp.ServerDisconnectedError(),
        ApiError(503, {"message": "starting"}, "GET", PATH),
        ApiError(403, {"message": "RBAC cache not synced"}, "GET", PATH),
    ]
    backoff = Recorded()
    consumer = Consumer(kube, backoff=backoff)
    await until(lambda: kube.watches)
    assert len(kube.lists) == 5
    assert backoff.calls == [1, 2, 3, 4]
    assert consumer.of(Listed) == [Listed([], relisted=False, version="10")]
    await consumer.stop()


async def test_a_fatal_code_ends_it() -> None:
    kube = FakeKube()
    kube.list_errors = [
        ApiError(500, {"message": "hiccup"}, "GET", PATH),
        ApiError(403, {"message": "forbidden"}, "GET", PATH),
    ]
    stream = changes(kube, PATH, fatal=(401, 403), backoff=Recorded())
    async with aclosing(stream):
        assert isinstance(await anext(stream), Interrupted)
        with pytest.raises(ApiError) as raised:
            await anext(stream)
    assert raised.value.code == 403


async def test_an_unexpected_error_is_logged_loudly_but_survived(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kube = FakeKube()
    consumer = Consumer(kube)
    await until(lambda: kube.watches)
    with caplog.at_level(logging.ERROR, logger="rudder.kube.watch"):
        kube.play(RuntimeError("a bug"))
        await until(lambda: len(kube.watches) == 2)
    assert "failed unexpectedly" in caplog.text
    assert len(kube.lists) == 2  # listed again: its state is unknown
    kube.play(kube.event("ADDED", "a"))
    await until(lambda: consumer.of(Changed))
    await consumer.stop()


async def test_it_outlives_any_number_of_disconnects() -> None:
    kube = FakeKube()
    consumer = Consumer(kube)
    await until(lambda: kube.watches)
    for _ in range(50):
        kube.play(kube.event("MODIFIED", "a"), aiohttp.ServerDisconnectedError())
    await until(lambda: len(kube.watches) == 51)
    assert len(consumer.of(Changed)) == 50
    assert len(consumer.of(Interrupted)) == 50
    assert not consumer.task.done()
    kube.play(kube.event("MODIFIED", "a"))
    await until(lambda: len(consumer.of(Changed)) == 51)
    await consumer.stop()


async def test_watches_that_end_at_once_back_off_from_the_second() -> None:
    kube = FakeKube()
    backoff = Recorded()
    consumer = Consumer(kube, backoff=backoff)
    kube.play(None, None, None, None)
    await until(lambda: len(kube.watches) == 5)
    assert backoff.calls == [1, 2, 3]
    assert consumer.of(Interrupted) == []
    await consumer.stop()


async def test_the_back_off_doubles_up_to_its_maximum_with_jitter() -> None:
    backoff = Backoff(initial=1.0, maximum=5.0)
    for failures, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (10, 5.0)]:
        delays = [backoff.delay(failures) for _ in range(50)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert len(set(delays)) > 1


async def test_leaving_early_closes_the_open_watch() -> None:
    kube = FakeKube()
    kube.play(kube.event("ADDED", "a"))
    stream = changes(kube, PATH, backoff=Recorded())
    async with aclosing(stream):
        async for change in stream:
            if isinstance(change, Changed):
                break
    assert kube.open == 0


async def test_cancelling_closes_the_open_watch() -> None:
    kube = FakeKube()
    consumer = Consumer(kube)
    await until(lambda: kube.open == 1)
    await consumer.stop()
    assert kube.open == 0


async def test_a_deadline_bounds_each_watch_request() -> None:
    kube = FakeKube()
    deadline = asyncio.get_running_loop().time() + 10
    consumer = Consumer(kube, deadline=deadline)
    await until(lambda: kube.watches)
    assert 10 <= kube.watches[0][2] <= 11
    await consumer.stop()


async def test_a_list_limit_applies_to_the_list_only() -> None:
    kube = FakeKube()
    consumer = Consumer(kube, list_limit=1, query={"labelSelector": "x=y"})
    await until(lambda: kube.watches)
    assert kube.lists == [(PATH, {"labelSelector": "x=y", "limit": 1})]
    assert kube.watches[0][3] == {"labelSelector": "x=y"}
    await consumer.stop()


class CountingDiscovery:
    def __init__(self) -> None:
        self.invalidations = 0

    def invalidate(self) -> None:
        self.invalidations += 1


async def test_discovery_is_invalidated_on_changes_and_after_a_gap() -> None:
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    kube = FakeKube()
    discovery = CountingDiscovery()
    task = asyncio.create_task(invalidate_on_changes(discovery, kube))  # type: ignore[arg-type]
    await until(lambda: kube.open == 2)
    assert [query for path, query in kube.lists if path == crds] == [{"limit": 1}]
    assert discovery.invalidations == 0
    kube.play(kube.event("ADDED", "widgets.example.test", crds), path=crds)
    await until(lambda: discovery.invalidations == 1)
    kube.play(ApiError(410, {"reason": "Expired"}, "WATCH", crds), path=crds)
    await until(lambda: discovery.invalidations == 2)  # what happened meanwhile is unknown
    assert kube.open == 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert kube.open == 0
