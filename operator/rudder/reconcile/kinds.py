"""The kinds of release action, and everything that differs between them as data: Helm's
words for them, the hooks they run, the statuses they record, their condition reasons,
counters and metric label. Code asks the kind; it never compares action names.
"""

from __future__ import annotations

from dataclasses import dataclass

from rudder.reconcile.hook_events import (
    POST_INSTALL,
    POST_ROLLBACK,
    POST_UPGRADE,
    PRE_INSTALL,
    PRE_ROLLBACK,
    PRE_UPGRADE,
)


@dataclass(frozen=True)
class ActionKind:
    verb: str  # metric label and log field: install, upgrade, rollback, ...
    noun: str  # Helm's word in descriptions: "Upgrade failed: ..."
    pending_status: str
    hook_events: tuple[str, str]  # (pre, post)
    description: str  # the deployed revision's description, as Helm writes it
    in_progress: str  # the pending revision's description ({target}: rollback target)
    failed_prefix: str  # a failed hook's description starts with this ({release})
    success_reason: str
    failed_reason: str
    done: str  # "Installed", for messages
    counter: str | None  # the status counter a counted failure adds to

    def describe_pending(self, target_version: int | None = None) -> str:
        return self.in_progress.format(target=target_version)

    def describe_done(self, target_version: int | None = None) -> str:
        return self.description.format(target=target_version)


INSTALL = ActionKind(
    verb="install",
    noun="Install",
    pending_status="pending-install",
    hook_events=(PRE_INSTALL, POST_INSTALL),
    description="Install complete",
    in_progress="Initial install underway",
    failed_prefix='Release "{release}" failed: ',
    success_reason="InstallSucceeded",
    failed_reason="InstallFailed",
    done="Installed",
    counter="installFailures",
)
UPGRADE = ActionKind(
    verb="upgrade",
    noun="Upgrade",
    pending_status="pending-upgrade",
    hook_events=(PRE_UPGRADE, POST_UPGRADE),
    description="Upgrade complete",
    in_progress="Preparing upgrade",
    failed_prefix='Upgrade "{release}" failed: ',
    success_reason="UpgradeSucceeded",
    failed_reason="UpgradeFailed",
    done="Upgraded",
    counter="upgradeFailures",
)
ROLLBACK = ActionKind(
    verb="rollback",
    noun="Rollback",
    pending_status="pending-rollback",
    hook_events=(PRE_ROLLBACK, POST_ROLLBACK),
    description="Rollback to {target}",
    in_progress="Rollback to {target}",
    failed_prefix='Rollback "{release}" failed: ',
    success_reason="RollbackSucceeded",
    failed_reason="RollbackFailed",
    done="Rolled back",
    counter=None,  # remediation runs once; it is not retried
)
