"""resourceVersions as the write-your-own-reads rule uses them.

rudder reads the objects it writes itself (HelmReleases, release Secrets) from watches. A
watch may lag behind a write rudder has just made; acting on the older state would undo
that write. So each write's resourceVersion is kept as a *floor*: a cached state counts only
once the watch has delivered a version at least as new, and until then the caller reads the
API directly, as it would without a cache.

The API calls resourceVersions opaque; every etcd-backed server gives etcd's revision, a
number that grows with every write. Comparing them is what the rule needs, so anything that
is not a number compares as "not caught up": a server with other versions simply gets a
direct read every time, never a stale cache.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Final

# A floor that no cached state meets: rudder changed the object in a way whose version it
# does not know (a deletion), so only a direct read tells where it stands.
UNKNOWN: Final = "unknown"


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


class Floors:
    """The resourceVersion of rudder's own last write of each key (whatever the caller
    keys by: a HelmRelease, a release's records)."""

    def __init__(self) -> None:
        self._floors: dict[Hashable, str] = {}

    def wrote(self, key: Hashable, version: str | None) -> None:
        """A write (or a direct read) answered at `version`; an older one changes nothing."""
        if not version:
            self._floors[key] = UNKNOWN
            return
        current = self._floors.get(key)
        if current is None or current == UNKNOWN or at_least(version, current):
            self._floors[key] = version

    def changed_unseen(self, key: Hashable) -> None:
        """A write whose version is not known (a deletion): read directly next time."""
        self._floors[key] = UNKNOWN

    def floor(self, key: Hashable) -> str | None:
        return self._floors.get(key)

    def allows(self, key: Hashable, version: str | None) -> bool:
        """Whether a cached state at `version` is new enough to act on for `key`."""
        return at_least(version, self._floors.get(key))

    def forget(self, key: Hashable) -> None:
        self._floors.pop(key, None)
