"""The chart source against the local control plane's registries (Distribution 2.8): the
open one and the htpasswd one, with the cosign CLI built for the project.

Registry requests are counted from the registry's own access log, or through the test
proxy (e2e/registry_proxy.py) where bytes are tampered with or the registry goes away.
"""

from __future__ import annotations

import re
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import Cluster
from registry_proxy import RegistryProxy
from rudder.chart.errors import (
    DIGEST_MISMATCH,
    REGISTRY_AUTH_FAILED,
    REGISTRY_UNAVAILABLE,
    VERIFICATION_FAILED,
    ChartError,
)
from rudder.chart.source import ChartRequest, ChartSource

# The throwaway-registry helpers of the unit tests also drive the cluster's registries.
sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))
from registry_fixture import (
    CosignKey,
    RegistryApi,
    cosign_key_pair,
    cosign_sign,
    docker_config,
    push_chart,
    write_chart,
)

pytestmark = pytest.mark.e2e
MiB = 1024 * 1024


def _source(cache: Path) -> ChartSource:
    return ChartSource(cache, 100 * MiB, 10 * MiB, 100 * MiB)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _logged_requests(cluster: Cluster, repository: str) -> int:
    """Requests for `repository` in the registry's access log (one line per request)."""
    pattern = re.compile(rf'"(GET|HEAD) /v2/{re.escape(repository)}/')
    return sum(1 for line in cluster.registry_log.open(errors="replace") if pattern.search(line))


def _settled_count(cluster: Cluster, repository: str) -> int:
    """The count once the registry has flushed its log lines."""
    last = -1
    for _ in range(20):
        count = _logged_requests(cluster, repository)
        if count == last:
            return count
        last = count
        time.sleep(0.1)
    return last


async def _refused(source: ChartSource, request: ChartRequest) -> ChartError:
    with pytest.raises(ChartError) as caught:
        await source.get(request)
    return caught.value


async def test_pull_by_digest_then_warm_pulls_make_no_registry_request(
    cluster: Cluster, tmp_path: Path
) -> None:
    name = _name("cached")
    ref = push_chart(RegistryApi(cluster.registry), write_chart(tmp_path, name, "1.0.0"))
    repository = f"charts/{name}"
    before = _settled_count(cluster, repository)

    chart = await _source(tmp_path / "cache").get(ChartRequest(ref, insecure=True))
    assert (chart.metadata.name, chart.digest) == (name, ref.rsplit("@", 1)[1])
    cold = _settled_count(cluster, repository)
    assert cold - before == 3  # manifest, config blob, chart blob

    again = _source(tmp_path / "cache")  # a restarted operator: only the disk cache is left
    await again.get(ChartRequest(ref, insecure=True))
    await again.get(ChartRequest(ref, insecure=True))
    assert _settled_count(cluster, repository) == cold


async def test_tampered_bytes_are_a_digest_mismatch(cluster: Cluster, tmp_path: Path) -> None:
    name = _name("tampered")
    ref = push_chart(RegistryApi(cluster.registry), write_chart(tmp_path, name, "1.0.0"))
    with RegistryProxy(cluster.registry) as proxy:
        proxy.tamper = lambda path: "/blobs/" in path
        error = await _refused(
            _source(tmp_path / "cache"),
            ChartRequest(ref.replace(cluster.registry, proxy.host), insecure=True),
        )
    assert error.reason == DIGEST_MISMATCH
    assert not error.retriable


async def test_a_moved_tag_is_noticed_on_the_next_resolve(cluster: Cluster, tmp_path: Path) -> None:
    api = RegistryApi(cluster.registry)
    name = _name("tagged")
    first = push_chart(api, write_chart(tmp_path, name, "1.0.0")).rsplit("@", 1)[1]
    second = push_chart(api, write_chart(tmp_path, name, "2.0.0")).rsplit("@", 1)[1]
    repository = f"charts/{name}"
    api.put_manifest(repository, "stable", api.get_manifest(repository, first))
    request = ChartRequest(
        f"oci://{cluster.registry}/{repository}:stable", allow_tag=True, insecure=True
    )
    source = _source(tmp_path / "cache")

    assert await source.resolve(request) == first
    assert (await source.get(request.pinned(first))).metadata.version == "1.0.0"
    api.put_manifest(repository, "stable", api.get_manifest(repository, second))
    assert await source.resolve(request) == second


async def test_the_htpasswd_registry_with_a_dockerconfigjson(
    cluster: Cluster, tmp_path: Path
) -> None:
    api = RegistryApi(cluster.auth_registry, user=cluster.auth_user, password=cluster.auth_password)
    name = _name("private")
    ref = push_chart(api, write_chart(tmp_path, name, "1.0.0"))
    good = docker_config(cluster.auth_registry, cluster.auth_user, cluster.auth_password)
    chart = await _source(tmp_path / "cache").get(
        ChartRequest(ref, insecure=True, docker_config_json=good)
    )
    assert chart.metadata.name == name

    bad = docker_config(cluster.auth_registry, cluster.auth_user, "not-the-password")
    error = await _refused(
        _source(tmp_path / "other"), ChartRequest(ref, insecure=True, docker_config_json=bad)
    )
    assert error.reason == REGISTRY_AUTH_FAILED
    assert error.retriable
    assert "not-the-password" not in error.message
    assert cluster.auth_password not in error.message


async def test_an_unreachable_registry_is_retriable_and_recovers(
    cluster: Cluster, tmp_path: Path
) -> None:
    name = _name("outage")
    ref = push_chart(RegistryApi(cluster.registry), write_chart(tmp_path, name, "1.0.0"))
    proxy = RegistryProxy(cluster.registry).start()
    port, host = proxy.port, proxy.host
    proxy.stop()  # the registry's address now refuses connections
    source = _source(tmp_path / "cache")
    request = ChartRequest(ref.replace(cluster.registry, host), insecure=True)

    error = await _refused(source, request)
    assert error.reason == REGISTRY_UNAVAILABLE
    assert error.retriable

    with RegistryProxy(cluster.registry, port=port):  # back on the same address
        assert (await source.get(request)).metadata.name == name


# -- cosign, with the CLI built for the local control plane ----------------------------------


@pytest.fixture(scope="module")
def cosign_keys(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> tuple[CosignKey, CosignKey]:
    cosign = cluster.tools / "cosign"
    if not cosign.exists():
        pytest.skip(f"the cosign CLI is not built ({cosign} is missing)")
    root = tmp_path_factory.mktemp("cosign")
    return cosign_key_pair(root / "trusted", cosign), cosign_key_pair(root / "other", cosign)


@pytest.mark.parametrize("signature_format", ["bundle", "legacy"])
async def test_cosign_signatures(
    cluster: Cluster,
    cosign_keys: tuple[CosignKey, CosignKey],
    tmp_path: Path,
    signature_format: str,
) -> None:
    trusted, other = cosign_keys
    cosign = cluster.tools / "cosign"
    api = RegistryApi(cluster.registry)
    name = _name(f"signed-{signature_format}")
    signed = push_chart(api, write_chart(tmp_path, name, "1.0.0"))
    unsigned = push_chart(api, write_chart(tmp_path, name, "2.0.0"))
    foreign = push_chart(api, write_chart(tmp_path, name, "3.0.0"))
    cosign_sign(trusted, signed, signature_format, cosign)
    cosign_sign(other, foreign, signature_format, cosign)

    def request(ref: str) -> ChartRequest:
        return ChartRequest(ref, insecure=True, cosign_public_key_pem=trusted.public_pem)

    source = _source(tmp_path / "cache")
    assert (await source.get(request(signed))).metadata.version == "1.0.0"
    for refused in (unsigned, foreign):
        error = await _refused(source, request(refused))
        assert error.reason == VERIFICATION_FAILED
        assert not error.retriable

    # A genuine signature of `signed`, copied to where cosign looks for `unsigned`'s.
    suffix = ".sig" if signature_format == "legacy" else ""
    media_type = (
        "application/vnd.oci.image.manifest.v1+json"
        if suffix
        else "application/vnd.oci.image.index.v1+json"
    )
    signed_hex, unsigned_hex = (r.rsplit(":", 1)[1] for r in (signed, unsigned))
    repository = f"charts/{name}"
    copied = api.get_manifest(repository, f"sha256-{signed_hex}{suffix}")
    api.put_manifest(repository, f"sha256-{unsigned_hex}{suffix}", copied, media_type)
    error = await _refused(source, request(unsigned))
    assert error.reason == VERIFICATION_FAILED
    assert f"sha256:{signed_hex}" in error.message
