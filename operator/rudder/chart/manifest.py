"""OCI manifests and indexes of Helm charts: parsing and media-type rules (pure).

A Helm chart is an OCI image manifest whose config has Helm's config media type and
whose layers are exactly one chart archive (Helm's media type, or the legacy
`application/tar+gzip` of early Helm 3) plus, optionally, a provenance file. An OCI
index is accepted when one of its manifests is such a chart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from rudder.chart.digests import is_sha256_digest

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
# What rudder asks registries for, chart manifests and cosign's signature manifests alike.
MANIFEST_ACCEPT: Final = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST)

HELM_CONFIG: Final = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART: Final = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
HELM_CHART_LEGACY: Final = "application/tar+gzip"
HELM_PROVENANCE: Final = "application/vnd.cncf.helm.chart.provenance.v1.prov"
CHART_LAYERS: Final = frozenset({HELM_CHART, HELM_CHART_LEGACY})


class ManifestError(ValueError):
    """The bytes are not a usable manifest; `media_type` is True for a media-type refusal."""

    def __init__(self, message: str, *, media_type: bool = False) -> None:
        super().__init__(message)
        self.media_type = media_type


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    artifact_type: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageManifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    artifact_type: str | None = None
    subject: Descriptor | None = None


@dataclass(frozen=True)
class ImageIndex:
    manifests: tuple[Descriptor, ...]


@dataclass(frozen=True)
class HelmChartManifest:
    """The parts of a chart manifest rudder downloads."""

    config: Descriptor
    chart: Descriptor


def parse_manifest(body: bytes) -> ImageManifest | ImageIndex:
    """An image manifest or index; the kind comes from `mediaType`, else from the shape
    (Helm omits `mediaType`, which OCI allows for manifests)."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ManifestError(f"manifest is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise ManifestError("manifest is not a JSON object")
    if document.get("schemaVersion") != 2:
        raise ManifestError(f"unsupported schemaVersion {document.get('schemaVersion')!r}")
    media_type = document.get("mediaType")
    if media_type is None:
        media_type = OCI_INDEX if "manifests" in document else OCI_MANIFEST
    if media_type == OCI_INDEX:
        return ImageIndex(_descriptors(document.get("manifests"), "manifests"))
    if media_type not in (OCI_MANIFEST, DOCKER_MANIFEST):
        raise ManifestError(f"unsupported manifest media type {media_type!r}", media_type=True)
    subject = document.get("subject")
    return ImageManifest(
        media_type=media_type,
        config=_descriptor(document.get("config"), "config"),
        layers=_descriptors(document.get("layers"), "layers"),
        artifact_type=_optional_str(document.get("artifactType"), "artifactType"),
        subject=None if subject is None else _descriptor(subject, "subject"),
    )


def helm_chart(manifest: ImageManifest) -> HelmChartManifest:
    """The config and chart layer of a Helm chart manifest, or `ManifestError`."""
    if manifest.config.media_type != HELM_CONFIG:
        raise ManifestError(
            f"config media type is {manifest.config.media_type!r}, not {HELM_CONFIG!r}",
            media_type=True,
        )
    charts = [layer for layer in manifest.layers if layer.media_type in CHART_LAYERS]
    others = [
        layer.media_type
        for layer in manifest.layers
        if layer.media_type not in CHART_LAYERS and layer.media_type != HELM_PROVENANCE
    ]
    if others:
        raise ManifestError(f"unexpected layer media types {others}", media_type=True)
    if len(charts) != 1:
        raise ManifestError(
            f"expected one chart layer ({HELM_CHART}), found {len(charts)}", media_type=True
        )
    return HelmChartManifest(config=manifest.config, chart=charts[0])


def index_candidates(index: ImageIndex) -> list[Descriptor]:
    """The manifests of an index that may be Helm charts, most likely first: those
    declaring Helm's artifact type, then the other image manifests."""
    manifests = [d for d in index.manifests if d.media_type in (OCI_MANIFEST, DOCKER_MANIFEST)]
    declared = [d for d in manifests if d.artifact_type == HELM_CONFIG]
    undeclared = [d for d in manifests if d.artifact_type in (None, "")]
    return declared + undeclared


def _descriptors(value: Any, where: str) -> tuple[Descriptor, ...]:
    if not isinstance(value, list):
        raise ManifestError(f"{where} is not a list")
    return tuple(_descriptor(item, f"{where}[{i}]") for i, item in enumerate(value))


def _descriptor(value: Any, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise ManifestError(f"{where} is not a descriptor object")
    media_type = value.get("mediaType")
    digest = value.get("digest")
    size = value.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise ManifestError(f"{where}.mediaType is missing")
    if not isinstance(digest, str) or not is_sha256_digest(digest):
        raise ManifestError(f"{where}.digest is not a sha256 digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestError(f"{where}.size is not a non-negative integer")
    annotations = value.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise ManifestError(f"{where}.annotations is not a map of strings")
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        artifact_type=_optional_str(value.get("artifactType"), f"{where}.artifactType"),
        annotations=annotations,
    )


def _optional_str(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ManifestError(f"{where} is not a string")


def layers_of(manifest: ImageManifest, media_type: str) -> Sequence[Descriptor]:
    return [layer for layer in manifest.layers if layer.media_type == media_type]
