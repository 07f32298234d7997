"""Charts signed by the real cosign CLI (v3), in both formats it writes, checked by rudder
against a real registry: valid signatures accepted; unsigned charts, other keys and
signatures of another digest refused.

Distribution 2.8 has no referrers API, so cosign v3 stores its bundle under the
`sha256-<hex>` tag; that fallback is what runs here (the API itself: test_chart_cosign.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from registry_fixture import (
    COSIGN,
    OCI_INDEX,
    CosignKey,
    LocalRegistry,
    cosign_key_pair,
    cosign_sign,
    push_chart,
    write_chart,
)
from registry_proxy import RegistryProxy
from rudder.chart.errors import VERIFICATION_FAILED, ChartError
from rudder.chart.source import ChartRequest, ChartSource

pytestmark = pytest.mark.skipif(
    not COSIGN.exists(), reason=f"the cosign CLI is not built yet ({COSIGN} is missing)"
)
FORMATS = ["bundle", "legacy"]  # cosign v3's default, and --new-bundle-format=false


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    local = LocalRegistry(tmp_path_factory.mktemp("registry")).start()
    yield local
    local.stop()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[CosignKey, CosignKey]:
    root = tmp_path_factory.mktemp("keys")
    return cosign_key_pair(root / "trusted"), cosign_key_pair(root / "stranger")


def _request(ref: str, key: CosignKey) -> ChartRequest:
    return ChartRequest(ref, insecure=True, cosign_public_key_pem=key.public_pem)


async def _refusal(tmp_path: Path, request: ChartRequest) -> ChartError:
    with pytest.raises(ChartError) as caught:
        await ChartSource(tmp_path / "cache", 10**8, 10**7, 10**8).get(request)
    assert caught.value.reason == VERIFICATION_FAILED
    assert not caught.value.retriable  # stalled: retrying cannot make a signature appear valid
    return caught.value


@pytest.mark.parametrize("signature_format", FORMATS)
async def test_a_chart_signed_with_the_trusted_key_is_accepted_and_remembered(
    registry: LocalRegistry,
    keys: tuple[CosignKey, CosignKey],
    tmp_path: Path,
    signature_format: str,
) -> None:
    trusted, _ = keys
    ref = push_chart(registry, write_chart(tmp_path, f"signed-{signature_format}", "1.0.0"))
    cosign_sign(trusted, ref, signature_format)
    source = ChartSource(tmp_path / "cache", 10**8, 10**7, 10**8)
    with RegistryProxy(registry.host) as proxy:
        proxied = ref.replace(registry.host, proxy.host)
        chart = await source.get(_request(proxied, trusted))
        assert chart.metadata.name == f"signed-{signature_format}"
        looked_up = proxy.count("sha256-")
        assert looked_up >= 1  # the signature was found through cosign's tags
        proxy.reset()
        await source.get(_request(proxied, trusted))
        assert proxy.requests == []  # verified once per (digest, key), chart cached


async def test_an_unsigned_chart_is_refused(
    registry: LocalRegistry, keys: tuple[CosignKey, CosignKey], tmp_path: Path
) -> None:
    ref = push_chart(registry, write_chart(tmp_path, "unsigned", "1.0.0"))
    error = await _refusal(tmp_path, _request(ref, keys[0]))
    assert "no cosign signature found" in error.message
    assert ref.split("@")[0] in error.message


@pytest.mark.parametrize("signature_format", FORMATS)
async def test_a_chart_signed_with_another_key_is_refused(
    registry: LocalRegistry,
    keys: tuple[CosignKey, CosignKey],
    tmp_path: Path,
    signature_format: str,
) -> None:
    trusted, stranger = keys
    ref = push_chart(registry, write_chart(tmp_path, f"foreign-{signature_format}", "1.0.0"))
    cosign_sign(stranger, ref, signature_format)
    error = await _refusal(tmp_path, _request(ref, trusted))
    assert "does not verify" in error.message or "verifies with the public key" in error.message


@pytest.mark.parametrize("signature_format", FORMATS)
async def test_a_signature_of_another_digest_is_refused(
    registry: LocalRegistry,
    keys: tuple[CosignKey, CosignKey],
    tmp_path: Path,
    signature_format: str,
) -> None:
    """Someone copies a genuine signature of chart B to where cosign looks for chart A's."""
    trusted, _ = keys
    name = f"swapped-{signature_format}"
    wanted = push_chart(registry, write_chart(tmp_path, name, "1.0.0"))
    signed = push_chart(registry, write_chart(tmp_path, name, "2.0.0"))
    cosign_sign(trusted, signed, signature_format)
    repository = f"charts/{name}"
    wanted_hex, signed_hex = (r.rsplit(":", 1)[1] for r in (wanted, signed))
    suffix = ".sig" if signature_format == "legacy" else ""
    media_type = "application/vnd.oci.image.manifest.v1+json" if suffix else OCI_INDEX
    copied = registry.get_manifest(repository, f"sha256-{signed_hex}{suffix}")
    registry.put_manifest(repository, f"sha256-{wanted_hex}{suffix}", copied, media_type)

    error = await _refusal(tmp_path, _request(wanted, trusted))
    assert f"sha256:{signed_hex}" in error.message  # names what the signature is really for
