"""A Helm repository's index.yaml: parsed to what rudder needs, a version picked, URLs
resolved as Helm resolves them (pure).

Public indexes are tens of MiB of YAML, most of it descriptions and maintainers; only
name, version, digest and URLs are kept, so one parse serves every HelmRelease until the
index changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import yaml

from rudder.chart.digests import is_sha256_digest
from rudder.semver import Version, VersionError, VersionRange

try:  # libyaml's parser, when PyYAML was built with it, is an order of magnitude faster
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _Loader = yaml.SafeLoader

INDEX_FILE: Final = "index.yaml"
# Chart versions an index may list in all (public ones list tens of thousands).
MAX_ENTRIES: Final = 200_000


class InvalidIndex(ValueError):
    """The index is not a Helm repository index."""


class NoSuchVersion(LookupError):
    """The chart is in the index, but no version of it is the one asked for."""


class NoSuchChart(LookupError):
    """The index does not list the chart."""


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: str
    digest: str | None  # sha256:<hex> of the archive, when the index has one
    urls: tuple[str, ...]


@dataclass(frozen=True)
class RepoIndex:
    charts: Mapping[str, tuple[IndexEntry, ...]]  # by name, newest version first

    def find(self, name: str, version: str, *, allow_range: bool) -> IndexEntry:
        """The entry Helm would pick: the exact version, or the newest the range allows."""
        entries = self.charts.get(name)
        if not entries:
            raise NoSuchChart(name)
        # As Helm: an entry whose version is the very text asked for wins outright.
        for entry in entries:
            if entry.version == version:
                return entry
        try:
            wanted = VersionRange.parse(version) if allow_range else _exactly(version)
        except VersionError as error:
            raise NoSuchVersion(str(error)) from None
        for entry in entries:
            try:
                parsed = Version.parse(entry.version)
            except VersionError:
                continue  # Helm skips versions it cannot parse too
            if wanted.allows(parsed):
                return entry
        raise NoSuchVersion(version)


def _exactly(version: str) -> VersionRange:
    Version.parse(version)  # an exact version, not a range
    return VersionRange.parse(f"={version}")


def parse_index(data: bytes) -> RepoIndex:
    """The charts of an index.yaml (or its JSON form), newest version of each first."""
    try:
        # Aliases first: a few bytes of `*a` each make an entry, so an index of them would
        # build millions of entries within the byte limit. Helm's own indexes have none.
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(data, Loader=_Loader)):
            raise InvalidIndex("YAML aliases are not allowed in an index")
        document = yaml.load(data, Loader=_Loader)  # noqa: S506  # a safe loader
    except yaml.YAMLError as error:
        raise InvalidIndex(f"not YAML: {_first_line(error)}") from None
    if not isinstance(document, Mapping) or not document.get("apiVersion"):
        raise InvalidIndex("not a Helm repository index (no apiVersion)")
    entries = document.get("entries")
    if entries is None:
        entries = {}
    if not isinstance(entries, Mapping):
        raise InvalidIndex("entries is not a map")
    charts: dict[str, tuple[IndexEntry, ...]] = {}
    total = 0
    for name, versions in entries.items():
        if not isinstance(versions, list):
            continue
        total += len(versions)
        if total > MAX_ENTRIES:
            raise InvalidIndex(f"more than {MAX_ENTRIES} chart versions")
        kept = [entry for item in versions if (entry := _entry(str(name), item)) is not None]
        charts[str(name)] = tuple(sorted(kept, key=_newest_first))
    return RepoIndex(charts)


def _entry(name: str, item: object) -> IndexEntry | None:
    if not isinstance(item, Mapping):
        return None
    version = item.get("version")
    urls = item.get("urls")
    if version is None or not isinstance(urls, list) or not urls:
        return None  # nothing to download
    digest = item.get("digest")
    text = str(digest).lower() if digest else ""
    if text and not text.startswith("sha256:"):
        text = f"sha256:{text}"  # Helm writes the bare hex
    return IndexEntry(
        name=name,
        version=str(version),
        digest=text if is_sha256_digest(text) else None,
        urls=tuple(str(url) for url in urls),
    )


def _newest_first(entry: IndexEntry) -> tuple[int, Any]:
    try:
        return (0, _Descending(Version.parse(entry.version)))
    except VersionError:
        return (1, entry.version)


@dataclass(frozen=True)
class _Descending:
    version: Version

    def __lt__(self, other: _Descending) -> bool:
        return other.version < self.version


def resolve_url(repository: str, reference: str) -> str:
    """What Helm makes of a chart URL in the index (and of `index.yaml` itself): an
    absolute URL as it is; a relative one against the repository URL taken as a
    directory, keeping the repository URL's query (signed-URL tokens)."""
    if urlsplit(reference).scheme:
        return reference
    base = urlsplit(repository)
    directory = base._replace(path=base.path.rstrip("/") + "/", query="", fragment="")
    ref = urlsplit(reference)
    path = _join_path(directory.path, ref.path)
    return urlunsplit((base.scheme, base.netloc, path, base.query, ""))


def _join_path(directory: str, reference: str) -> str:
    """RFC 3986 merge and dot-segment removal for a path relative to `directory`."""
    merged = reference if reference.startswith("/") else directory + reference
    out: list[str] = []
    segments = merged.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                out.append("")
        elif segment == "..":
            if len(out) > 1:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/".join(out) if out and out[0] == "" else "/" + "/".join(out)


def same_origin(first: str, second: str) -> bool:
    """Whether credentials for `first` may go to `second` without passCredentials: the
    same scheme, host and port, as Helm decides it."""
    a, b = urlsplit(first), urlsplit(second)
    return (a.scheme.lower(), _host_port(a)) == (b.scheme.lower(), _host_port(b))


def _host_port(url: Any) -> tuple[str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme.lower())
    return ((url.hostname or "").lower(), url.port or default)


def display_url(url: str) -> str:
    """A URL safe for status, events and logs: no user info, no query (tokens live there)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "…" if parts.query else "", ""))


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
