"""resourceVersions as the write-your-own-reads rule uses them.

rudder reads the objects it writes itself (HelmReleases, release Secrets) from watches. A
watch may lag behind a write rudder has just made; acting on the older state would undo
that write. So each write leaves a *floor*: a cached state counts only once the watch has
delivered a version at least as new as the write's (and no longer holds what rudder
deleted); until then the caller reads the API directly, as it would without a cache.

The API calls resourceVersions opaque; every etcd-backed server gives etcd's revision, a
number that grows with every write. Comparing them is what the rule needs, so anything that
is not a number compares as "not caught up": a server with other versions simply gets a
direct read every time, never a stale cache.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, replace


def as_number(version: str | None) -> int | None:
    """An etcd revision as a number; None when the version is missing or not a number."""
    if not version or not version.isdigit():
        return None
    return int(version)


def at_least(version: str | None, floor: str | None) -> bool:
    """Whether a state at `version` is as new as `floor` (no floor: any state is)."""
    if floor is None:
        return True
    have, want = as_number(version), as_number(floor)
    return have is not None and want is not None and have >= want


@dataclass(frozen=True)
class Floor:
    """What a cache must show before it is acted on: at least `version`, and none of the
    `absent` names (objects rudder deleted: a deletion's version is not known)."""

    version: str | None = None
    absent: frozenset[str] = frozenset()


class Floors:
    """The floor of each key (whatever the caller keys by: a HelmRelease, a release's
    records). A floor a cache has met is forgotten: a cache's versions only grow."""

    def __init__(self) -> None:
        self._floors: dict[Hashable, Floor] = {}

    def wrote(self, key: Hashable, version: str | None) -> None:
        """A write answered at `version` (an older one than the floor changes nothing; one
        whose version is not a number makes every cached state too old)."""
        current = self._floors.get(key, Floor())
        if current.version is None or not at_least(current.version, version):
            self._floors[key] = replace(current, version=version or "unknown")

    def deleted(self, key: Hashable, name: str) -> None:
        current = self._floors.get(key, Floor())
        self._floors[key] = replace(current, absent=current.absent | {name})

    def floor(self, key: Hashable) -> Floor | None:
        return self._floors.get(key)

    def allows(self, key: Hashable, version: str | None) -> bool:
        """Whether a cached object at `version` is new enough to act on for `key`."""
        floor = self._floors.get(key)
        return floor is None or at_least(version, floor.version)

    def forget(self, key: Hashable) -> None:
        self._floors.pop(key, None)
