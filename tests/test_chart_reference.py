"""Chart references: what `spec.chart.ref` accepts, and the pinned form the reconciler uses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rudder.chart.errors import INVALID_CHART_REFERENCE, ChartError
from rudder.chart.reference import OciReference, parse_reference

DIGEST = "sha256:" + "ab" * 32


def test_digest_pinned_reference_with_port_and_nested_path() -> None:
    ref = parse_reference(f"oci://registry.example.com:5000/team/charts/podinfo@{DIGEST}")
    assert ref == OciReference("registry.example.com:5000", "team/charts/podinfo", None, DIGEST)
    assert ref.manifest_reference == DIGEST


def test_tag_reference_and_tag_plus_digest() -> None:
    assert parse_reference("oci://127.0.0.1:5000/charts/app:6.7.0").tag == "6.7.0"
    both = parse_reference(f"oci://ghcr.io/org/app:1.0@{DIGEST}")
    assert (both.tag, both.digest, both.manifest_reference) == ("1.0", DIGEST, DIGEST)


def test_pinned_keeps_the_tag_for_readers_and_adds_the_digest() -> None:
    pinned = parse_reference("oci://ghcr.io/org/app:1.0").pinned(DIGEST)
    assert str(pinned) == f"oci://ghcr.io/org/app:1.0@{DIGEST}"
    assert parse_reference(str(pinned)) == pinned


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (f"https://ghcr.io/org/app@{DIGEST}", "oci://"),
        (f"oci://ghcr.io@{DIGEST}", "host/path"),
        ("oci://ghcr.io/org/app", "needs a digest"),
        ("oci://ghcr.io/org/app@sha512:" + "ab" * 64, "sha256"),
        ("oci://ghcr.io/org/app@sha256:" + "AB" * 32, "sha256"),
        ("oci://ghcr.io/org/app@sha256:abc", "sha256"),
        (f"oci://user:secret@ghcr.io/org/app@{DIGEST}", "bad registry host"),
        (f"oci://ghcr.io/Org/App@{DIGEST}", "bad repository path"),
        (f"oci://ghcr.io/org//app@{DIGEST}", "bad repository path"),
        ("oci://ghcr.io/org/app:bad/tag", "bad repository path"),
        ("oci://ghcr.io/org/app:.hidden", "bad tag"),
    ],
)
def test_refused_references_say_why(text: str, why: str) -> None:
    with pytest.raises(ChartError) as caught:
        parse_reference(text)
    assert caught.value.reason == INVALID_CHART_REFERENCE
    assert not caught.value.retriable
    assert why in caught.value.message


_component = st.from_regex(r"[a-z0-9]{1,8}([._-][a-z0-9]{1,8}){0,2}", fullmatch=True)
_hosts = st.sampled_from(["ghcr.io", "127.0.0.1:5000", "registry.example.com", "localhost:80"])
_tags = st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True))
_digests = st.one_of(
    st.none(), st.binary(min_size=32, max_size=32).map(lambda b: "sha256:" + b.hex())
)


@given(_hosts, st.lists(_component, min_size=1, max_size=4), _tags, _digests)
def test_every_valid_reference_round_trips(
    host: str, path: list[str], tag: str | None, digest: str | None
) -> None:
    if tag is None and digest is None:
        digest = DIGEST
    ref = OciReference(host, "/".join(path), tag, digest)
    assert parse_reference(str(ref)) == ref
