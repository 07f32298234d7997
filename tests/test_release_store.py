"""The size guard on a new release Secret: refused before anything is written."""

from __future__ import annotations

import base64
import os

import pytest

from rudder.release.codec import Info, Release
from rudder.release.store import (
    SECRET_DATA_LIMIT,
    Owner,
    ReleaseStore,
    ReleaseTooLarge,
    Stamp,
)

STAMP = Stamp(Owner("apps", "web"), "sha256:chart", "sha256:values", 1, "me")


def release_with(manifest: str) -> Release:
    return Release(
        name="web",
        version=3,
        namespace="apps",
        info=Info(status="pending-install"),
        manifest=manifest,
    )


def test_a_release_that_fits_becomes_a_secret() -> None:
    secret = ReleaseStore.new_secret(release_with("kind: ConfigMap\n" * 1000), STAMP)
    stored = base64.b64decode(secret["data"]["release"])
    assert len(stored) < SECRET_DATA_LIMIT
    assert secret["metadata"]["name"] == "sh.helm.release.v1.web.v3"


def test_a_release_over_the_secret_limit_is_refused_with_its_size() -> None:
    # Random bytes do not compress: 1.2 MiB of them stay over 1 MiB after gzip.
    noise = base64.b64encode(os.urandom(1_200_000)).decode()
    with pytest.raises(ReleaseTooLarge, match=r"revision 3 of release web encodes to 1\.\d+ MiB"):
        ReleaseStore.new_secret(release_with(noise), STAMP)
