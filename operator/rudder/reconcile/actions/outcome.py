"""How an action's failure lands in status, and the delayed "Running" announcement.

Every failure goes through `failures.classify` (one table: reason, stalled, counted) and
then through here, so each is reported the same way: Ready=False with its reason, Stalled
or a retry, the counters when a failed revision was written, an event, a log line.
"""

from __future__ import annotations

import asyncio
import logging
import time

from rudder.chart.errors import ChartError
from rudder.chart.render import RenderError
from rudder.kube.readiness import ReadinessReport
from rudder.model import HelmReleaseSpec
from rudder.postrender.errors import PostRenderError
from rudder.reconcile.context import Context, Services
from rudder.reconcile.deploy_failure import DeployError
from rudder.reconcile.failures import classify
from rudder.reconcile.kinds import INSTALL, UPGRADE, ActionKind
from rudder.reconcile.manager import Outcome
from rudder.reconcile.report import report_release

log = logging.getLogger(__name__)

# An action that takes longer than this says so in status (Reconciling); one that ends
# sooner writes its status once, at the end.
ANNOUNCE_AFTER = 2.0


def announce(ctx: Context, message: str) -> asyncio.Task[None]:
    async def later() -> None:
        await asyncio.sleep(ANNOUNCE_AFTER)
        ctx.draft.progressing(message)
        await ctx.write_status()

    return asyncio.create_task(later())


async def finish_announcing(pending: asyncio.Task[None] | None) -> None:
    """Drop a pending announcement once the action is over."""
    if pending is None:
        return
    pending.cancel()
    try:
        await pending
    except asyncio.CancelledError:
        pass
    except Exception as error:
        # A failed progress write must not replace the action's own result or error; the
        # final status write reports the outcome.
        log.warning("writing the progress status failed: %s", error)


def action_fields(
    ctx: Context, action: str, result: str, revision: int | None, started: float
) -> dict[str, object]:
    """The structured fields of an action's log line (never values or Secret data)."""
    return {
        "release": ctx.identity.release_name,
        "release_namespace": ctx.identity.storage_namespace,
        "action": action,
        "result": result,
        "revision": revision,
        "duration": round(time.monotonic() - started, 3),
    }


def remediable(spec: HelmReleaseSpec, kind: ActionKind) -> bool:
    if kind is INSTALL:
        return spec.install.remediation.retries > 0
    if kind is UPGRADE:
        return spec.upgrade.remediation.retries > 0
    return False


async def report_failure(
    services: Services, ctx: Context, kind: ActionKind, error: BaseException, started: float
) -> Outcome:
    draft, spec = ctx.draft, ctx.spec
    redact = ctx.redact
    failure = classify(error, redact)
    # A counted failure with remediation configured is not the end: the next reconcile
    # retries or remediates it (a failed hook included), so a retry is scheduled.
    stalled = failure.stalled and not (failure.counted and remediable(spec, kind))
    if isinstance(error, DeployError):
        log.warning(
            "%s/%s: %s failed (%s)",
            ctx.target.namespace,
            ctx.target.name,
            kind.verb,
            error.reason,
            extra=action_fields(ctx, kind.verb, "failure", None, started),
        )
        if error.superseded:
            # Not an attempt that failed: the next reconcile starts over afresh.
            draft.set("lastAttempted", None)
            draft.progressing(failure.message)
            return Outcome(requeue_after=0.0)
        if error.readiness is not None:
            draft.set("resources", error.readiness.as_status())
        if error.stage is not None and error.stage.conflicts:
            draft.set("conflicts", [c.as_status() for c in error.stage.conflicts])
            draft.condition("Conflicted", "True", "ApplyConflict", failure.message)
            stalled = not spec.upgrade.force_conflicts
        if error.recorded:
            draft.condition("Released", "False", kind.failed_reason, failure.message)
            await ctx.history()
            report_release(draft, ctx.identity, ctx.observed.records, spec.max_history)
    elif isinstance(error, RenderError | PostRenderError):
        draft.condition("Released", "False", failure.reason, failure.message)
    if failure.counted and kind.counter is not None:
        draft.set(kind.counter, int(draft.fields.get(kind.counter, 0)) + 1)
        draft.set("failures", int(draft.fields.get("failures", 0)) + 1)
    draft.failed(failure.reason, failure.message, stalled=stalled)
    if not isinstance(error, ChartError):  # the chart's reasons are in status alone
        await services.events.warning(ctx.target.body, failure.reason, failure.message)
    if stalled:
        return Outcome(requeue_after=None)
    return Outcome(requeue_after=spec.interval, failed=True)


async def waiting(ctx: Context, kind: ActionKind, report: ReadinessReport) -> None:
    """While the readiness wait runs: say what it waits for (written only on change)."""
    ctx.draft.progressing(f"Waiting for the {kind.verb} to become ready: {report.summary()}")
    ctx.draft.set("resources", report.as_status())
    await ctx.write_status()
