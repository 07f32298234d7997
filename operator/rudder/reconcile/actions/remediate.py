"""Upgrade retries are spent: roll back to the last deployed revision, or uninstall, once;
then stall until the spec changes.

A rollback is the deploy action of kind ROLLBACK with its target's content: it runs the
pre-/post-rollback hooks and records itself as `helm rollback` does.
"""

from __future__ import annotations

from rudder.observe import metrics
from rudder.reconcile.actions.outcome import waiting
from rudder.reconcile.context import Context, Services
from rudder.reconcile.decide import Action
from rudder.reconcile.deploy import DeployRequest
from rudder.reconcile.deploy_failure import DeployError
from rudder.reconcile.kinds import ROLLBACK
from rudder.reconcile.manager import Outcome
from rudder.reconcile.report import report_release
from rudder.reconcile.uninstall import UninstallRequest
from rudder.release import history
from rudder.release.store import Record, RevisionExists, Stamp


async def remediate(services: Services, ctx: Context) -> Outcome:
    ctx.draft.progressing(ctx.decision.reason)
    await ctx.write_status()
    if ctx.decision.action is Action.UNINSTALL:
        return await _uninstall(services, ctx)
    good = history.last_deployed(ctx.observed.records)
    assert good is not None  # remediate() rolls back only to a deployed revision
    return await _rollback(services, ctx, good)


async def _uninstall(services: Services, ctx: Context) -> Outcome:
    spec = ctx.spec
    request = UninstallRequest(ctx.identity, spec.uninstall, spec.timeout)
    outcome = await services.uninstaller.uninstall(request, ctx.removable_records(), ctx.clients)
    if not outcome.done:
        metrics.record_action("uninstall", "failure")
        ctx.draft.failed("UninstallFailed", outcome.message, stalled=False)
        return Outcome(requeue_after=outcome.retry_after, failed=True)
    message = f"Upgrade retries exhausted; {outcome.message}"
    metrics.record_action("uninstall", "success")
    ctx.draft.condition("Remediated", "True", "UninstallSucceeded", message)
    await services.events.warning(ctx.target.body, "UninstallSucceeded", message)
    return await _stalled(ctx, message)


async def _rollback(services: Services, ctx: Context, good: Record) -> Outcome:
    spec, draft = ctx.spec, ctx.draft
    redact = ctx.redact
    request = DeployRequest(
        kind=ROLLBACK,
        place=ctx.placement,
        chart_archive=b"",
        chart=None,
        chart_name="",
        values=good.release.config,
        stamp=Stamp(
            ctx.target.owner,
            good.chart_digest or "",
            good.values_digest or "",
            ctx.target.generation,
            services.instance,
        ),
        records=ctx.observed.records,
        crds_policy="Skip",
        create_namespace=False,
        take_ownership=False,
        force_conflicts=spec.upgrade.force_conflicts,
        # As Helm's rollback: what an upgrade replaced may have to be replaced back.
        force_replace=spec.upgrade.force_replace,
        max_history=spec.max_history,
        disable_hooks=spec.rollback.disable_hooks,
        disable_wait=spec.rollback.disable_wait,
        timeout=spec.timeout,
        redact=redact,
        cancel=ctx.run.superseded,
        on_progress=lambda report: waiting(ctx, ROLLBACK, report),
        rollback_to=good,
        impersonate=ctx.identity.user,
    )
    try:
        result = await services.deployer.deploy(request, ctx.clients)
    except RevisionExists as error:
        draft.progressing(f"revision {error} was written by another writer; re-reading")
        return Outcome(requeue_after=1.0)
    except DeployError as error:
        message = redact(error.message)
        metrics.record_action(ROLLBACK.verb, "failure")
        if error.transient or error.superseded:
            # Cut short, not failed: the next reconcile rolls back again.
            draft.failed(ROLLBACK.failed_reason, message, stalled=False)
            return Outcome(requeue_after=spec.interval, failed=True)
        draft.condition("Remediated", "False", ROLLBACK.failed_reason, message)
        draft.failed(ROLLBACK.failed_reason, message, stalled=True)
        await services.events.warning(ctx.target.body, ROLLBACK.failed_reason, message)
        await ctx.history()
        report_release(draft, ctx.identity, ctx.observed.records, spec.max_history)
        return Outcome(requeue_after=None)
    message = (
        f"Upgrade retries exhausted; rolled back to revision {good.version} "
        f"as revision {result.release.version}"
    )
    metrics.record_action(ROLLBACK.verb, "success")
    draft.set("resources", result.readiness.as_status() if result.readiness else None)
    draft.condition("Remediated", "True", ROLLBACK.success_reason, message)
    await services.events.warning(ctx.target.body, ROLLBACK.success_reason, message)
    return await _stalled(ctx, message)


async def _stalled(ctx: Context, message: str) -> Outcome:
    await ctx.history()
    report_release(ctx.draft, ctx.identity, ctx.observed.records, ctx.spec.max_history)
    ctx.draft.failed("RetriesExceeded", message, stalled=True)
    return Outcome(requeue_after=None)
