"""Content-addressed on-disk cache of registry blobs and manifests, bounded by size (LRU).

Layout: `<dir>/blobs/sha256/<hex>`. A file is only ever written whole (temporary file,
then rename), and read back only if its bytes still hash to its name: a corrupted entry
is deleted and reported as a miss, so it is fetched again. The file's mtime is its last
use, so the least-recently-used order survives restarts. Thread-safe: pulls run in
worker threads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

from rudder.chart import metrics
from rudder.chart.digests import digest_hex, is_sha256_digest, sha256_digest

log = logging.getLogger(__name__)


class BlobCache:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._blobs = directory / "blobs" / "sha256"
        self._tmp = directory / "tmp"
        self._lock = threading.Lock()
        self._sizes: OrderedDict[str, int] = OrderedDict()  # hex -> size, least recent first
        self._total = 0
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._load_index()

    @property
    def total_bytes(self) -> int:
        return self._total

    def __contains__(self, digest: str) -> bool:
        with self._lock:
            return digest_hex(digest) in self._sizes

    def get(self, digest: str) -> bytes | None:
        """The verified content of `digest`, or None (absent, or found corrupted)."""
        hex_digest = digest_hex(digest)
        path = self._blobs / hex_digest
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            self._forget(hex_digest)
            return None
        if sha256_digest(data) != digest:
            log.warning("chart cache entry %s is corrupted; discarding it", digest)
            metrics.CACHE_CORRUPTIONS.inc()
            self._remove(hex_digest)
            return None
        with contextlib.suppress(FileNotFoundError):
            os.utime(path)  # last use, for LRU order across restarts
        with self._lock:
            if hex_digest in self._sizes:
                self._sizes.move_to_end(hex_digest)
        return data

    def put(self, digest: str, data: bytes) -> None:
        """Store verified content; a write failure only costs a later re-download."""
        if sha256_digest(data) != digest:
            raise ValueError(f"refusing to cache bytes that do not hash to {digest}")
        hex_digest = digest_hex(digest)
        try:
            self._write_atomically(self._blobs / hex_digest, data)
        except OSError as error:
            log.warning("cannot write chart cache entry %s: %s", digest, error.strerror)
            return
        with self._lock:
            self._total -= self._sizes.pop(hex_digest, 0)
            self._sizes[hex_digest] = len(data)
            self._total += len(data)
        self._evict()

    def _write_atomically(self, path: Path, data: bytes) -> None:
        handle, temporary = tempfile.mkstemp(dir=self._tmp, prefix="blob-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    def _evict(self) -> None:
        """Drop least-recently-used entries while over the bound (the newest always stays)."""
        while True:
            with self._lock:
                if self._total <= self.max_bytes or len(self._sizes) <= 1:
                    break
                victim, size = next(iter(self._sizes.items()))
                del self._sizes[victim]
                self._total -= size
            with contextlib.suppress(FileNotFoundError):
                (self._blobs / victim).unlink()
            metrics.CACHE_EVICTIONS.inc()
        metrics.CACHE_SIZE.set(self._total)

    def _remove(self, hex_digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self._blobs / hex_digest).unlink()
        self._forget(hex_digest)

    def _forget(self, hex_digest: str) -> None:
        with self._lock:
            self._total -= self._sizes.pop(hex_digest, 0)
        metrics.CACHE_SIZE.set(self._total)

    def _load_index(self) -> None:
        """Rebuild the index from disk, oldest use first; drop leftovers of interrupted writes."""
        for leftover in self._tmp.iterdir():
            with contextlib.suppress(OSError):
                leftover.unlink()
        entries: list[tuple[int, str, int]] = []
        for path in self._blobs.iterdir():
            if not is_sha256_digest(f"sha256:{path.name}"):
                continue
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                entries.append((stat.st_mtime_ns, path.name, stat.st_size))
        for _, hex_digest, size in sorted(entries):
            self._sizes[hex_digest] = size
            self._total += size
        self._evict()
