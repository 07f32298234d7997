"""The on-disk blob cache: verified reads, atomic writes, LRU bound, restarts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from rudder.chart.cache import BlobCache
from rudder.chart.digests import sha256_digest


def _evictions() -> float:
    return REGISTRY.get_sample_value("rudder_chart_cache_evictions_total") or 0.0


def test_stored_content_comes_back_and_unknown_digests_miss(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, max_bytes=1024)
    cache.put(sha256_digest(b"chart"), b"chart")
    assert cache.get(sha256_digest(b"chart")) == b"chart"
    assert cache.get(sha256_digest(b"other")) is None


def test_bytes_that_do_not_match_their_digest_are_never_stored(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, max_bytes=1024)
    with pytest.raises(ValueError, match="do not hash"):
        cache.put(sha256_digest(b"expected"), b"something else")
    assert cache.get(sha256_digest(b"expected")) is None


def test_a_corrupted_entry_is_discarded_on_read(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, max_bytes=1024)
    digest = sha256_digest(b"chart bytes")
    cache.put(digest, b"chart bytes")
    entry = tmp_path / "blobs" / "sha256" / digest.removeprefix("sha256:")
    entry.write_bytes(b"chart bytez")  # bit rot, or someone editing the cache
    assert cache.get(digest) is None
    assert not entry.exists()
    assert cache.total_bytes == 0


def test_least_recently_used_entries_are_evicted_first(tmp_path: Path) -> None:
    before = _evictions()
    cache = BlobCache(tmp_path, max_bytes=30)
    a, b, c = (bytes([n]) * 10 for n in (1, 2, 3))
    for data in (a, b, c):
        cache.put(sha256_digest(data), data)
    assert cache.get(sha256_digest(a)) == a  # a is now the most recently used
    d = bytes([4]) * 10
    cache.put(sha256_digest(d), d)
    assert sha256_digest(b) not in cache
    assert all(sha256_digest(x) in cache for x in (a, c, d))
    assert cache.total_bytes == 30
    assert _evictions() == before + 1


def test_the_cache_and_its_use_order_survive_a_restart(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, max_bytes=100)
    old, new = b"o" * 10, b"n" * 10
    cache.put(sha256_digest(old), old)
    cache.put(sha256_digest(new), new)
    old_path = tmp_path / "blobs" / "sha256" / sha256_digest(old).removeprefix("sha256:")
    os.utime(old_path, (1, 1))  # last used long ago
    (tmp_path / "tmp" / "blob-interrupted").write_bytes(b"half a write")

    restarted = BlobCache(tmp_path, max_bytes=15)  # a smaller bound evicts on start
    assert restarted.get(sha256_digest(new)) == new
    assert sha256_digest(old) not in restarted
    assert list((tmp_path / "tmp").iterdir()) == []


def test_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, max_bytes=1024)
    for n in range(5):
        cache.put(sha256_digest(bytes([n])), bytes([n]))
    assert list((tmp_path / "tmp").iterdir()) == []
    assert len(list((tmp_path / "blobs" / "sha256").iterdir())) == 5


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=25),
    st.integers(min_value=40, max_value=200),
)
def test_size_stays_bounded_and_the_newest_entry_is_kept(
    tmp_path_factory: pytest.TempPathFactory, blobs: list[bytes], bound: int
) -> None:
    directory = tmp_path_factory.mktemp("cache")
    cache = BlobCache(directory, max_bytes=bound)
    for data in blobs:
        cache.put(sha256_digest(data), data)
        assert cache.total_bytes <= bound
        assert cache.get(sha256_digest(data)) == data
    on_disk = sum(p.stat().st_size for p in (directory / "blobs" / "sha256").iterdir())
    assert on_disk == cache.total_bytes
