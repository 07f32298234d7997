"""Pull a Helm chart pinned by digest, through the on-disk cache; resolve tags (blocking).

The manifest is fetched by digest and must hash to it; it must be a Helm chart (or an
OCI index holding one); the config and chart blobs must match their descriptors. The
archive must then pass the size and path limits. Everything verified is cached by
digest, manifests included, so a warm pull of a pinned chart makes no request at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from rudder.chart import fetch
from rudder.chart.archive import ArchiveLimits, ArchiveTooLarge, UnsafeArchive, check_archive
from rudder.chart.cache import BlobCache
from rudder.chart.digests import is_sha256_digest, sha256_digest
from rudder.chart.errors import (
    CHART_NOT_FOUND,
    CHART_TOO_LARGE,
    DIGEST_MISMATCH,
    INVALID_CHART,
    INVALID_MEDIA_TYPE,
    ChartError,
)
from rudder.chart.manifest import (
    MANIFEST_ACCEPT,
    Descriptor,
    HelmChartManifest,
    ImageIndex,
    ImageManifest,
    ManifestError,
    helm_chart,
    index_candidates,
    parse_manifest,
)
from rudder.chart.reference import OciReference
from rudder.chart.registry import BodyTooLarge, RegistryClient

MAX_CONFIG_BYTES: Final = 1024 * 1024  # Chart.yaml as JSON; anything bigger is not Helm's


@dataclass(frozen=True)
class PulledChart:
    digest: str  # the pinned digest: of the chart manifest, or of the index holding it
    chart_manifest_digest: str
    archive: bytes
    downloaded_bytes: int  # 0 when everything came from the cache


@dataclass
class CachedPull:
    """One pull: the cache first, the registry only for what the cache lacks (charts and
    post-renderer plugins alike)."""

    cache: BlobCache
    client: RegistryClient
    ref: OciReference
    downloaded: int = field(default=0)

    def manifest(self, digest: str) -> bytes:
        cached = self.cache.get(digest)
        if cached is not None:
            return cached
        body = fetch.manifest_by_digest(self.client, self.ref, digest)
        self.downloaded += len(body)
        self.cache.put(digest, body)
        return body

    def blob(self, descriptor: Descriptor) -> bytes:
        cached = self.cache.get(descriptor.digest)
        if cached is not None and len(cached) == descriptor.size:
            return cached
        body = fetch.blob(self.client, self.ref, descriptor)
        self.downloaded += len(body)
        self.cache.put(descriptor.digest, body)
        return body

    def parsed(self, digest: str) -> ImageManifest | ImageIndex:
        try:
            return parse_manifest(self.manifest(digest))
        except ManifestError as error:
            raise ChartError(
                INVALID_MEDIA_TYPE, f"{self.ref}: manifest {digest}: {error}"
            ) from None


class OciPuller:
    def __init__(self, cache: BlobCache, limits: ArchiveLimits) -> None:
        self.cache = cache
        self.limits = limits

    def pull(self, client: RegistryClient, ref: OciReference) -> PulledChart:
        """The verified, size- and path-checked chart archive `ref` pins."""
        if ref.digest is None:
            raise ValueError("pull needs a digest-pinned reference")
        pull = CachedPull(self.cache, client, ref)
        chart_digest, chart = self._chart_manifest(pull, ref.digest)
        if chart.chart.size > self.limits.max_compressed:
            raise ChartError(
                CHART_TOO_LARGE,
                f"{ref}: the chart archive is {chart.chart.size} bytes, "
                f"over the {self.limits.max_compressed}-byte limit (--max-chart-size)",
            )
        if chart.config.size > MAX_CONFIG_BYTES:
            raise ChartError(
                CHART_TOO_LARGE, f"{ref}: the chart config is {chart.config.size} bytes"
            )
        # Verified like every blob, though Helm reads Chart.yaml from the archive itself.
        pull.blob(chart.config)
        archive = pull.blob(chart.chart)
        try:
            check_archive(archive, self.limits)
        except ArchiveTooLarge as error:
            raise ChartError(CHART_TOO_LARGE, f"{ref}: {error} (--max-chart-size)") from None
        except UnsafeArchive as error:
            raise ChartError(INVALID_CHART, f"{ref}: {error}") from None
        return PulledChart(ref.digest, chart_digest, archive, pull.downloaded)

    def resolve(self, client: RegistryClient, ref: OciReference) -> str:
        """The digest `ref`'s tag points to now (always asks the registry)."""
        if ref.tag is None:
            raise ValueError("resolve needs a tag")
        try:
            fetched = client.manifest(
                ref.repository, ref.tag, MANIFEST_ACCEPT, fetch.MAX_MANIFEST_BYTES
            )
        except BodyTooLarge as error:
            raise ChartError(
                CHART_TOO_LARGE, f"{ref}: the manifest is over {error.limit} bytes"
            ) from None
        if fetched is None:
            raise ChartError(CHART_NOT_FOUND, f"{ref}: tag {ref.tag!r} not found in the registry")
        digest = sha256_digest(fetched.body)
        claimed = fetched.docker_digest
        if claimed and is_sha256_digest(claimed) and claimed != digest:
            raise ChartError(
                DIGEST_MISMATCH,
                f"{ref}: the registry says the tag is {claimed}, its manifest hashes to {digest}",
            )
        # Content-addressed, so safe to keep: the pull by digest that follows needs no request.
        self.cache.put(digest, fetched.body)
        return digest

    def check_access(self, client: RegistryClient, ref: OciReference, digest: str) -> None:
        """That the registry lets `client`'s credentials read manifest `digest` in `ref`'s
        repository. Always asks (one HEAD, nothing downloaded or cached): the cache says
        the content is known, not who may have it."""
        if not client.has_manifest(ref.repository, digest, MANIFEST_ACCEPT):
            raise ChartError(CHART_NOT_FOUND, f"{ref}: manifest {digest} not found in the registry")

    def _chart_manifest(self, pull: CachedPull, digest: str) -> tuple[str, HelmChartManifest]:
        top = pull.parsed(digest)
        if isinstance(top, ImageManifest):
            return digest, self._helm(pull, digest, top)
        for candidate in index_candidates(top):
            child = pull.parsed(candidate.digest)
            if isinstance(child, ImageManifest):
                try:
                    return candidate.digest, helm_chart(child)
                except ManifestError:
                    continue  # another platform or artifact; keep looking
        raise ChartError(
            INVALID_MEDIA_TYPE, f"{pull.ref}: the index {digest} holds no Helm chart manifest"
        )

    @staticmethod
    def _helm(pull: CachedPull, digest: str, manifest: ImageManifest) -> HelmChartManifest:
        try:
            return helm_chart(manifest)
        except ManifestError as error:
            raise ChartError(
                INVALID_MEDIA_TYPE, f"{pull.ref}: manifest {digest} is not a Helm chart: {error}"
            ) from None
