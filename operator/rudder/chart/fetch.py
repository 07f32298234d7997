"""Verified fetches: registry bytes are returned only if they hash to the digest asked for.

oras-py does not check digests, so every manifest and blob rudder uses passes through
here: the sha256 of the bytes received must equal the requested digest, and a blob's
length must equal its descriptor's size. Any mismatch is a `DigestMismatch`: the
registry (or something between it and rudder) served other content.
"""

from __future__ import annotations

from typing import Final

from rudder.chart.digests import sha256_digest
from rudder.chart.errors import CHART_NOT_FOUND, CHART_TOO_LARGE, DIGEST_MISMATCH, ChartError
from rudder.chart.manifest import MANIFEST_ACCEPT, Descriptor
from rudder.chart.reference import OciReference
from rudder.chart.registry import BodyTooLarge, RegistryClient

MAX_MANIFEST_BYTES: Final = 4 * 1024 * 1024  # Distribution's own manifest limit


def manifest_by_digest(client: RegistryClient, ref: OciReference, digest: str) -> bytes:
    """The manifest (or index) `digest` of `ref`'s repository, verified."""
    try:
        fetched = client.manifest(ref.repository, digest, MANIFEST_ACCEPT, MAX_MANIFEST_BYTES)
    except BodyTooLarge as error:
        raise ChartError(
            CHART_TOO_LARGE, f"{ref}: manifest {digest} is over {error.limit} bytes"
        ) from None
    if fetched is None:
        raise ChartError(CHART_NOT_FOUND, f"{ref}: manifest {digest} not found in the registry")
    received = sha256_digest(fetched.body)
    if received != digest:
        raise ChartError(
            DIGEST_MISMATCH,
            f"{ref}: asked for manifest {digest}, the registry sent content hashing to {received}",
        )
    return fetched.body


def blob(client: RegistryClient, ref: OciReference, descriptor: Descriptor) -> bytes:
    """The blob `descriptor` names, verified against its digest and size.

    The caller has already refused sizes over its limits; at most `descriptor.size` bytes
    are read, so a registry cannot make rudder buffer more than the manifest declared.
    """
    digest = descriptor.digest
    try:
        body = client.blob(ref.repository, digest, max_bytes=descriptor.size)
    except BodyTooLarge:
        raise ChartError(
            DIGEST_MISMATCH,
            f"{ref}: blob {digest} is longer than the {descriptor.size} bytes its descriptor says",
        ) from None
    if body is None:
        raise ChartError(CHART_NOT_FOUND, f"{ref}: blob {digest} not found in the registry")
    if len(body) != descriptor.size:
        raise ChartError(
            DIGEST_MISMATCH,
            f"{ref}: blob {digest} is {len(body)} bytes, its descriptor says {descriptor.size}",
        )
    received = sha256_digest(body)
    if received != digest:
        raise ChartError(
            DIGEST_MISMATCH,
            f"{ref}: asked for blob {digest}, the registry sent content hashing to {received}",
        )
    return body
