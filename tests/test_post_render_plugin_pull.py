"""Post-renderer plugins pulled from a real registry (Distribution 2.8, htpasswd auth) through
the chart machinery: digests, the shared cache, credentials, tenant access checks and cosign
signatures made by the real cosign CLI. The plugin is a fixture built by build-tools.sh."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from registry_fixture import (
    COSIGN,
    CosignKey,
    LocalRegistry,
    cosign_key_pair,
    cosign_sign,
    docker_config,
    push_chart,
    push_plugin,
    write_chart,
)
from registry_proxy import RegistryProxy
from rudder.chart.errors import (
    INVALID_PLUGIN,
    PLUGIN_NOT_FOUND,
    REGISTRY_AUTH_FAILED,
    VERIFICATION_FAILED,
    ChartError,
)
from rudder.chart.source import ChartRequest, ChartSource
from rudder.postrender.plugins import PluginSource

ARCHIVE = Path.home() / ".cache" / "rudder" / "tools" / "wasm-plugins" / "add-label-0.1.0.tgz"
pytestmark = pytest.mark.skipif(
    not ARCHIVE.exists() or not COSIGN.exists(),
    reason="the fixture plugins or cosign are not built yet (e2e/build-tools.sh)",
)
MiB = 1024 * 1024
USER, PASSWORD = "robot", "s3cret-registry-password"
TENANT = "system:serviceaccount:a:deployer"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    local = LocalRegistry(tmp_path_factory.mktemp("auth"), user=USER, password=PASSWORD)
    yield local.start()
    local.stop()


@pytest.fixture(scope="module")
def ref(registry: LocalRegistry) -> str:
    return push_plugin(registry, "add-label", ARCHIVE.read_bytes())


@pytest.fixture
def charts(tmp_path: Path) -> ChartSource:
    return ChartSource(tmp_path / "cache", 100 * MiB, 10 * MiB, 100 * MiB)


def request(ref: str, password: str | None = PASSWORD, **extra: object) -> ChartRequest:
    host = ref.removeprefix("oci://").split("/", 1)[0]
    config = docker_config(host, USER, password) if password else None
    return ChartRequest(ref, insecure=True, docker_config_json=config, **extra)  # type: ignore[arg-type]


async def test_a_plugin_is_pulled_once_verified_and_served_from_the_cache(
    registry: LocalRegistry, ref: str, charts: ChartSource
) -> None:
    with RegistryProxy(registry.host) as proxy:
        proxied = ref.replace(registry.host, proxy.host)
        plugin = await PluginSource(charts).get(request(proxied))
        assert (plugin.name, plugin.version) == ("add-label", "0.1.0")
        assert plugin.digest == ref.rsplit("@", 1)[1]
        assert plugin.wasm.startswith(b"\0asm")
        assert plugin.runtime.max_pages == 512
        pulled = proxy.count()
        # Another PluginSource on the same cache (a restart keeps the disk): no request.
        again = await PluginSource(charts).get(request(proxied))
        assert again.wasm_digest == plugin.wasm_digest
        assert proxy.count() == pulled


@pytest.mark.parametrize("password", [None, "wrong-password"], ids=["anonymous", "wrong"])
async def test_the_registry_must_accept_the_credentials(
    ref: str, charts: ChartSource, password: str | None
) -> None:
    with pytest.raises(ChartError) as failure:
        await PluginSource(charts).get(request(ref, password))
    assert failure.value.reason == REGISTRY_AUTH_FAILED


async def test_in_tenant_mode_a_cached_plugin_is_served_only_to_credentials_the_registry_accepts(
    ref: str, charts: ChartSource
) -> None:
    plugins = PluginSource(charts)
    await plugins.get(request(ref, identity="system:serviceaccount:b:deployer", check_access=True))
    with pytest.raises(ChartError) as failure:
        await plugins.get(request(ref, "wrong-password", identity=TENANT, check_access=True))
    assert failure.value.reason == REGISTRY_AUTH_FAILED


async def test_a_missing_digest_is_plugin_not_found_and_a_chart_is_not_a_plugin(
    registry: LocalRegistry, ref: str, charts: ChartSource, tmp_path: Path
) -> None:
    missing = ref.rsplit("@", 1)[0] + "@sha256:" + "0" * 64
    with pytest.raises(ChartError) as failure:
        await PluginSource(charts).get(request(missing))
    assert (failure.value.reason, failure.value.retriable) == (PLUGIN_NOT_FOUND, True)

    chart = push_chart(registry, write_chart(tmp_path, "add-label", "1.0.0"))
    with pytest.raises(ChartError) as failure:
        await PluginSource(charts).get(request(chart))
    assert (failure.value.reason, failure.value.retriable) == (INVALID_PLUGIN, False)
    assert "application/vnd.helm.plugin.v1+json" in failure.value.message


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[CosignKey, CosignKey]:
    root = tmp_path_factory.mktemp("keys")
    return cosign_key_pair(root / "trusted"), cosign_key_pair(root / "stranger")


async def test_a_cosign_signature_is_required_when_a_key_is_given(
    tmp_path: Path, keys: tuple[CosignKey, CosignKey], charts: ChartSource
) -> None:
    trusted, stranger = keys
    open_registry = LocalRegistry(tmp_path / "open").start()
    try:
        signed = push_plugin(open_registry, "add-label", ARCHIVE.read_bytes())
        cosign_sign(trusted, signed, "bundle")
        unsigned = push_plugin(open_registry, "add-label", ARCHIVE.read_bytes(), "0.2.0", "other")

        def verified(ref: str, key: CosignKey) -> ChartRequest:
            return ChartRequest(ref, insecure=True, cosign_public_key_pem=key.public_pem)

        plugins = PluginSource(charts)
        assert (await plugins.get(verified(signed, trusted))).name == "add-label"
        for ref, key in ((signed, stranger), (unsigned, trusted)):
            with pytest.raises(ChartError) as failure:
                await plugins.get(verified(ref, key))
            assert failure.value.reason == VERIFICATION_FAILED
    finally:
        open_registry.stop()
