"""A release's revision history, with Helm's rules for what is current and what goes.

Pure functions over the stored revisions of one release (Helm v4.2.3 `pkg/storage` and
`pkg/action`): which revision is the latest and which the last deployed, which revisions
a new deployed one supersedes, and which `maxHistory` prunes. They take anything with a
`version` and a `status` (a decoded `Release`, or a stored record read from its labels)
and return the same objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from enum import StrEnum
from typing import Protocol, TypeVar

from rudder.release.codec import Info, Release


class Status(StrEnum):
    """A revision's `info.status`, as Helm names them."""

    UNKNOWN = "unknown"
    DEPLOYED = "deployed"
    UNINSTALLED = "uninstalled"
    SUPERSEDED = "superseded"
    FAILED = "failed"
    UNINSTALLING = "uninstalling"
    PENDING_INSTALL = "pending-install"
    PENDING_UPGRADE = "pending-upgrade"
    PENDING_ROLLBACK = "pending-rollback"


PENDING = frozenset({Status.PENDING_INSTALL, Status.PENDING_UPGRADE, Status.PENDING_ROLLBACK})


class Revision(Protocol):
    """One stored revision: its number and its status."""

    @property
    def version(self) -> int: ...

    @property
    def status(self) -> str: ...


R = TypeVar("R", bound=Revision)


def is_pending(revision: Revision) -> bool:
    """An install, upgrade or rollback is under way (or died): Helm refuses to act on it."""
    return revision.status in PENDING


def by_revision(revisions: Iterable[R]) -> list[R]:
    """Oldest first."""
    return sorted(revisions, key=lambda revision: revision.version)


def latest(revisions: Iterable[R]) -> R | None:
    """The newest revision, whatever its status (Helm's `Last`)."""
    return max(revisions, key=lambda revision: revision.version, default=None)


def last_deployed(revisions: Iterable[R]) -> R | None:
    """The newest revision with status deployed (Helm's `Deployed`).

    Concurrent writers can leave several deployed; Helm takes the newest, so does this.
    """
    return latest(r for r in revisions if r.status == Status.DEPLOYED)


def next_revision(revisions: Iterable[Revision]) -> int:
    """The version a new revision gets: one past the newest, 1 for a new release."""
    newest = latest(revisions)
    return 1 if newest is None else newest.version + 1


def superseded_by(
    revisions: Iterable[R], new_revision: int, *, upgraded_from: int | None = None
) -> list[R]:
    """The revisions to mark superseded once `new_revision` is deployed, oldest first.

    Already superseded ones are left out (nothing to write).

    Every other deployed revision (Helm supersedes them all after a rollback or an
    uninstall, and after an upgrade the one it upgraded from was the deployed one). An
    upgrade also supersedes the revision it started from when that was not deployed (a
    failed latest with nothing deployed); pass it as `upgraded_from`.
    """
    chosen = [
        r
        for r in by_revision(revisions)
        if r.version != new_revision
        and r.status != Status.SUPERSEDED
        and (r.status == Status.DEPLOYED or r.version == upgraded_from)
    ]
    return chosen


def live_revisions(revisions: Iterable[R]) -> list[R]:
    """The revisions whose objects may be in the cluster, oldest first: the last deployed
    one and every later one (a failed or interrupted attempt may have applied some of its
    objects); nothing from before an uninstall."""
    ordered = by_revision(revisions)
    start = 0
    for index, revision in enumerate(ordered):
        if revision.status == Status.UNINSTALLED:
            start = index + 1
        elif revision.status == Status.DEPLOYED:
            start = index
    return ordered[start:]


def revisions_to_prune(revisions: Sequence[R], max_history: int) -> list[R]:
    """The revisions Helm deletes before storing a new one under `maxHistory`.

    Helm makes room for the revision about to be written: it keeps at most
    `max_history - 1` stored ones, deleting the oldest first but never the last deployed
    one (so more than that may remain). `max_history <= 0` means no limit.
    """
    if max_history <= 0:
        return []
    keep_at_most = max_history - 1
    if len(revisions) <= keep_at_most:
        return []
    protected = last_deployed(revisions)
    doomed: list[R] = []
    for revision in by_revision(revisions):
        if len(revisions) - len(doomed) == keep_at_most:
            break
        if protected is None or revision.version != protected.version:
            doomed.append(revision)
    return doomed


def with_status(release: Release, status: Status | str, description: str | None = None) -> Release:
    """The release with a new status (and description, when given), like Helm's SetStatus."""
    info = release.info or Info()
    changed = replace(info, status=str(status))
    if description is not None:
        changed = replace(changed, description=description)
    return replace(release, info=changed)
