"""Archive limits: sizes (compressed and expanded), paths, links."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rudder.chart.archive import ArchiveLimits, ArchiveTooLarge, UnsafeArchive, check_archive

ROOMY = ArchiveLimits(max_compressed=10 * 1024 * 1024, max_uncompressed=100 * 1024 * 1024)


def _archive(*entries: tarfile.TarInfo | tuple[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
            else:
                name, data = entry
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


CHART_YAML = ("app/Chart.yaml", b"apiVersion: v2\nname: app\nversion: 1.0.0\n")


def test_an_ordinary_chart_with_an_inner_symlink_passes() -> None:
    check_archive(
        _archive(CHART_YAML, ("app/files/a.txt", b"a"), _link("app/files/b.txt", "a.txt")), ROOMY
    )


def test_compressed_size_over_the_limit_is_refused() -> None:
    data = _archive(CHART_YAML)
    with pytest.raises(ArchiveTooLarge, match="over the"):
        check_archive(data, ArchiveLimits(max_compressed=len(data) - 1, max_uncompressed=10**9))


def test_a_gzip_bomb_is_refused_without_being_inflated() -> None:
    data = _archive(CHART_YAML, ("app/zeros", bytes(20 * 1024 * 1024)))
    assert len(data) < 100 * 1024  # small on the wire
    with pytest.raises(ArchiveTooLarge, match="expands past"):
        check_archive(data, ArchiveLimits(max_compressed=10**6, max_uncompressed=1024 * 1024))


@pytest.mark.parametrize(
    "entry",
    [
        ("/etc/passwd", b"x"),
        ("app/../../evil", b"x"),
        ("../evil", b"x"),
        _link("app/escape", "../../etc/passwd"),
        _link("app/escape", "/etc/passwd"),
        _link("app/templates/up", "../../other"),
        _link("app/hard", "etc/passwd", tarfile.LNKTYPE),
        _link("app/dev", "", tarfile.CHRTYPE),
    ],
    ids=[
        "absolute",
        "dotdot",
        "leading-dotdot",
        "symlink-up",
        "symlink-abs",
        "symlink-nested-up",
        "hardlink-out",
        "device",
    ],
)
def test_entries_that_could_escape_the_chart_are_refused(
    entry: tarfile.TarInfo | tuple[str, bytes],
) -> None:
    with pytest.raises(UnsafeArchive):
        check_archive(_archive(CHART_YAML, entry), ROOMY)


@pytest.mark.parametrize("data", [b"not gzip at all", gzip.compress(b"not a tar")[:-4]])
def test_bytes_that_are_not_a_chart_archive_are_refused(data: bytes) -> None:
    with pytest.raises(UnsafeArchive):
        check_archive(data, ROOMY)


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=0, max_size=200_000), st.integers(min_value=1, max_value=150_000))
def test_expanded_size_limit_is_exact(payload: bytes, limit: int) -> None:
    data = _archive(("app/blob", payload))
    expanded = len(gzip.decompress(data))
    limits = ArchiveLimits(max_compressed=10**9, max_uncompressed=limit)
    if expanded > limit:
        with pytest.raises(ArchiveTooLarge):
            check_archive(data, limits)
    else:
        check_archive(data, limits)
