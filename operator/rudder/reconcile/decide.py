"""Decide the next release action from what was observed — a pure function.

Inputs are the desired chart and values digests, the stored revisions (as listed, not
decoded) and who rudder is; the output is one action with the reason for it. Like Flux's
state classification, every case is explicit and unit-tested without a cluster.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from rudder.release.history import PENDING, last_deployed, latest
from rudder.release.store import Owner, Record


class Action(enum.Enum):
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


@dataclass(frozen=True)
class Desired:
    owner: Owner
    chart_digest: str
    values_digest: str


def decide(desired: Desired, records: Sequence[Record]) -> Decision:
    current = latest(records)
    if current is None:
        return Decision(Action.INSTALL, "no release exists yet")

    foreign = next(
        (r.owner for r in reversed(records) if r.owner is not None and r.owner != desired.owner),
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

    if current.status == "uninstalled":
        return Decision(Action.INSTALL, "the release was uninstalled (history kept)")

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


@dataclass(frozen=True)
class Attempts:
    """What status remembers of earlier attempts at the same inputs."""

    same_inputs: bool  # lastAttempted is this generation, chart digest and values digest
    install_failures: int
    upgrade_failures: int


@dataclass(frozen=True)
class RemediationPolicy:
    install_retries: int
    upgrade_retries: int
    upgrade_strategy: str  # rollback | uninstall


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
    good = last_deployed(records)
    deployed_before = good is not None
    if not attempts.same_inputs:
        if decision.action is Action.NONE and current is not None and current.status == "failed":
            # A failure status does not remember (an interrupted or superseded attempt, or
            # a spec change that kept the digests): try once more.
            action = Action.UPGRADE if deployed_before else Action.INSTALL
            return Decision(action, f"revision {current.version} failed; trying again")
        return decision
    if decision.action is Action.NONE and current is not None and current.status == "failed":
        if not deployed_before:
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
        if policy.upgrade_retries and good is not None:
            if policy.upgrade_strategy == "uninstall":
                return Decision(Action.UNINSTALL, "upgrade retries exhausted: uninstalling")
            return Decision(
                Action.ROLLBACK,
                f"upgrade retries exhausted: rolling back to revision {good.version}",
            )
        return Decision(Action.STALL, f"upgrade failed {attempts.upgrade_failures} time(s)")
    if decision.action in (Action.INSTALL, Action.UPGRADE):
        failures = attempts.install_failures if not deployed_before else attempts.upgrade_failures
        retries = policy.install_retries if not deployed_before else policy.upgrade_retries
        if failures > retries:
            return Decision(
                Action.STALL,
                f"these inputs failed {failures} time(s) and were "
                "remediated; change the spec to try again",
            )
    return decision
