"""Which manifests are Helm charts: Helm's media types required, provenance ignored."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rudder.chart.manifest import (
    HELM_CHART,
    HELM_CHART_LEGACY,
    HELM_CONFIG,
    HELM_PROVENANCE,
    OCI_INDEX,
    ImageIndex,
    ImageManifest,
    ManifestError,
    helm_chart,
    index_candidates,
    parse_manifest,
)


def _descriptor(media_type: str, fill: str, size: int = 10, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": "sha256:" + fill * 64, "size": size, **extra}


def _manifest(config: str = HELM_CONFIG, layers: tuple[str, ...] = (HELM_CHART,)) -> bytes:
    # As Helm pushes it: no top-level mediaType.
    return json.dumps(
        {
            "schemaVersion": 2,
            "config": _descriptor(config, "c"),
            "layers": [_descriptor(media, str(i)) for i, media in enumerate(layers)],
        }
    ).encode()


def test_helm_pushed_manifest_without_media_type_is_a_chart() -> None:
    manifest = parse_manifest(_manifest())
    assert isinstance(manifest, ImageManifest)
    chart = helm_chart(manifest)
    assert chart.chart.media_type == HELM_CHART
    assert chart.config.digest == "sha256:" + "c" * 64


def test_legacy_layer_media_type_and_provenance_layer_are_accepted() -> None:
    manifest = parse_manifest(_manifest(layers=(HELM_PROVENANCE, HELM_CHART_LEGACY)))
    assert isinstance(manifest, ImageManifest)
    assert helm_chart(manifest).chart.media_type == HELM_CHART_LEGACY


@pytest.mark.parametrize(
    ("config", "layers", "message"),
    [
        ("application/vnd.oci.image.config.v1+json", (HELM_CHART,), "config media type"),
        (HELM_CONFIG, (), "one chart layer"),
        (HELM_CONFIG, (HELM_CHART, HELM_CHART), "one chart layer"),
        (HELM_CONFIG, (HELM_CHART, "application/vnd.oci.image.layer.v1.tar"), "unexpected"),
    ],
)
def test_other_media_types_are_refused(config: str, layers: tuple[str, ...], message: str) -> None:
    manifest = parse_manifest(_manifest(config, layers))
    assert isinstance(manifest, ImageManifest)
    with pytest.raises(ManifestError, match=message) as caught:
        helm_chart(manifest)
    assert caught.value.media_type


def test_index_candidates_put_declared_helm_manifests_first_and_skip_others() -> None:
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                _descriptor("application/vnd.oci.image.manifest.v1+json", "1"),
                _descriptor(
                    "application/vnd.oci.image.manifest.v1+json", "2", artifactType=HELM_CONFIG
                ),
                _descriptor(
                    "application/vnd.oci.image.manifest.v1+json",
                    "3",
                    artifactType="application/vnd.dev.sigstore.bundle.v0.3+json",
                ),
                _descriptor(OCI_INDEX, "4"),
            ],
        }
    ).encode()
    index = parse_manifest(body)
    assert isinstance(index, ImageIndex)
    assert [d.digest[-1] for d in index_candidates(index)] == ["2", "1"]


@pytest.mark.parametrize(
    "body",
    [
        b"\x00not json",
        b"[]",
        b'{"schemaVersion": 1}',
        b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.artifact.manifest.v1+json"}',
        b'{"schemaVersion": 2, "config": {"mediaType": "x", "digest": "md5:1", "size": 1}, '
        b'"layers": []}',
        b'{"schemaVersion": 2, "config": {"mediaType": "x", "digest": "sha256:'
        + b"a" * 64
        + b'", "size": -1}, "layers": []}',
    ],
)
def test_malformed_manifests_are_refused(body: bytes) -> None:
    with pytest.raises(ManifestError):
        parse_manifest(body)
