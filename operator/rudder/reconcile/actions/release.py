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
from rudder.reconcile.report import report_chart, report_release
from rudder.release.history import latest
from rudder.release.store import RevisionExists, Stamp

log = logging.getLogger(__name__)


async def install_or_upgrade(services: Services, ctx: Context) -> Outcome:
    kind = INSTALL if ctx.decision.action is Action.INSTALL else UPGRADE
    spec, draft, observed = ctx.spec, ctx.draft, ctx.observed
    assert observed.chart_request is not None
    assert observed.values is not None
    try:
        chart = await services.charts.get(observed.chart_request)
        job = await services.post_renderer.prepare(spec, observed.plugin_requests, ctx.target.owner)
    except (ChartError, PostRenderError) as error:
        return await report_failure(services, ctx, kind, error, time.monotonic())
    report_chart(draft, observed.chart_request.status_fields(spec.chart.ref), chart)
    if ctx.decision.out_of_band:
        draft.condition("Released", "False", "OutOfBandRevision", ctx.decision.reason)
        await services.events.warning(ctx.target.body, "OutOfBandRevision", ctx.decision.reason)
    if not ctx.target.has_finalizer:
        ctx.target = await patch_finalizer(services.kube, ctx.target, present=True)

    request = _deploy_request(services, ctx, kind, chart)
    if job is not None:
        request = dataclasses.replace(
            request, post_render=functools.partial(services.post_renderer.run, job)
        )
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
