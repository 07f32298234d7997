"""Helm's history rules: latest, last deployed, superseding and maxHistory pruning."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rudder.release.codec import Info, Release
from rudder.release.history import (
    PENDING,
    Status,
    is_pending,
    last_deployed,
    latest,
    live_revisions,
    next_revision,
    revisions_to_prune,
    superseded_by,
    with_status,
)


@dataclass(frozen=True)
class Stored:
    """A stored revision as a store lists it: number and status only."""

    version: int
    status: str


def history(*statuses: str) -> list[Stored]:
    """Revisions 1..n with these statuses, listed newest first (storage order is arbitrary)."""
    return [Stored(n, s) for n, s in reversed(list(enumerate(statuses, start=1)))]


def versions(revisions: list[Stored]) -> list[int]:
    return [r.version for r in revisions]


def test_statuses_are_helms() -> None:
    assert [s.value for s in Status] == [
        "unknown",
        "deployed",
        "uninstalled",
        "superseded",
        "failed",
        "uninstalling",
        "pending-install",
        "pending-upgrade",
        "pending-rollback",
    ]
    assert {"pending-install", "pending-upgrade", "pending-rollback"} == set(PENDING)


def test_latest_and_last_deployed() -> None:
    revisions = history("superseded", "deployed", "failed")
    assert latest(revisions) == Stored(3, "failed")
    assert last_deployed(revisions) == Stored(2, "deployed")
    assert next_revision(revisions) == 4
    assert latest([]) is None
    assert last_deployed(history("failed")) is None
    assert next_revision([]) == 1


def test_with_several_deployed_the_newest_counts_as_deployed() -> None:
    assert last_deployed(history("deployed", "deployed", "failed")) == Stored(2, "deployed")


def test_pending_statuses_block_further_actions() -> None:
    assert is_pending(Stored(1, "pending-upgrade"))
    assert not is_pending(Stored(1, "failed"))


def test_works_on_decoded_releases_too() -> None:
    releases = [
        Release(name="r", version=1, namespace="n", info=Info(status="superseded")),
        Release(name="r", version=2, namespace="n", info=Info(status="deployed")),
    ]
    assert last_deployed(releases) is releases[1]
    assert revisions_to_prune(releases, 1) == [releases[0]]


def test_a_new_deployed_revision_supersedes_every_other_deployed_one() -> None:
    revisions = history("deployed", "superseded", "deployed", "failed", "pending-upgrade")
    assert versions(superseded_by(revisions, 5)) == [1, 3]


def test_an_upgrade_also_supersedes_the_failed_revision_it_started_from() -> None:
    revisions = history("superseded", "failed", "pending-upgrade")
    assert versions(superseded_by(revisions, 3)) == []
    assert versions(superseded_by(revisions, 3, upgraded_from=2)) == [2]


@pytest.mark.parametrize(
    ("statuses", "max_history", "pruned"),
    [
        (("superseded", "superseded", "deployed"), 0, []),  # no limit
        (("superseded", "superseded", "deployed"), 4, []),
        (("superseded", "superseded", "deployed"), 3, [1]),  # room for one more
        (("superseded", "superseded", "superseded", "deployed"), 2, [1, 2, 3]),
        # the last deployed one is never pruned, even when it is the oldest
        (("deployed", "failed", "failed", "failed"), 2, [2, 3, 4]),
        (("deployed", "failed", "failed", "failed"), 3, [2, 3]),
        (("failed", "failed"), 1, [1, 2]),
        (("deployed",), 1, []),
    ],
)
def test_max_history_prunes_oldest_first_but_keeps_the_last_deployed(
    statuses: tuple[str, ...], max_history: int, pruned: list[int]
) -> None:
    assert versions(revisions_to_prune(history(*statuses), max_history)) == pruned


statuses = st.sampled_from([s.value for s in Status])


@given(st.lists(statuses, max_size=12), st.integers(1, 8))
def test_pruning_leaves_room_for_one_and_only_ever_the_oldest_go(
    stored_statuses: list[str], max_history: int
) -> None:
    revisions = history(*stored_statuses)
    pruned = versions(revisions_to_prune(revisions, max_history))
    kept = sorted(set(versions(revisions)) - set(pruned))
    deployed = last_deployed(revisions)
    if deployed is not None:
        assert deployed.version in kept
    # Room for the new revision is made (unless the protected one alone fills the limit),
    # and nothing is pruned that did not have to be.
    assert len(kept) == min(len(revisions), max(max_history - 1, 1 if deployed else 0))
    # Everything pruned is older than everything kept (the protected one aside).
    others = [v for v in kept if deployed is None or v != deployed.version]
    assert all(p < k for p in pruned for k in others)


def test_with_status_changes_status_and_optionally_description() -> None:
    release = Release(name="r", version=1, namespace="n", info=Info(status="deployed"))
    superseded = with_status(release, Status.SUPERSEDED)
    assert superseded.status == "superseded"
    assert release.status == "deployed"
    failed = with_status(release, Status.FAILED, "Upgrade failed")
    assert failed.info == Info(status="failed", description="Upgrade failed")


def test_live_revisions_start_at_the_last_deployed_one() -> None:
    # Failed attempts after it may have applied objects of theirs: they count too.
    revisions = history("superseded", "deployed", "failed", "failed")
    assert versions(live_revisions(revisions)) == [2, 3, 4]
    assert versions(live_revisions(history("superseded", "deployed"))) == [2]


def test_live_revisions_without_a_deployed_one_are_all_since_an_uninstall() -> None:
    assert versions(live_revisions(history("failed", "failed"))) == [1, 2]
    assert versions(live_revisions(history("deployed", "uninstalled", "failed"))) == [3]
    assert live_revisions(history("deployed", "uninstalled")) == []
