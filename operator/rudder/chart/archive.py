"""Safety limits on chart archives, checked before Helm's loader sees the bytes (pure).

A chart archive is a gzip'd tar. It is refused when it is larger than the configured
limits (compressed, or once decompressed: a small gzip can expand enormously), when an
entry's path is absolute or climbs out with `..`, when a link points outside the chart,
or when it holds device files or FIFOs.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
import zlib
from dataclasses import dataclass

_CHUNK = 64 * 1024


@dataclass(frozen=True)
class ArchiveLimits:
    max_compressed: int
    max_uncompressed: int


class ArchiveTooLarge(ValueError):
    """Over a size limit (reason ChartTooLarge)."""


class UnsafeArchive(ValueError):
    """Not a chart archive, or one with entries that could escape it (reason InvalidChart)."""


def check_archive(data: bytes, limits: ArchiveLimits) -> None:
    """Raise `ArchiveTooLarge` or `UnsafeArchive` unless `data` is a safe chart archive."""
    if len(data) > limits.max_compressed:
        raise ArchiveTooLarge(
            f"archive is {len(data)} bytes, over the {limits.max_compressed}-byte limit"
        )
    tar_bytes = _gunzip(data, limits.max_uncompressed)
    try:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as archive:
            members = archive.getmembers()
    except tarfile.TarError as error:
        raise UnsafeArchive(f"not a tar archive: {error}") from None
    if not members:
        raise UnsafeArchive("archive is empty")
    for member in members:
        _check_member(member)


def _gunzip(data: bytes, limit: int) -> bytes:
    """Decompress at most `limit` bytes; a bigger payload is refused without inflating it."""
    inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)  # gzip framing only
    out = bytearray()
    pending = data
    try:
        while pending:
            # max_length bounds each step, so a bomb never inflates past limit + one chunk.
            out += inflater.decompress(pending, _CHUNK)
            if len(out) > limit:
                raise ArchiveTooLarge(f"archive expands past the {limit}-byte limit")
            pending = inflater.unconsumed_tail
            if inflater.eof:
                break
        if not inflater.eof:
            raise UnsafeArchive("gzip stream is truncated")
    except zlib.error as error:
        raise UnsafeArchive(f"not a gzip archive: {error}") from None
    return bytes(out)


def _check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    if name.startswith("/") or posixpath.isabs(name) or "\\" in name:
        raise UnsafeArchive(f"entry {name!r} has an absolute or non-POSIX path")
    if ".." in name.split("/"):
        raise UnsafeArchive(f"entry {name!r} climbs out of the chart with '..'")
    if member.isdev() or member.isfifo():
        raise UnsafeArchive(f"entry {name!r} is a device or FIFO")
    if member.issym() or member.islnk():
        _check_link(member)


def _check_link(member: tarfile.TarInfo) -> None:
    """A link must resolve inside the chart's top directory (the first path component)."""
    target = member.linkname
    if target.startswith("/") or "\\" in target:
        raise UnsafeArchive(f"link {member.name!r} points to the absolute path {target!r}")
    # Symlink targets are relative to the link's directory; hard links to the archive root.
    base = posixpath.dirname(member.name) if member.issym() else ""
    resolved = posixpath.normpath(posixpath.join(base, target))
    top = member.name.split("/", 1)[0]
    if resolved == ".." or resolved.startswith("../") or resolved.split("/", 1)[0] != top:
        raise UnsafeArchive(f"link {member.name!r} -> {target!r} escapes the chart")
