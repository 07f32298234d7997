"""sha256 content digests in the OCI form `sha256:<64 lowercase hex>`."""

from __future__ import annotations

import hashlib
import re
from typing import Final

_SHA256: Final = re.compile(r"^sha256:[0-9a-f]{64}$")


def is_sha256_digest(text: str) -> bool:
    return _SHA256.match(text) is not None


def sha256_digest(data: bytes) -> str:
    """The OCI digest of `data`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_hex(digest: str) -> str:
    """`sha256:abc…` -> `abc…` (the form cosign's tag names use)."""
    if not is_sha256_digest(digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return digest.removeprefix("sha256:")
