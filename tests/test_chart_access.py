"""Tenant mode and the shared chart cache: a cached chart is served to a request only after
the registry accepted that request's own credentials for the digest (a manifest HEAD),
remembered for a while per identity, repository and credentials.

Against a real registry with htpasswd auth (Distribution 2.8), requests counted by a proxy.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry_fixture import LocalRegistry, docker_config, push_chart, write_chart
from registry_proxy import RegistryProxy
from rudder.chart.errors import (
    CHART_NOT_FOUND,
    REGISTRY_AUTH_FAILED,
    REGISTRY_UNAVAILABLE,
    ChartError,
)
from rudder.chart.source import ACCESS_TTL, ChartRequest, ChartSource

MiB = 1024 * 1024
USER, PASSWORD, WRONG = "robot", "s3cret-registry-password", "wrong-password-123"
OWNER, OTHER = "system:serviceaccount:a:deployer", "system:serviceaccount:b:deployer"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    local = LocalRegistry(tmp_path_factory.mktemp("auth"), user=USER, password=PASSWORD)
    yield local.start()
    local.stop()


@pytest.fixture
def proxy(registry: LocalRegistry) -> Iterator[RegistryProxy]:
    with RegistryProxy(registry.host) as running:
        yield running


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def source(tmp_path: Path, clock: Clock) -> ChartSource:
    return ChartSource(tmp_path / "cache", 100 * MiB, 10 * MiB, 100 * MiB, clock=clock)


def _private_chart(registry: LocalRegistry, proxy: RegistryProxy, root: Path, name: str) -> str:
    ref = push_chart(registry, write_chart(root, name, "1.0.0"))
    return ref.replace(registry.host, proxy.host, 1)


def _tenant(ref: str, identity: str, password: str | None, host: str) -> ChartRequest:
    config = docker_config(host, USER, password) if password is not None else None
    return ChartRequest(
        ref, insecure=True, docker_config_json=config, identity=identity, check_access=True
    )


async def _refused(source: ChartSource, request: ChartRequest) -> ChartError:
    with pytest.raises(ChartError) as caught:
        await source.get(request)
    return caught.value


def _since(proxy: RegistryProxy, before: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return proxy.requests[len(before) :]


def _head_of(ref: str) -> tuple[str, str]:
    """The manifest HEAD of `ref`'s digest (sent twice with credentials: the htpasswd
    registry challenges the first, anonymous, try)."""
    repository, digest = ref.split("/", 3)[3].rsplit("@", 1)
    return ("HEAD", f"/v2/{repository}/manifests/{digest}")


async def test_a_cached_chart_is_served_once_the_registry_accepts_the_credentials(
    registry: LocalRegistry, proxy: RegistryProxy, source: ChartSource, tmp_path: Path
) -> None:
    ref = _private_chart(registry, proxy, tmp_path, "shared")
    owner = _tenant(ref, OWNER, PASSWORD, proxy.host)

    first = await source.get(owner)
    # Asked even for a cold pull: another pull may fill the cache meanwhile.
    assert _head_of(ref) in proxy.requests
    pulled = proxy.requests
    await source.get(owner)
    assert proxy.requests == pulled  # remembered

    other = await source.get(_tenant(ref, OTHER, PASSWORD, proxy.host))
    assert other.chart is first.chart  # served from the cache...
    assert set(_since(proxy, pulled)) == {_head_of(ref)}  # ...after a HEAD of its own
    checked = proxy.requests
    await source.get(_tenant(ref, OTHER, PASSWORD, proxy.host))
    assert proxy.requests == checked


async def test_a_cached_chart_is_refused_to_credentials_the_registry_refuses(
    registry: LocalRegistry,
    proxy: RegistryProxy,
    source: ChartSource,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    ref = _private_chart(registry, proxy, tmp_path, "private")
    await source.get(_tenant(ref, OWNER, PASSWORD, proxy.host))
    pulled = proxy.requests

    anonymous = await _refused(source, _tenant(ref, OTHER, None, proxy.host))
    assert (anonymous.reason, anonymous.retriable) == (REGISTRY_AUTH_FAILED, True)
    assert "secretRef" in anonymous.message

    wrong = await _refused(source, _tenant(ref, OTHER, WRONG, proxy.host))
    assert wrong.reason == REGISTRY_AUTH_FAILED
    assert "refused the credentials" in wrong.message
    refused = proxy.requests
    await _refused(source, _tenant(ref, OTHER, WRONG, proxy.host))
    assert _since(proxy, refused)  # a refusal is not remembered
    assert set(_since(proxy, pulled)) == {_head_of(ref)}  # and nothing was pulled for it

    for secret in (PASSWORD, WRONG):
        assert secret not in caplog.text + wrong.message
        assert base64.b64encode(f"{USER}:{secret}".encode()).decode() not in caplog.text


async def test_the_digest_must_be_in_the_repository_named(
    registry: LocalRegistry, proxy: RegistryProxy, source: ChartSource, tmp_path: Path
) -> None:
    ref = _private_chart(registry, proxy, tmp_path, "placed")
    await source.get(_tenant(ref, OWNER, PASSWORD, proxy.host))
    elsewhere = ref.replace("/charts/placed@", "/charts/readable@")

    error = await _refused(source, _tenant(elsewhere, OWNER, PASSWORD, proxy.host))
    assert error.reason == CHART_NOT_FOUND


async def test_the_memory_of_an_accepted_check_expires(
    registry: LocalRegistry,
    proxy: RegistryProxy,
    source: ChartSource,
    clock: Clock,
    tmp_path: Path,
) -> None:
    ref = _private_chart(registry, proxy, tmp_path, "expiring")
    request = _tenant(ref, OWNER, PASSWORD, proxy.host)
    await source.get(request)
    pulled = proxy.requests

    clock.now += ACCESS_TTL - 1
    await source.get(request)
    assert proxy.requests == pulled

    clock.now += 2
    await source.get(request)
    assert set(_since(proxy, pulled)) == {_head_of(ref)}


async def test_an_outage_during_the_check_is_retriable(tmp_path: Path, clock: Clock) -> None:
    flaky = LocalRegistry(tmp_path / "flaky").start()
    try:
        ref = push_chart(flaky, write_chart(tmp_path, "flaky", "1.0.0"))
        source = ChartSource(tmp_path / "cache", 100 * MiB, 10 * MiB, 100 * MiB, clock=clock)
        await source.get(ChartRequest(ref, insecure=True, identity=OWNER, check_access=True))
        flaky.stop()
        other = ChartRequest(ref, insecure=True, identity=OTHER, check_access=True)

        error = await _refused(source, other)
        assert (error.reason, error.retriable) == (REGISTRY_UNAVAILABLE, True)

        flaky.start()
        assert (await source.get(other)).metadata.name == "flaky"
    finally:
        flaky.stop()


async def test_a_resolved_tag_needs_no_second_check(
    registry: LocalRegistry, proxy: RegistryProxy, source: ChartSource, tmp_path: Path
) -> None:
    ref = _private_chart(registry, proxy, tmp_path, "tagged")
    tag_ref = ref.rsplit("@", 1)[0] + ":1.0.0"
    config = docker_config(proxy.host, USER, PASSWORD)
    request = ChartRequest(
        tag_ref, allow_tag=True, insecure=True, docker_config_json=config,
        identity=OWNER, check_access=True,
    )  # fmt: skip

    digest = await source.resolve(request)
    await source.get(request.pinned(digest))

    assert _head_of(request.pinned(digest).ref) not in proxy.requests  # the tag's GET was it


async def test_outside_tenant_mode_the_cache_answers_without_a_request(
    registry: LocalRegistry, proxy: RegistryProxy, source: ChartSource, tmp_path: Path
) -> None:
    ref = _private_chart(registry, proxy, tmp_path, "trusted")
    config = docker_config(proxy.host, USER, PASSWORD)
    await source.get(ChartRequest(ref, insecure=True, docker_config_json=config))
    cold = proxy.requests
    assert all(method == "GET" for method, _ in cold)

    # One operator trusted with every HelmRelease: the cache is its own.
    await source.get(ChartRequest(ref, insecure=True))
    await source.get(ChartRequest(ref, insecure=True, identity=OTHER))
    assert proxy.requests == cold
