"""How an install, upgrade or rollback fails: `DeployError`, and what an exception raised
after the pending revision was written means for that revision (`as_deploy_error`).

Only errors of the API connection, the API server's 429/5xx answers and a denial of a write
the dry-run allowed are transient (the revision is marked interrupted and retried outside the
remediation counters); a local failure — a CRD never Established, a kind still unknown, a
bug — is the release's own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from rudder.kube.client import TRANSPORT_ERRORS, ApiError
from rudder.kube.readiness import Outcome as ReadinessOutcome
from rudder.kube.readiness import ReadinessReport
from rudder.kube.ssa import StageRejected
from rudder.reconcile.hook_events import action_message
from rudder.reconcile.hook_runner import HookFailed
from rudder.reconcile.kinds import ActionKind
from rudder.reconcile.plan import PlanError
from rudder.reconcile.prove import rejected_reason
from rudder.reconcile.replace import REPLACE_FAILED, ReplaceTimeout

log = logging.getLogger(__name__)

TRANSIENT_CODES = frozenset({429, 500, 502, 503, 504})


class NotReady(Exception):
    def __init__(self, report: ReadinessReport) -> None:
        super().__init__(report.message())
        self.report = report


class CRDNotEstablished(Exception):
    """A CRD the release applied was not Established in time (its names clash, say)."""


class DeployError(Exception):
    """The action failed; `reason` is the condition reason, `message` names the cause.
    `recorded` tells whether a failed revision was written (the cluster was touched);
    `transient` that the API server failed (unreachable, 429, 5xx), not the release."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        recorded: bool = False,
        stage: StageRejected | None = None,
        retriable: bool = False,
        superseded: bool = False,
        readiness: ReadinessReport | None = None,
        transient: bool = False,
    ) -> None:
        super().__init__(message)
        self.superseded = superseded
        self.transient = transient
        self.readiness = readiness
        self.reason = reason
        self.message = message
        self.recorded = recorded
        self.stage = stage
        self.retriable = retriable


def as_deploy_error(
    error: Exception, kind: ActionKind, release_name: str, redact: Callable[[str], str]
) -> DeployError:
    """What a failure after the pending record was written means."""
    if isinstance(error, StageRejected):
        # RBAC refusing a write whose dry-run it allowed moments ago is the authorizer
        # changing under the action (an API server that has just restarted denies until its
        # RBAC cache has synced): the revision was cut short, not failed by the chart. Its
        # retry proves the revision again before writing one, so a lasting denial is
        # reported by that dry-run, with no new revision per retry.
        return DeployError(
            rejected_reason(error),
            str(error),
            recorded=True,
            stage=error,
            transient=not error.dry_run and error.only_denied,
        )
    if isinstance(error, NotReady):
        report = error.report
        if report.outcome is ReadinessOutcome.CANCELLED:
            return DeployError(
                "Progressing",
                "a newer generation of the HelmRelease arrived; starting over",
                recorded=True,
                retriable=True,
                superseded=True,
            )
        return DeployError(
            kind.failed_reason,
            redact(report.message()),
            recorded=True,
            retriable=report.outcome is ReadinessOutcome.TIMEOUT,
            readiness=report,
        )
    if isinstance(error, HookFailed):
        prefix = kind.failed_prefix.format(release=release_name)
        message = prefix + redact(action_message(error.event, error.message))
        return DeployError(kind.failed_reason, message, recorded=True)
    if isinstance(error, ReplaceTimeout):
        # Deleted to be re-created, and still there (a finalizer, a long grace period).
        return DeployError(REPLACE_FAILED, str(error), recorded=True, retriable=True)
    if isinstance(error, CRDNotEstablished):
        # A counted failure that remediation and retries apply to, not an outage.
        return DeployError("CRDNotEstablished", str(error), recorded=True, retriable=True)
    if isinstance(error, PlanError):
        return DeployError(error.reason, redact(error.message), recorded=True)
    if isinstance(error, (ApiError, *TRANSPORT_ERRORS)):
        transient = is_transient(error)
        return DeployError(
            kind.failed_reason,
            redact(str(error)),
            recorded=True,
            retriable=True,
            transient=transient,
        )
    log.exception("%s of %s failed unexpectedly", kind.verb, release_name)
    return DeployError(
        kind.failed_reason, f"{type(error).__name__}: {error}", recorded=True, retriable=True
    )


def is_transient(error: BaseException) -> bool:
    """An error of the API server or the connection to it, not of what was sent."""
    if isinstance(error, ApiError):
        return error.code in TRANSIENT_CODES
    return isinstance(error, TRANSPORT_ERRORS)
