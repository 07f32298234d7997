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


# Floors kept at most; past it the one written longest ago goes (every cache has long caught
# up with it), so the floors of releases deleted long ago do not pile up.
MAX_FLOORS = 65536


class Floors:
    """The floor of each key (whatever the caller keys by: a HelmRelease, a release's
    records). Floors are kept until the caller forgets the key (the HelmRelease is gone) or
    MAX_FLOORS newer ones push it out: several caches (one per identity) may answer for one
    key, and each must catch up."""

    def __init__(self, limit: int = MAX_FLOORS) -> None:
        self._floors: dict[Hashable, Floor] = {}
        self._limit = limit

    def _set(self, key: Hashable, floor: Floor) -> None:
        self._floors.pop(key, None)  # re-inserted last: the dict's order is write order
        self._floors[key] = floor
        if len(self._floors) > self._limit:
            del self._floors[next(iter(self._floors))]

    def wrote(self, key: Hashable, version: str | None, name: str | None = None) -> None:
        """A write answered at `version` (an older one than the floor changes nothing; one
        whose version is not a number makes every cached state too old). `name`, written
        or read back, exists again: a cache that holds it is right to."""
        current = self._floors.get(key, Floor())
        if name is not None and name in current.absent:
            current = replace(current, absent=current.absent - {name})
        if current.version is None or not at_least(current.version, version):
            current = replace(current, version=version or "unknown")
        self._set(key, current)

    def deleted(self, key: Hashable, name: str) -> None:
        current = self._floors.get(key, Floor())
        self._set(key, replace(current, absent=current.absent | {name}))

    def floor(self, key: Hashable) -> Floor | None:
        return self._floors.get(key)

    def met(self, key: Hashable, floor: Floor, version: str | None) -> None:
        """A cache at `version` met `floor`: deleted names become that version (a cache at
        least as new cannot hold them, unless they were created again after it), so the
        floor stays one version. Nothing changes if the floor moved meanwhile."""
        if floor.absent and self._floors.get(key) is floor and as_number(version) is not None:
            self._floors[key] = Floor(version=version)  # not a write: keeps its place

    def allows(self, key: Hashable, version: str | None) -> bool:
        """Whether a cached object at `version` is new enough to act on for `key`."""
        floor = self._floors.get(key)
        return floor is None or at_least(version, floor.version)

    def forget(self, key: Hashable) -> None:
        self._floors.pop(key, None)
