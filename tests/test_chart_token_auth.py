"""Bearer-token auth (the flow of ghcr.io, Harbor, Docker Hub): the registry's challenge
sends rudder to a token service with the dockerconfigjson's credentials, and the token
it returns is used for the pull. Distribution's token mode needs a token server and
signing keys; a tiny in-memory registry plays both parts here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fake_registry import FakeRegistry
from registry_fixture import HELM_CHART, HELM_CONFIG, OCI_MANIFEST, docker_config, package_chart
from registry_fixture import write_chart as write_test_chart
from rudder.chart.errors import REGISTRY_AUTH_FAILED, ChartError
from rudder.chart.source import ChartRequest, ChartSource


def _serve_chart(fake: FakeRegistry, tmp_path: Path) -> str:
    archive = package_chart(write_test_chart(tmp_path, "tokened", "1.0.0"), tmp_path).read_bytes()
    config = b'{"name":"tokened","version":"1.0.0"}'
    manifest = json.dumps(
        {"schemaVersion": 2,
         "config": {"mediaType": HELM_CONFIG, "digest": fake.add_blob(config), "size": len(config)},
         "layers": [{"mediaType": HELM_CHART, "digest": fake.add_blob(archive),
                     "size": len(archive)}]}
    ).encode()  # fmt: skip
    return fake.add_manifest(manifest, OCI_MANIFEST, tag="1.0.0")


async def test_a_token_is_obtained_with_the_credentials_and_used(tmp_path: Path) -> None:
    with FakeRegistry(token_user="robot", token_password="tok-pass") as fake:
        digest = _serve_chart(fake, tmp_path)
        request = ChartRequest(
            f"oci://{fake.host}/charts/tokened@{digest}",
            insecure=True,
            docker_config_json=docker_config(fake.host, "robot", "tok-pass"),
        )
        chart = await ChartSource(tmp_path / "cache", 10**8, 10**7, 10**8).get(request)

    assert chart.metadata.name == "tokened"
    token_requests = [seen for seen in fake.seen if seen.path == "/token"]
    assert len(token_requests) == 1  # one token, reused for manifest and blobs
    assert token_requests[0].query["scope"] == ["repository:charts:pull"]
    assert token_requests[0].headers["Authorization"].startswith("Basic ")
    served = [s for s in fake.seen if s.path.startswith("/v2/") and "Authorization" in s.headers]
    assert served
    assert all(s.headers["Authorization"].startswith("Bearer ") for s in served)


async def test_credentials_the_token_service_refuses_are_registry_auth_failed(
    tmp_path: Path,
) -> None:
    with FakeRegistry(token_user="robot", token_password="tok-pass") as fake:
        digest = _serve_chart(fake, tmp_path)
        request = ChartRequest(
            f"oci://{fake.host}/charts/tokened@{digest}",
            insecure=True,
            docker_config_json=docker_config(fake.host, "robot", "not-the-password"),
        )
        with pytest.raises(ChartError) as caught:
            await ChartSource(tmp_path / "cache", 10**8, 10**7, 10**8).get(request)

    assert caught.value.reason == REGISTRY_AUTH_FAILED
    assert caught.value.retriable
    assert "not-the-password" not in caught.value.message
