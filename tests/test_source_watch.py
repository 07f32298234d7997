"""Watches of valuesFrom sources: one per referenced object, started and stopped as
HelmReleases track and forget them, waking every referrer on a change, and kept alive
through broken connections and expired watches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from rudder.kube.client import JSON
from rudder.kube.watch import Backoff
from rudder.reconcile.source_watch import Key, SourceWatcher
from test_watch import FakeKube, until

NS = "apps"
CONFIG_MAPS = f"/api/v1/namespaces/{NS}/configmaps"
SECRETS = f"/api/v1/namespaces/{NS}/secrets"
COMMON = ("ConfigMap", NS, "common")
TOKEN = ("Secret", NS, "token")
WEB: Key = (NS, "web")
API: Key = (NS, "api")


def cm(name: str, version: str) -> JSON:
    return {"metadata": {"name": name, "resourceVersion": version}}


class Setup:
    def __init__(self, objects: dict[str, list[JSON]] | None = None) -> None:
        self.kube = FakeKube(objects)
        self.woken: list[Key] = []
        self.watcher = SourceWatcher(self.kube, self.woken.append, backoff=Backoff(0.001, 0.001))

    def watched(self) -> list[tuple[str, str]]:
        """(collection, field selector) of each watch request so far."""
        return [(path, query.get("fieldSelector", "")) for path, _, _, query in self.kube.watches]


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    made = Setup({CONFIG_MAPS: [cm("common", "5")]})
    yield made
    await made.watcher.stop()


async def test_one_watch_per_source_filtered_by_name(setup: Setup) -> None:
    setup.watcher.track(WEB, [COMMON, TOKEN])
    setup.watcher.track(API, [COMMON])
    await until(lambda: setup.kube.open == 2)
    assert sorted(setup.watched()) == [
        (CONFIG_MAPS, "metadata.name=common"),
        (SECRETS, "metadata.name=token"),
    ]
    assert setup.woken == []  # the first list is the baseline, not a change


async def test_a_change_wakes_every_referrer(setup: Setup) -> None:
    setup.watcher.track(WEB, [COMMON, TOKEN])
    setup.watcher.track(API, [COMMON])
    await until(lambda: setup.kube.open == 2)
    setup.kube.play(setup.kube.event("MODIFIED", "common", CONFIG_MAPS), path=CONFIG_MAPS)
    await until(lambda: len(setup.woken) == 2)
    assert sorted(setup.woken) == [API, WEB]
    setup.kube.play(setup.kube.event("DELETED", "token", SECRETS), path=SECRETS)
    await until(lambda: len(setup.woken) == 3)
    assert setup.woken[-1] == WEB


async def test_forgetting_stops_a_watch_only_when_nobody_references_it(setup: Setup) -> None:
    setup.watcher.track(WEB, [COMMON, TOKEN])
    setup.watcher.track(API, [COMMON])
    await until(lambda: setup.kube.open == 2)
    setup.watcher.forget(WEB)
    await until(lambda: setup.kube.open == 1)  # the Secret's watch is closed
    setup.kube.play(setup.kube.event("MODIFIED", "common", CONFIG_MAPS), path=CONFIG_MAPS)
    await until(lambda: setup.woken)
    assert setup.woken == [API]
    setup.watcher.track(API, [])
    await until(lambda: setup.kube.open == 0)


async def test_a_watch_survives_a_server_disconnect(setup: Setup) -> None:
    setup.watcher.track(WEB, [COMMON])
    await until(lambda: setup.kube.open == 1)
    setup.kube.play(aiohttp.ServerDisconnectedError(), path=CONFIG_MAPS)
    await until(lambda: len(setup.kube.watches) == 2)
    assert setup.woken == []  # resumed where it was: nothing to catch up on
    setup.kube.play(setup.kube.event("MODIFIED", "common", CONFIG_MAPS), path=CONFIG_MAPS)
    await until(lambda: setup.woken == [WEB])


async def test_a_relist_wakes_only_when_the_source_changed_meanwhile(setup: Setup) -> None:
    setup.watcher.track(WEB, [COMMON])
    await until(lambda: setup.kube.open == 1)
    expired = {"type": "ERROR", "object": {"kind": "Status", "code": 410}}
    setup.kube.play(expired, path=CONFIG_MAPS)
    await until(lambda: len(setup.kube.watches) == 2)
    await asyncio.sleep(0.01)
    assert setup.woken == []  # listed again, unchanged
    setup.kube.objects[CONFIG_MAPS] = [cm("common", "77")]  # edited while not watched
    setup.kube.play(expired, path=CONFIG_MAPS)
    await until(lambda: setup.woken == [WEB])


async def test_stop_ends_every_watch(setup: Setup) -> None:
    setup.watcher.track(WEB, [COMMON, TOKEN])
    await until(lambda: setup.kube.open == 2)
    await setup.watcher.stop()
    assert setup.kube.open == 0


async def test_each_watch_is_made_as_the_identity_of_its_helmrelease() -> None:
    # Tenant mode: the values sources of a release are read as its ServiceAccount, so the
    # same ConfigMap referenced under two identities is two watches, each as its user.
    users: list[str | None] = []
    made = Setup({CONFIG_MAPS: [cm("common", "5")]})

    def as_user(user: str | None) -> FakeKube:
        users.append(user)
        return made.kube

    watcher = SourceWatcher(made.kube, made.woken.append, backoff=Backoff(0.001, 0.001),
                            as_user=as_user)  # fmt: skip
    try:
        watcher.track(WEB, [COMMON], "system:serviceaccount:apps:deployer")
        watcher.track(API, [COMMON])
        await until(lambda: made.kube.open == 2)
        assert sorted(users, key=str) == [None, "system:serviceaccount:apps:deployer"]
    finally:
        await watcher.stop()
