"""Pulling charts from a real registry (Distribution 2.8, started per module): by digest,
through the cache, with tampering, tags, auth, TLS, outages and limits.

Requests are counted by a proxy in front of the registry (e2e/registry_proxy.py), which
can also flip a byte of what the registry sends.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import tarfile
from collections.abc import Iterator
from pathlib import Path

import helm_python
import pytest
from prometheus_client import REGISTRY

from registry_fixture import (
    HELM_CHART,
    HELM_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    LocalRegistry,
    digest_of,
    docker_config,
    make_tls,
    package_chart,
    push_artifact,
    push_chart,
    write_chart,
)
from registry_proxy import RegistryProxy
from rudder.chart.errors import (
    CHART_NOT_FOUND,
    CHART_TOO_LARGE,
    DIGEST_MISMATCH,
    INVALID_CHART,
    INVALID_CHART_REFERENCE,
    INVALID_MEDIA_TYPE,
    REGISTRY_AUTH_FAILED,
    REGISTRY_UNAVAILABLE,
    ChartError,
)
from rudder.chart.source import ChartRequest, ChartSource

MiB = 1024 * 1024
USER, PASSWORD = "robot", "s3cret-registry-password"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    local = LocalRegistry(tmp_path_factory.mktemp("registry")).start()
    yield local
    local.stop()


@pytest.fixture
def proxy(registry: LocalRegistry) -> Iterator[RegistryProxy]:
    with RegistryProxy(registry.host) as running:
        yield running


def _source(directory: Path, **limits: int) -> ChartSource:
    return ChartSource(
        directory,
        max_cache_bytes=limits.get("cache", 100 * MiB),
        max_compressed=limits.get("compressed", 10 * MiB),
        max_uncompressed=limits.get("uncompressed", 100 * MiB),
    )


def _via(proxy: RegistryProxy, ref: str) -> str:
    host = ref.removeprefix("oci://").split("/", 1)[0]
    return ref.replace(host, proxy.host, 1)


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _refused(source: ChartSource, request: ChartRequest) -> ChartError:
    with pytest.raises(ChartError) as caught:
        await source.get(request)
    return caught.value


# -- pull by digest, and the cache --------------------------------------------------------------


async def test_pull_by_digest_of_a_chart_pushed_by_helm(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    chart_dir = write_chart(tmp_path, "podinfo", "6.7.0", app_version="6.7.0")
    ref = push_chart(registry, chart_dir)
    packaged = package_chart(chart_dir, tmp_path / "again").read_bytes()

    chart = await _source(tmp_path / "cache").get(ChartRequest(ref, insecure=True))

    assert chart.digest == ref.rsplit("@", 1)[1]
    assert chart.ref == ref
    assert (chart.metadata.name, chart.metadata.version, chart.metadata.app_version) == (
        "podinfo", "6.7.0", "6.7.0",
    )  # fmt: skip
    assert isinstance(chart.chart, helm_python.Chart)
    assert [t["name"] for t in chart.chart.templates] == ["templates/configmap.yaml"]
    assert len(chart.archive) == len(packaged)  # the very archive helm packaged


async def test_warm_pulls_make_no_registry_request_even_after_a_restart(
    registry: LocalRegistry, proxy: RegistryProxy, tmp_path: Path
) -> None:
    ref = _via(proxy, push_chart(registry, write_chart(tmp_path, "warm", "1.0.0")))
    source = _source(tmp_path / "cache")
    misses = _metric("rudder_chart_cache_misses_total")
    memory_hits = _metric("rudder_chart_cache_hits_total", tier="memory")
    disk_hits = _metric("rudder_chart_cache_hits_total", tier="disk")
    pulled = _metric("rudder_chart_pulled_bytes_total")
    timed = _metric("rudder_chart_pull_duration_seconds_count", result="success")

    first = await source.get(ChartRequest(ref, insecure=True))
    cold_requests = proxy.requests
    assert [path.split("/")[-2] for _, path in cold_requests] == ["manifests", "blobs", "blobs"]
    assert _metric("rudder_chart_cache_misses_total") == misses + 1
    assert _metric("rudder_chart_pulled_bytes_total") >= pulled + len(first.archive)
    assert _metric("rudder_chart_pull_duration_seconds_count", result="success") == timed + 1

    second = await source.get(ChartRequest(ref, insecure=True))
    assert proxy.requests == cold_requests  # not one more request
    assert second.chart is first.chart  # parsed once per digest
    assert _metric("rudder_chart_cache_hits_total", tier="memory") == memory_hits + 1

    restarted = _source(tmp_path / "cache")  # a new process: memory empty, disk kept
    third = await restarted.get(ChartRequest(ref, insecure=True))
    assert proxy.requests == cold_requests
    assert third.archive == first.archive
    assert _metric("rudder_chart_cache_hits_total", tier="disk") == disk_hits + 1


async def test_a_corrupted_cache_entry_is_fetched_again(
    registry: LocalRegistry, proxy: RegistryProxy, tmp_path: Path
) -> None:
    ref = _via(proxy, push_chart(registry, write_chart(tmp_path, "rot", "1.0.0")))
    first = await _source(tmp_path / "cache").get(ChartRequest(ref, insecure=True))
    archive_entry = tmp_path / "cache" / "blobs" / "sha256" / digest_of(first.archive)[7:]
    damaged = bytearray(archive_entry.read_bytes())
    damaged[100] ^= 0xFF
    archive_entry.write_bytes(bytes(damaged))
    proxy.reset()

    again = await _source(tmp_path / "cache").get(ChartRequest(ref, insecure=True))

    assert again.archive == first.archive
    assert proxy.count("/blobs/") == 1  # only the damaged blob
    assert archive_entry.read_bytes() == first.archive


async def test_concurrent_gets_of_one_digest_make_one_download(
    registry: LocalRegistry, proxy: RegistryProxy, tmp_path: Path
) -> None:
    ref = _via(proxy, push_chart(registry, write_chart(tmp_path, "busy", "1.0.0")))
    source = _source(tmp_path / "cache")

    charts = await asyncio.gather(
        *(source.get(ChartRequest(ref, insecure=True)) for _ in range(100))
    )

    assert len({id(chart.chart) for chart in charts}) == 1
    assert proxy.count("/manifests/") == 1
    assert proxy.count("/blobs/") == 2  # config and chart, once each


# -- integrity ------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["/blobs/", "/manifests/"])
async def test_tampered_bytes_are_refused_and_nothing_is_kept(
    registry: LocalRegistry, proxy: RegistryProxy, tmp_path: Path, target: str
) -> None:
    name = "tamper-" + target.strip("/")
    ref = _via(proxy, push_chart(registry, write_chart(tmp_path, name, "1.0.0")))
    source = _source(tmp_path / "cache")
    proxy.tamper = lambda path: target in path
    failures = _metric("rudder_chart_pull_duration_seconds_count", result=DIGEST_MISMATCH)

    error = await _refused(source, ChartRequest(ref, insecure=True))

    assert error.reason == DIGEST_MISMATCH
    assert not error.retriable
    assert ref.split("@")[0] in error.message
    assert _metric("rudder_chart_pull_duration_seconds_count", result=DIGEST_MISMATCH) == (
        failures + 1
    )
    if target == "/blobs/":
        # The manifest was genuine and may be kept; no blob was.
        kept = {p.name for p in (tmp_path / "cache" / "blobs" / "sha256").iterdir()}
        assert kept == {ref.rsplit(":", 1)[1]}
    else:
        assert list((tmp_path / "cache" / "blobs" / "sha256").iterdir()) == []
    proxy.tamper = None
    assert (await source.get(ChartRequest(ref, insecure=True))).metadata.name == name


async def test_an_unknown_digest_is_chart_not_found(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    ref = push_chart(registry, write_chart(tmp_path, "known", "1.0.0"))
    missing = ref.rsplit("@", 1)[0] + "@sha256:" + "0" * 64
    error = await _refused(_source(tmp_path / "cache"), ChartRequest(missing, insecure=True))
    assert error.reason == CHART_NOT_FOUND
    assert error.retriable
    assert missing in error.message


async def test_an_index_holding_a_chart_is_accepted(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    ref = push_chart(registry, write_chart(tmp_path, "indexed", "1.0.0"))
    repository = "charts/indexed"
    chart_digest = ref.rsplit("@", 1)[1]
    manifest = registry.get_manifest(repository, chart_digest)
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX,
         "manifests": [{"mediaType": OCI_MANIFEST, "digest": chart_digest,
                        "size": len(manifest), "artifactType": HELM_CONFIG}]}
    ).encode()  # fmt: skip
    index_digest = registry.put_manifest(repository, "multi", index, OCI_INDEX)

    index_ref = f"oci://{registry.host}/{repository}@{index_digest}"
    chart = await _source(tmp_path / "cache").get(ChartRequest(index_ref, insecure=True))

    assert chart.digest == index_digest  # the pinned digest is what status reports
    assert chart.metadata.name == "indexed"


async def test_other_media_types_are_refused(registry: LocalRegistry, tmp_path: Path) -> None:
    archive = package_chart(write_chart(tmp_path, "image", "1.0.0"), tmp_path).read_bytes()
    digest = push_artifact(
        registry, "charts/image", "1.0.0",
        config=b"{}", config_media_type="application/vnd.oci.image.config.v1+json",
        layers=[(archive, "application/vnd.oci.image.layer.v1.tar+gzip")],
    )  # fmt: skip
    ref = f"oci://{registry.host}/charts/image@{digest}"
    error = await _refused(_source(tmp_path / "cache"), ChartRequest(ref, insecure=True))
    assert error.reason == INVALID_MEDIA_TYPE
    assert not error.retriable
    assert "application/vnd.oci.image.config.v1+json" in error.message


# -- limits ---------------------------------------------------------------------------------------


async def test_a_chart_over_the_size_limit_is_refused_before_download(
    registry: LocalRegistry, proxy: RegistryProxy, tmp_path: Path
) -> None:
    ref = _via(proxy, push_chart(registry, write_chart(tmp_path, "big", "1.0.0")))
    source = _source(tmp_path / "cache", compressed=100)
    error = await _refused(source, ChartRequest(ref, insecure=True))
    assert error.reason == CHART_TOO_LARGE
    assert not error.retriable
    assert "--max-chart-size" in error.message
    assert proxy.count("/blobs/") == 0


async def test_a_chart_expanding_past_the_limit_is_refused(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    chart_dir = write_chart(tmp_path, "expands", "1.0.0", extra_files={"files/zeros": bytes(MiB)})
    ref = push_chart(registry, chart_dir)
    source = _source(tmp_path / "cache", uncompressed=MiB // 2)
    error = await _refused(source, ChartRequest(ref, insecure=True))
    assert error.reason == CHART_TOO_LARGE
    assert "expands past" in error.message


async def test_an_archive_escaping_the_chart_is_refused(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        chart_yaml = b"apiVersion: v2\nname: sneaky\nversion: 1.0.0\n"
        info = tarfile.TarInfo("sneaky/Chart.yaml")
        info.size = len(chart_yaml)
        tar.addfile(info, io.BytesIO(chart_yaml))
        link = tarfile.TarInfo("sneaky/templates/secrets.yaml")
        link.type, link.linkname = tarfile.SYMTYPE, "../../../etc/shadow"
        tar.addfile(link)
    digest = push_artifact(
        registry, "charts/sneaky", "1.0.0",
        config=b'{"name":"sneaky","version":"1.0.0"}', config_media_type=HELM_CONFIG,
        layers=[(buffer.getvalue(), HELM_CHART)],
    )  # fmt: skip
    ref = f"oci://{registry.host}/charts/sneaky@{digest}"
    error = await _refused(_source(tmp_path / "cache"), ChartRequest(ref, insecure=True))
    assert error.reason == INVALID_CHART
    assert not error.retriable
    assert "escapes the chart" in error.message


# -- tags -----------------------------------------------------------------------------------------


async def test_tags_need_allow_tag_and_resolve_to_the_current_digest(
    registry: LocalRegistry, proxy: RegistryProxy, tmp_path: Path
) -> None:
    v1 = push_chart(registry, write_chart(tmp_path, "moving", "1.0.0")).rsplit("@", 1)[1]
    v2 = push_chart(registry, write_chart(tmp_path, "moving", "1.1.0")).rsplit("@", 1)[1]
    repository = "charts/moving"
    registry.put_manifest(repository, "stable", registry.get_manifest(repository, v1))
    source = _source(tmp_path / "cache")
    tag_ref = f"oci://{proxy.host}/{repository}:stable"

    with pytest.raises(ChartError) as caught:
        await source.resolve(ChartRequest(tag_ref, insecure=True))
    assert caught.value.reason == INVALID_CHART_REFERENCE
    assert "allowTag" in caught.value.message

    request = ChartRequest(tag_ref, allow_tag=True, insecure=True)
    assert await source.resolve(request) == v1
    chart = await source.get(request.pinned(v1))
    assert (chart.digest, chart.metadata.version) == (v1, "1.0.0")
    # The resolve fetched the manifest; the pull by digest reused it.
    assert proxy.count("/manifests/") == 1

    registry.put_manifest(repository, "stable", registry.get_manifest(repository, v2))
    assert await source.resolve(request) == v2  # resolved again: the move is noticed
    moved = await source.get(request.pinned(v2))
    assert moved.metadata.version == "1.1.0"


async def test_an_unknown_tag_is_chart_not_found(registry: LocalRegistry, tmp_path: Path) -> None:
    push_chart(registry, write_chart(tmp_path, "tagless", "1.0.0"))
    request = ChartRequest(
        f"oci://{registry.host}/charts/tagless:9.9.9", allow_tag=True, insecure=True
    )
    with pytest.raises(ChartError) as caught:
        await _source(tmp_path / "cache").resolve(request)
    assert caught.value.reason == CHART_NOT_FOUND
    assert "9.9.9" in caught.value.message


# -- auth and transport ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    local = LocalRegistry(tmp_path_factory.mktemp("auth"), user=USER, password=PASSWORD)
    yield local.start()
    local.stop()


async def test_basic_auth_with_a_dockerconfigjson(
    auth_registry: LocalRegistry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # everything oras, requests and urllib3 would log
    ref = push_chart(auth_registry, write_chart(tmp_path, "private", "1.0.0"))
    source = _source(tmp_path / "cache")
    good = docker_config(auth_registry.host, USER, PASSWORD)

    chart = await source.get(ChartRequest(ref, insecure=True, docker_config_json=good))
    assert chart.metadata.name == "private"

    bad = docker_config(auth_registry.host, USER, "wrong-password-123")
    fresh = _source(tmp_path / "other-cache")
    request = ChartRequest(ref, insecure=True, docker_config_json=bad)
    assert "wrong-password-123" not in repr(request)
    error = await _refused(fresh, request)
    assert error.reason == REGISTRY_AUTH_FAILED
    assert error.retriable
    assert auth_registry.host in error.message
    assert "wrong-password-123" not in error.message
    assert "wrong-password-123" not in repr(error)

    anonymous = await _refused(fresh, ChartRequest(ref, insecure=True))
    assert anonymous.reason == REGISTRY_AUTH_FAILED
    assert "secretRef" in anonymous.message

    assert f"pulled {ref}" in caplog.text  # the logs were captured
    for secret in (PASSWORD, "wrong-password-123"):
        assert secret not in caplog.text
        assert base64.b64encode(f"{USER}:{secret}".encode()).decode() not in caplog.text


async def test_tls_with_a_private_ca(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "pki")
    secure = LocalRegistry(tmp_path / "tls-registry", tls=tls).start()
    try:
        ref = push_chart(secure, write_chart(tmp_path, "secure", "1.0.0"))
        source = _source(tmp_path / "cache")

        untrusted = await _refused(source, ChartRequest(ref))
        assert untrusted.reason == REGISTRY_UNAVAILABLE
        assert "CERTIFICATE_VERIFY_FAILED" in untrusted.message

        plain = await _refused(source, ChartRequest(ref, insecure=True))
        assert plain.reason == REGISTRY_UNAVAILABLE  # HTTP to an HTTPS port

        chart = await source.get(ChartRequest(ref, ca_pem=tls.ca_pem))
        assert chart.metadata.name == "secure"
    finally:
        secure.stop()


async def test_a_stopped_registry_is_retriable_and_works_when_back(tmp_path: Path) -> None:
    flaky = LocalRegistry(tmp_path / "flaky").start()
    try:
        ref = push_chart(flaky, write_chart(tmp_path, "flaky", "1.0.0"))
        flaky.stop()
        source = _source(tmp_path / "cache")

        error = await _refused(source, ChartRequest(ref, insecure=True))
        assert error.reason == REGISTRY_UNAVAILABLE
        assert error.retriable
        assert flaky.host in error.message

        flaky.start()
        assert (await source.get(ChartRequest(ref, insecure=True))).metadata.name == "flaky"
    finally:
        flaky.stop()
