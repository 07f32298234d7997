"""Install or upgrade: pull the chart, deploy, report — and run the tests when asked.

The finalizer goes on right before the first write for the release, so a HelmRelease that
never acted (suspended, chart missing, refused) holds nothing up when it is deleted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable

from rudder.chart.errors import ChartError
from rudder.chart.source import LoadedChart
from rudder.model import APPROVE_ANNOTATION
from rudder.observe import metrics
from rudder.postrender.errors import PostRenderError
from rudder.reconcile.actions.outcome import (
    action_fields,
    announce,
    finish_announcing,
    report_failure,
    waiting,
)
from rudder.reconcile.actions.tests import run_tests
from rudder.reconcile.context import Context, Services, patch_finalizer
from rudder.reconcile.decide import Action
from rudder.reconcile.deploy import DeployRequest, DeployResult
from rudder.reconcile.failures import REPORTED
from rudder.reconcile.kinds import INSTALL, UPGRADE, ActionKind
from rudder.reconcile.manager import Outcome
from rudder.reconcile.preview import compute_preview
from rudder.reconcile.preview_diff import Preview
from rudder.reconcile.report import report_chart, report_release
from rudder.reconcile.status import now
from rudder.release.history import latest
from rudder.release.store import RevisionExists, Stamp

log = logging.getLogger(__name__)

APPROVAL_PENDING = "ApprovalPending"
SPENT_APPROVAL = "lastApprovedDigest"  # status: an approval is used once


async def install_or_upgrade(services: Services, ctx: Context) -> Outcome:
    kind = action_kind(ctx)
    spec, draft, observed = ctx.spec, ctx.draft, ctx.observed
    try:
        chart, request = await prepare_request(services, ctx, kind)
    except (ChartError, PostRenderError) as error:
        return await report_failure(services, ctx, kind, error, time.monotonic())
    assert observed.chart_request is not None
    report_chart(draft, observed.chart_request.status_fields(spec.chart.ref), chart)
    settings = spec.install if kind is INSTALL else spec.upgrade
    manual = needs_approval(ctx, kind)
    if settings.preview or manual:
        held = await _preview_gate(services, ctx, kind, request, manual)
        if held is not None:
            return held
    else:
        draft.set("preview", None)
    if ctx.decision.out_of_band:
        draft.condition("Released", "False", "OutOfBandRevision", ctx.decision.reason)
        await services.events.warning(ctx.target.body, "OutOfBandRevision", ctx.decision.reason)
    if not ctx.target.has_finalizer:
        ctx.target = await patch_finalizer(services, ctx.target, present=True)

    started = time.monotonic()
    # A retry of the same inputs keeps reporting its last failure until it succeeds, so a
    # release that keeps failing the same way does not write status each time.
    pending = None
    if not observed.attempts.same_inputs:
        message = f"Running {kind.verb} of {spec.release_name}: {ctx.decision.reason}"
        pending = announce(ctx, message)
    try:
        result = await _announced(pending, services.deployer.deploy(request, ctx.clients))
    except RevisionExists as error:
        draft.progressing(f"revision {error} was written by another writer; re-reading")
        return Outcome(requeue_after=1.0)
    except REPORTED as error:
        metrics.record_action(kind.verb, "failure", time.monotonic() - started)
        return await report_failure(services, ctx, kind, error, started)
    name = f"{chart.metadata.name}:{chart.metadata.version}"
    return await _succeeded(services, ctx, kind, result, started, name)


async def _preview_gate(
    services: Services, ctx: Context, kind: ActionKind, request: DeployRequest, manual: bool
) -> Outcome | None:
    """Compute the preview into status; with manual approval, hold the action (an Outcome)
    unless the approved digest is the digest of this fresh preview."""
    started = time.monotonic()
    try:
        preview = await preview_of(services, ctx, request)
    except REPORTED as error:
        return await report_failure(services, ctx, kind, error, started)
    draft, target = ctx.draft, ctx.target
    shown = draft.fields.get("preview") or {}
    computed_at = shown.get("computedAt") if shown.get("digest") == preview.digest else None
    draft.set("preview", preview.as_status(computed_at or now().isoformat().replace("+00:00", "Z")))
    approved = target.approved
    if not manual:
        return None
    if approved == preview.digest and approved != draft.fields.get(SPENT_APPROVAL):
        # Spent by this action whatever its outcome (its retries need no new approval).
        draft.set(SPENT_APPROVAL, approved)
        message = f"approved preview {preview.digest}: {preview.summary()}"
        await services.events.normal(target.body, "Approved", message)
        return None
    message = (
        f"{kind.verb} of {ctx.spec.release_name} to revision {preview.revision} waits for "
        f"approval ({preview.summary()}); approve with `rudder approve -n {target.namespace} "
        f"{target.name}` (annotation {APPROVE_ANNOTATION}={preview.digest})"
    )
    if approved and approved == draft.fields.get(SPENT_APPROVAL):
        message = f"the approval of {approved} was used by an earlier action; {message}"
    elif approved:
        message = (
            f"the approval of {approved} does not match the current preview (the chart, the "
            f"values, the spec or the live objects changed since); {message}"
        )
    ready = draft.get("Ready")
    if ready is None or ready.reason != APPROVAL_PENDING or ready.message != message:
        await services.events.normal(target.body, APPROVAL_PENDING, message)
    draft.condition("Ready", "False", APPROVAL_PENDING, message)
    draft.drop("Reconciling")
    draft.drop("Stalled")
    return Outcome(requeue_after=ctx.spec.interval)


async def preview_of(services: Services, ctx: Context, request: DeployRequest) -> Preview:
    """The preview of the action `request` describes, for this HelmRelease (its generation
    is part of the digest; its test hooks are listed when tests run after the action)."""
    return await compute_preview(
        services.deployer,
        request,
        ctx.clients,
        generation=ctx.target.generation,
        tests=ctx.spec.test.enable,
    )


def needs_approval(ctx: Context, kind: ActionKind) -> bool:
    """Manual approval applies to this action: not to a retry of inputs whose action already
    ran (approved then; remediation is never gated either). A release that was installed
    before — uninstalled since, by remediation or by hand — is installed again under the
    upgrade's rule, not as a first install."""
    spec, attempts = ctx.spec, ctx.observed.attempts
    if kind is UPGRADE:
        return spec.upgrade.approval == "manual" and attempts.upgrade_failures == 0
    installed_before = bool(ctx.draft.fields.get("release"))
    manual = spec.install.approval == "manual" or (
        installed_before and spec.upgrade.approval == "manual"
    )
    return manual and attempts.install_failures == 0


def action_kind(ctx: Context) -> ActionKind:
    return INSTALL if ctx.decision.action is Action.INSTALL else UPGRADE


async def prepare_request(
    services: Services, ctx: Context, kind: ActionKind
) -> tuple[LoadedChart, DeployRequest]:
    """The chart, and the request the action runs (and a preview computes) with the
    post-renderers; ChartError or PostRenderError."""
    observed = ctx.observed
    assert observed.chart_request is not None
    chart = await services.charts.get(observed.chart_request)
    job = await services.post_renderer.prepare(ctx.spec, observed.plugin_requests, ctx.target.owner)
    request = _deploy_request(services, ctx, kind, chart)
    if job is not None:
        request = dataclasses.replace(
            request, post_render=functools.partial(services.post_renderer.run, job)
        )
    return chart, request


def _deploy_request(
    services: Services, ctx: Context, kind: ActionKind, chart: LoadedChart
) -> DeployRequest:
    spec, observed = ctx.spec, ctx.observed
    assert observed.values is not None
    settings = spec.install if kind is INSTALL else spec.upgrade
    previous = latest(observed.records)
    return DeployRequest(
        kind=kind,
        place=ctx.placement,
        chart_archive=chart.archive,
        chart=chart.chart,
        chart_name=chart.metadata.name,
        values=observed.values.values,
        stamp=Stamp(
            ctx.target.owner,
            chart.digest,
            observed.values.digest,
            ctx.target.generation,
            services.instance,
        ),
        records=observed.records,
        crds_policy=settings.crds,
        create_namespace=spec.install.create_namespace and kind is INSTALL,
        take_ownership=settings.take_ownership,
        force_conflicts=spec.upgrade.force_conflicts,
        force_replace=spec.upgrade.force_replace and kind is UPGRADE,
        max_history=spec.max_history,
        take_over_from=services.config.takeover_managers if ctx.decision.out_of_band else (),
        disable_hooks=settings.disable_hooks,
        disable_wait=settings.disable_wait,
        cancel=ctx.run.superseded,
        on_progress=lambda report: waiting(ctx, kind, report),
        redact=observed.values.redact,
        timeout=spec.timeout,
        impersonate=ctx.identity.user,
        skip_unchanged=(
            kind is UPGRADE
            and not ctx.decision.out_of_band
            and previous is not None
            and previous.status == "deployed"
        ),
    )


async def _announced(
    pending: asyncio.Task[None] | None, deploy: Awaitable[DeployResult]
) -> DeployResult:
    try:
        return await deploy
    finally:
        await finish_announcing(pending)


async def _succeeded(
    services: Services,
    ctx: Context,
    kind: ActionKind,
    result: DeployResult,
    started: float,
    chart_name: str,
) -> Outcome:
    spec, draft = ctx.spec, ctx.draft
    redact = ctx.redact
    metrics.record_action(kind.verb, "success", time.monotonic() - started)
    draft.set("conflicts", None)
    draft.drop("Conflicted")
    draft.set("resources", result.readiness.as_status() if result.readiness else None)
    report_release(draft, ctx.identity, result.records, spec.max_history)
    message = f"{kind.done} {spec.release_name} revision {result.release.version} ({chart_name})"
    if ctx.decision.out_of_band:
        message += f"; re-converged to the spec after {ctx.decision.reason}"
    for ref in result.replaced:
        await services.events.normal(
            ctx.target.body, "Replaced", f"{ref} deleted and re-created (forceReplace)"
        )
    if result.replaced:
        message += "; replaced " + ", ".join(str(ref) for ref in result.replaced)
    draft.condition("Released", "True", kind.success_reason, message)
    await services.events.normal(ctx.target.body, kind.success_reason, message)
    log.info(
        "%s/%s: %s",
        ctx.target.namespace,
        ctx.target.name,
        message,
        extra=action_fields(ctx, kind.verb, "success", result.release.version, started),
    )
    if not spec.test.enable:
        draft.drop("TestSuccess")
        draft.ready(kind.success_reason, message)
        return Outcome(requeue_after=spec.interval)
    passed, test_message = await run_tests(services, ctx, result)
    test_message = redact(test_message)
    draft.condition(
        "TestSuccess",
        "True" if passed else "False",
        "TestSucceeded" if passed else "TestFailed",
        test_message,
    )
    if not passed and not spec.test.ignore_failures:
        draft.failed("TestFailed", test_message, stalled=True)
        return Outcome(requeue_after=spec.interval)
    draft.ready(kind.success_reason, message)
    return Outcome(requeue_after=spec.interval)
