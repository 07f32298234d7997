"""Actions that only report: blocked, suspended, refused, waiting, stalled, in sync.

None of them writes anything for the release; the one status write (or none, when status
already says it) happens after the action. In sync also runs the drift check.
"""

from __future__ import annotations

from rudder.reconcile.actions.drift_check import check_drift
from rudder.reconcile.context import Context, Services
from rudder.reconcile.kinds import INSTALL, ROLLBACK, UPGRADE
from rudder.reconcile.manager import Outcome
from rudder.reconcile.report import report_release
from rudder.release import history
from rudder.release.history import latest

WAIT_FOR_OTHER_WRITER = 15.0


async def blocked(services: Services, ctx: Context) -> Outcome:
    failure = ctx.decision.failure
    assert failure is not None
    ctx.draft.failed(failure.reason, failure.message, stalled=failure.stalled)
    if failure.stalled:
        return Outcome(requeue_after=None)
    if failure.retry_after is not None:
        return Outcome(requeue_after=failure.retry_after)
    return Outcome(requeue_after=ctx.spec.interval, failed=True)


async def suspended(services: Services, ctx: Context) -> Outcome:
    ready = ctx.draft.get("Ready")
    ctx.draft.condition(
        "Ready",
        ready.status if ready else "Unknown",
        "Suspended",
        "Reconciliation is suspended (spec.suspend); nothing is changed",
    )
    ctx.draft.drop("Reconciling")
    return Outcome(requeue_after=None)


async def refuse(services: Services, ctx: Context) -> Outcome:
    ctx.draft.failed("ReleaseOwnedElsewhere", ctx.decision.reason, stalled=True)
    return Outcome(requeue_after=None)


async def wait(services: Services, ctx: Context) -> Outcome:
    ctx.draft.progressing(ctx.decision.reason)
    return Outcome(requeue_after=WAIT_FOR_OTHER_WRITER)


async def stall(services: Services, ctx: Context) -> Outcome:
    report_release(ctx.draft, ctx.identity, ctx.observed.records, ctx.spec.max_history)
    ready = ctx.draft.get("Ready")
    # A failed remediation rollback keeps saying so; anything else is "retries exceeded".
    if ready is None or ready.reason not in ("RetriesExceeded", ROLLBACK.failed_reason):
        ctx.draft.failed("RetriesExceeded", ctx.decision.reason, stalled=True)
    else:
        ctx.draft.failed(ready.reason, ready.message, stalled=True)
    return Outcome(requeue_after=None)


async def in_sync(services: Services, ctx: Context) -> Outcome:
    """Nothing to install or upgrade: report the release, check drift when deployed, and
    keep reporting a failure of these same inputs until remediation's policy changes it."""
    spec, draft, records = ctx.spec, ctx.draft, ctx.observed.records
    report_release(draft, ctx.identity, records, spec.max_history)
    current = latest(records)
    ready = draft.get("Ready")
    if current is not None and current.status == "deployed":
        await check_drift(services, ctx, current)
        if ready is not None and ready.status == "True":
            draft.ready(ready.reason, ready.message)  # same words, this generation
        else:
            draft.ready(
                (INSTALL if current.version == 1 else UPGRADE).success_reason,
                f"Release {spec.release_name} revision {current.version} is deployed",
            )
    elif current is not None and current.status == "failed":
        # The same inputs failed before; trying them again is remediation's call.
        kind = INSTALL if history.last_deployed(records) is None else UPGRADE
        reason = kind.failed_reason
        if ready is None or ready.status != "False":
            draft.failed(
                reason,
                f"Revision {current.version} failed: {current.summary.description}",
                stalled=True,
            )
        else:
            draft.failed(ready.reason, ready.message, stalled=True)
    return Outcome(requeue_after=spec.interval)
