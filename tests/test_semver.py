"""Chart versions and ranges as Helm (Masterminds semver) reads them."""

from __future__ import annotations

import pytest

from rudder.semver import Version, VersionError, VersionRange


def allows(text: str, version: str) -> bool:
    return VersionRange.parse(text).allows(Version.parse(version))


def test_versions_order_as_semver_says() -> None:
    ordered = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta.2",
               "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.10.0", "2.0.0"]  # fmt: skip
    parsed = [Version.parse(v) for v in ordered]
    assert sorted(reversed(parsed)) == parsed
    assert Version.parse("v1.2") == Version.parse("1.2.0")
    assert Version.parse("1.2.3+build.5") == Version.parse("1.2.3")


@pytest.mark.parametrize(
    ("text", "inside", "outside"),
    [
        ("1.2.3", ["1.2.3"], ["1.2.4", "1.2.3-rc.1"]),
        ("=1.2.3", ["1.2.3"], ["1.2.2"]),
        ("!=1.2.3", ["1.2.4"], ["1.2.3"]),
        (">1.2.3", ["1.2.4", "2.0.0"], ["1.2.3"]),
        (">=1.2.3 <2", ["1.2.3", "1.9.9"], ["2.0.0", "1.2.2"]),
        (">=1.2.3, <2", ["1.5.0"], ["2.1.0"]),
        ("> 1.2.3", ["1.3.0"], ["1.2.3"]),
        ("~1.2.3", ["1.2.3", "1.2.9"], ["1.3.0", "1.2.2"]),
        ("~1.2", ["1.2.0", "1.2.9"], ["1.3.0"]),
        ("~1", ["1.0.0", "1.9.0"], ["2.0.0"]),
        ("~>1.2", ["1.2.5"], ["1.3.0"]),
        ("^1.2.3", ["1.2.3", "1.9.0"], ["2.0.0", "1.2.2"]),
        ("^0.2.3", ["0.2.3", "0.2.9"], ["0.3.0"]),
        ("^0.0.3", ["0.0.3"], ["0.0.4"]),
        ("^0", ["0.0.1", "0.9.0"], ["1.0.0"]),
        ("1.2.x", ["1.2.0", "1.2.7"], ["1.3.0", "1.1.9"]),
        ("1.x", ["1.0.0", "1.9.9"], ["2.0.0"]),
        ("*", ["0.0.1", "9.9.9"], ["1.0.0-rc.1"]),
        ("<=1.2.x", ["1.2.9"], ["1.3.0"]),
        (">1.2.x", ["1.3.0"], ["1.2.9"]),
        ("!=1.2.x", ["1.3.0", "1.1.0"], ["1.2.5"]),
        ("1.2 - 1.4.5", ["1.2.0", "1.4.5"], ["1.4.6", "1.1.9"]),
        ("^1 || ^3", ["1.5.0", "3.0.0"], ["2.0.0"]),
        (">=2.0.0-rc.0 <2.0.0", ["2.0.0-rc.1"], ["2.0.0", "1.9.0-rc.1"]),
        ("^1", ["1.2.0"], ["1.3.0-beta.1"]),  # prereleases only when the range names one
    ],
)
def test_ranges(text: str, inside: list[str], outside: list[str]) -> None:
    for version in inside:
        assert allows(text, version), (text, version)
    for version in outside:
        assert not allows(text, version), (text, version)


@pytest.mark.parametrize("text", ["", "abc", ">=1.2.3 <", "1.2.3.4", "|| ^1", ">>1"])
def test_nonsense_is_refused(text: str) -> None:
    with pytest.raises(VersionError):
        VersionRange.parse(text)
