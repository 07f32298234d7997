"""Decide the next action from what was observed — pure functions, unit-tested per branch.

`next_action(observed)` is the whole decision: deletion first (uninstall only a release this
HelmRelease wrote, let go of everything else), then what blocks acting on the release (an
invalid spec, suspension, a dependency, the chart or values), then the release's own state
(`decide`: install, upgrade, unlock, wait, refuse, in sync) and the retry and remediation
policy (`remediate`). Like Flux's state classification, every case is explicit.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from rudder.reconcile.failures import Failure
from rudder.reconcile.observed import Attempts, Desired, Observed, RemediationPolicy
from rudder.release.history import PENDING, last_deployed, latest
from rudder.release.store import Owner, Record

__all__ = [
    "Action",
    "Attempts",
    "Decision",
    "Desired",
    "RemediationPolicy",
    "decide",
    "drives",
    "next_action",
    "remediate",
]


class Action(enum.Enum):
    FORGET = "forget"  # deleted, and rudder's finalizer is not on it: nothing to do
    FINALIZE = "finalize"  # deleted: uninstall the release it drives, then let go
    LET_GO = "let-go"  # deleted: remove the finalizer, uninstall nothing (reason says why)
    BLOCKED = "blocked"  # invalid spec, dependency, chart or values: report, touch nothing
    SUSPENDED = "suspended"
    NONE = "none"  # in sync: nothing to write
    INSTALL = "install"
    UPGRADE = "upgrade"
    UNLOCK = "unlock"  # a stale pending revision of ours: mark it failed, then go on
    WAIT = "wait"  # someone else (the Helm CLI, another rudder) is mid-action
    REFUSE = "refuse"  # the release belongs to another HelmRelease
    ROLLBACK = "rollback"  # remediation: back to the last deployed revision
    UNINSTALL = "uninstall"  # remediation: remove the failed release
    STALL = "stall"  # these inputs failed and retries are spent: wait for a new spec


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    out_of_band: bool = False  # the newest revision was not written by rudder
    failure: Failure | None = None  # BLOCKED: what to report
    warning: bool = False  # LET_GO: say it as a Warning event


def drives(records: Sequence[Record], owner: Owner) -> bool:
    """Does `owner` drive this release: it wrote at least one revision, and no other
    HelmRelease has written one since? (Helm CLI revisions carry no owner, or copy ours.)"""
    # Only revisions since the last uninstall say who drives the release now.
    since = [r for r in records if r.version > _last_uninstalled(records)]
    owned = [r for r in since if r.owner is not None]
    newest = max(owned, key=lambda r: r.version, default=None)
    return (
        newest is not None
        and newest.owner == owner
        and any(r.owner == owner and r.written_by_rudder for r in since)
    )


def next_action(observed: Observed) -> Decision:
    if observed.deleting:
        return _deletion(observed)
    if observed.spec is None or (observed.blocked and observed.blocked.reason == "InvalidSpec"):
        assert observed.blocked is not None
        return Decision(Action.BLOCKED, observed.blocked.message, failure=observed.blocked)
    if observed.spec.suspend:
        return Decision(Action.SUSPENDED, "Reconciliation is suspended (spec.suspend)")
    if observed.blocked is not None:
        return Decision(Action.BLOCKED, observed.blocked.message, failure=observed.blocked)
    assert observed.desired is not None
    decision = decide(observed.desired, observed.records)
    if decision.action is Action.UNLOCK:
        return decision
    policy = RemediationPolicy.of(observed.spec)
    return remediate(decision, observed.records, observed.attempts, policy)


def _deletion(observed: Observed) -> Decision:
    if not observed.has_finalizer:
        return Decision(Action.FORGET, "deleted")
    if observed.spec is not None and observed.spec.suspend:
        return Decision(
            Action.LET_GO,
            f"the HelmRelease is suspended: release {observed.spec.release_name} was left "
            "as it is, nothing uninstalled",
        )
    identity = observed.identity
    if identity is None:
        why = observed.blocked.message if observed.blocked else "no release identity"
        return Decision(
            Action.LET_GO,
            f"the spec is invalid ({why}) and status records no release: nothing uninstalled",
            warning=True,
        )
    if not drives(observed.records, observed.owner):
        return Decision(
            Action.LET_GO,
            f"release {identity.release_name} in {identity.storage_namespace} has no "
            "revision written by this HelmRelease: left as it is, nothing uninstalled",
        )
    return Decision(Action.FINALIZE, f"uninstalling release {identity.release_name}")


def decide(desired: Desired, records: Sequence[Record]) -> Decision:
    current = latest(records)
    if current is None:
        return Decision(Action.INSTALL, "no release exists yet")

    if current.status == "uninstalled":
        # As `helm upgrade --install`: an uninstalled release (history kept) is installed
        # again, whoever drove it before.
        return Decision(Action.INSTALL, "the release was uninstalled (history kept)")

    # Only revisions since the last uninstall say who drives the release now.
    since = [r for r in records if r.version > _last_uninstalled(records)]
    foreign = next(
        (r.owner for r in reversed(since) if r.owner is not None and r.owner != desired.owner),
        None,
    )
    if foreign is not None:
        return Decision(Action.REFUSE, f"release is driven by HelmRelease {foreign}")

    ours = current.owner == desired.owner and current.written_by_rudder
    if current.status in PENDING:
        if not ours:
            return Decision(
                Action.WAIT,
                f"revision {current.version} is {current.status} "
                "(written by another client, e.g. a running helm command)",
            )
        # One worker per HelmRelease, and a HelmRelease drives its release alone: a pending
        # revision of ours at the start of a reconcile belongs to an attempt that is over
        # (a crashed process, a lost leader, an API failure mid-action).
        return Decision(
            Action.UNLOCK,
            f"revision {current.version} was left {current.status} by an earlier attempt",
        )

    if not ours:
        return Decision(
            Action.UPGRADE,
            f"revision {current.version} was written outside rudder (e.g. by the helm CLI)",
            out_of_band=True,
        )

    if current.chart_digest != desired.chart_digest:
        return Decision(Action.UPGRADE, "the chart changed")
    if current.values_digest != desired.values_digest:
        return Decision(Action.UPGRADE, "the values changed")
    if current.status == "failed" and current.interrupted:
        # Cut short, not failed: never left half-done (not a remediation attempt).
        action = Action.INSTALL if last_deployed(records) is None else Action.UPGRADE
        return Decision(action, f"revision {current.version} was interrupted; trying again")
    if current.status == "deployed":
        return Decision(Action.NONE, f"revision {current.version} is deployed and in sync")
    # failed (or superseded by hand): same inputs; retrying is remediation's decision.
    return Decision(Action.NONE, f"revision {current.version} is {current.status}")


def _last_uninstalled(records: Sequence[Record]) -> int:
    return max((r.version for r in records if r.status == "uninstalled"), default=0)


def remediate(
    decision: Decision,
    records: Sequence[Record],
    attempts: Attempts,
    policy: RemediationPolicy,
) -> Decision:
    """Apply the retry and remediation policy to a decision (as Flux's remediation does):
    a failed action with retries left is tried again; once they are spent, a failed
    upgrade is remediated once (rollback or uninstall, only when retries were configured)
    and then nothing more is tried with the same inputs."""
    current = latest(records)
    failed = decision.action is Action.NONE and current is not None and current.status == "failed"
    if not attempts.same_inputs:
        if failed:
            assert current is not None
            # A failure status does not remember (an interrupted or superseded attempt, or
            # a spec change that kept the digests): try once more.
            action = Action.UPGRADE if last_deployed(records) else Action.INSTALL
            return Decision(action, f"revision {current.version} failed; trying again")
        return decision
    if failed:
        return _after_failure(records, attempts, policy)
    if decision.action in (Action.INSTALL, Action.UPGRADE):
        return _unless_spent(decision, records, attempts, policy)
    return decision


def _after_failure(
    records: Sequence[Record], attempts: Attempts, policy: RemediationPolicy
) -> Decision:
    """The same inputs failed: retry while retries are left, then remediate once."""
    good = last_deployed(records)
    if good is None:
        if attempts.install_failures <= policy.install_retries and policy.install_retries:
            return Decision(
                Action.INSTALL,
                f"retrying the install ({attempts.install_failures}/{policy.install_retries})",
            )
        return Decision(
            Action.STALL,
            f"install failed {attempts.install_failures} time(s); retries exhausted",
        )
    if attempts.upgrade_failures <= policy.upgrade_retries and policy.upgrade_retries:
        return Decision(
            Action.UPGRADE,
            f"retrying the upgrade ({attempts.upgrade_failures}/{policy.upgrade_retries})",
        )
    if policy.upgrade_retries:
        if policy.upgrade_strategy == "uninstall":
            return Decision(Action.UNINSTALL, "upgrade retries exhausted: uninstalling")
        return Decision(
            Action.ROLLBACK,
            f"upgrade retries exhausted: rolling back to revision {good.version}",
        )
    return Decision(Action.STALL, f"upgrade failed {attempts.upgrade_failures} time(s)")


def _unless_spent(
    decision: Decision, records: Sequence[Record], attempts: Attempts, policy: RemediationPolicy
) -> Decision:
    """An install or upgrade of inputs whose retries are spent (and that were remediated)
    stalls; an interrupted remediation rollback is done again."""
    current, good = latest(records), last_deployed(records)
    failures = attempts.install_failures if good is None else attempts.upgrade_failures
    retries = policy.install_retries if good is None else policy.upgrade_retries
    remediated_by_uninstall = (
        policy.upgrade_retries > 0
        and policy.upgrade_strategy == "uninstall"
        and attempts.upgrade_failures > policy.upgrade_retries
    )
    if good is None and remediated_by_uninstall:
        # Upgrades of these inputs failed and remediation uninstalled the release
        # (history not kept): installing them again would start the loop over.
        failures, retries = attempts.upgrade_failures, policy.upgrade_retries
    if failures <= retries:
        return decision
    rolling_back = policy.upgrade_retries > 0 and policy.upgrade_strategy == "rollback"
    if good is not None and current is not None and current.interrupted and rolling_back:
        # Retries were spent, so the attempt cut short was the remediation rollback
        # itself (a crash, the API server away): roll back again, never stall halfway.
        return Decision(
            Action.ROLLBACK,
            f"the rollback to revision {good.version} was interrupted; rolling back again",
        )
    return Decision(
        Action.STALL,
        f"these inputs failed {failures} time(s) and were remediated; change the spec to try again",
    )
