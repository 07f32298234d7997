"""Find cosign's signatures of a chart in its repository and check them (blocking).

Where cosign puts them:
- v3's default: a Sigstore bundle in an OCI 1.1 referrer of the chart manifest, listed by
  the referrers API (`/v2/<repo>/referrers/<digest>`) or, on registries without it, by
  the index tagged `sha256-<hex>` (the OCI referrers tag schema).
- the legacy format: the manifest tagged `sha256-<hex>.sig`, one simple-signing layer
  per signature.

Any one signature that verifies with the key and names this digest is enough. Signature
objects are mutable (tags), so nothing here is cached on disk.
"""

from __future__ import annotations

from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec

from rudder.chart import fetch
from rudder.chart.cosign import (
    BUNDLE_MEDIA_PREFIX,
    BUNDLE_MEDIA_TYPE,
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING_LAYER,
    SignatureRejected,
    verify_bundle,
    verify_simple_signing,
)
from rudder.chart.digests import digest_hex
from rudder.chart.errors import CHART_NOT_FOUND, VERIFICATION_FAILED, ChartError
from rudder.chart.manifest import (
    MANIFEST_ACCEPT,
    OCI_INDEX,
    Descriptor,
    ImageIndex,
    ImageManifest,
    ManifestError,
    parse_manifest,
)
from rudder.chart.reference import OciReference
from rudder.chart.registry import BodyTooLarge, RegistryClient

MAX_SIGNATURE_BYTES: Final = 1024 * 1024


def verify_signed(
    client: RegistryClient, ref: OciReference, digest: str, key: ec.EllipticCurvePublicKey
) -> None:
    """Return if a cosign signature of `digest` by `key` is found; else VerificationFailed."""
    rejections: list[str] = []
    if _any_bundle_verifies(client, ref, digest, key, rejections):
        return
    if _any_legacy_signature_verifies(client, ref, digest, key, rejections):
        return
    why = "; ".join(rejections) or (
        "no cosign signature found (no Sigstore bundle referrer, no .sig tag)"
    )
    raise ChartError(VERIFICATION_FAILED, f"{ref}: cosign verification of {digest} failed: {why}")


def _any_bundle_verifies(
    client: RegistryClient,
    ref: OciReference,
    digest: str,
    key: ec.EllipticCurvePublicKey,
    rejections: list[str],
) -> bool:
    for descriptor in _bundle_referrers(client, ref, digest):
        where = f"bundle referrer {descriptor.digest}"
        try:
            manifest = _manifest(client, ref, descriptor.digest)
            if manifest.subject is not None and manifest.subject.digest != digest:
                raise SignatureRejected(f"it refers to {manifest.subject.digest}")
            layers = [m for m in manifest.layers if m.media_type.startswith(BUNDLE_MEDIA_PREFIX)]
            if not layers:
                raise SignatureRejected("it holds no bundle layer")
            verify_bundle(_small_blob(client, ref, layers[0]), digest, key)
            return True
        except SignatureRejected as rejected:
            rejections.append(f"{where}: {rejected}")
    return False


def _any_legacy_signature_verifies(
    client: RegistryClient,
    ref: OciReference,
    digest: str,
    key: ec.EllipticCurvePublicKey,
    rejections: list[str],
) -> bool:
    tag = f"sha256-{digest_hex(digest)}.sig"
    fetched = _get_manifest(client, ref, tag, MANIFEST_ACCEPT)
    if fetched is None:
        return False
    try:
        manifest = parse_manifest(fetched)
    except ManifestError as error:
        rejections.append(f"{tag}: {error}")
        return False
    if not isinstance(manifest, ImageManifest):
        rejections.append(f"{tag}: not an image manifest")
        return False
    for layer in manifest.layers:
        if layer.media_type != SIMPLE_SIGNING_LAYER:
            continue
        try:
            signature = layer.annotations.get(SIGNATURE_ANNOTATION)
            if not signature:
                raise SignatureRejected("no signature annotation")
            verify_simple_signing(_small_blob(client, ref, layer), signature, digest, key)
        except SignatureRejected as rejected:
            rejections.append(f"{tag} layer {layer.digest}: {rejected}")
            continue
        return True
    if not rejections:
        rejections.append(f"{tag}: no simple-signing layer")
    return False


def _bundle_referrers(client: RegistryClient, ref: OciReference, digest: str) -> list[Descriptor]:
    try:
        fetched = client.referrers(ref.repository, digest, BUNDLE_MEDIA_TYPE, MAX_SIGNATURE_BYTES)
        body = fetched.body if fetched is not None else None
    except BodyTooLarge:
        body = None
    if body is None:  # no referrers API: the referrers tag schema
        body = _get_manifest(client, ref, f"sha256-{digest_hex(digest)}", (OCI_INDEX,))
    if body is None:
        return []
    try:
        index = parse_manifest(body)
    except ManifestError:
        return []
    if not isinstance(index, ImageIndex):
        return []
    # The filter is optional for registries, so apply it here too.
    return [
        d
        for d in index.manifests
        if d.artifact_type is None or d.artifact_type == BUNDLE_MEDIA_TYPE
    ]


def _manifest(client: RegistryClient, ref: OciReference, digest: str) -> ImageManifest:
    try:
        manifest = parse_manifest(fetch.manifest_by_digest(client, ref, digest))
    except ManifestError as error:
        raise SignatureRejected(str(error)) from None
    except ChartError as error:
        if error.reason != CHART_NOT_FOUND:
            raise
        raise SignatureRejected("it is missing from the registry") from None
    if not isinstance(manifest, ImageManifest):
        raise SignatureRejected("it is not an image manifest")
    return manifest


def _small_blob(client: RegistryClient, ref: OciReference, layer: Descriptor) -> bytes:
    if layer.size > MAX_SIGNATURE_BYTES:
        raise SignatureRejected(f"layer {layer.digest} is {layer.size} bytes, too large")
    try:
        return fetch.blob(client, ref, layer)
    except ChartError as error:
        if error.reason != CHART_NOT_FOUND:
            raise
        raise SignatureRejected(f"layer {layer.digest} is missing from the registry") from None


def _get_manifest(
    client: RegistryClient, ref: OciReference, tag: str, accept: tuple[str, ...]
) -> bytes | None:
    try:
        fetched = client.manifest(ref.repository, tag, accept, MAX_SIGNATURE_BYTES)
    except BodyTooLarge:
        return None
    return None if fetched is None else fetched.body
