"""Deletion: uninstall the release this HelmRelease drives, or let go of it untouched.

Which one is decide's call (`drives`): a release none of whose revisions this HelmRelease
wrote is never uninstalled, nor is a suspended HelmRelease's. Uninstalling is done as the
release's identity (recorded in status when the spec no longer parses) and gives up after
the timeout, so deletion never hangs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from rudder.model import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT_TEXT
from rudder.model import UninstallSpec, parse_duration
from rudder.observe import metrics
from rudder.reconcile.context import Context, Services, patch_finalizer
from rudder.reconcile.failures import Failure
from rudder.reconcile.manager import TRANSPORT_RETRY, Outcome
from rudder.reconcile.status import StatusDraft
from rudder.reconcile.target import Target
from rudder.reconcile.uninstall import UninstallRequest

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = parse_duration(DEFAULT_TIMEOUT_TEXT)
UNINSTALL_RETRY = 10.0


async def forget(services: Services, ctx: Context) -> Outcome:
    return Outcome(requeue_after=None)


async def let_go(services: Services, ctx: Context) -> Outcome:
    say = services.events.warning if ctx.decision.warning else services.events.normal
    await say(ctx.target.body, "UninstallSkipped", ctx.decision.reason)
    await patch_finalizer(services, ctx.target, present=False)
    return Outcome(requeue_after=None)


async def deletion_failed(
    services: Services,
    target: Target,
    draft: StatusDraft,
    failure: Failure,
    give_up_after: float,
    write_status: Callable[[], Awaitable[None]],
) -> Outcome:
    """An uninstall that could not even start: say so, retry, and give up after the
    timeout (the finalizer goes and a Warning event names what was left) — only once an
    earlier attempt failed and was reported, and never because the API server itself was
    away or overloaded: that is waited out, not taken for the release's failure."""
    log.warning("%s/%s: uninstall failed: %s", target.namespace, target.name, failure.message)
    reported = getattr(draft.get("Ready"), "reason", None) == "UninstallFailed"
    if failure.transient or not reported or target.deleting_for() < give_up_after:
        draft.failed("UninstallFailed", failure.message, stalled=False)
        await write_status()
        retry = TRANSPORT_RETRY if failure.unreachable else UNINSTALL_RETRY
        return Outcome(requeue_after=retry, failed=True)
    await patch_finalizer(services, target, present=False)
    await services.events.warning(
        target.body,
        "UninstallFailed",
        f"{failure.message}; gave up after {give_up_after:.0f}s and removed the finalizer",
    )
    return Outcome(requeue_after=None)


async def finalize(services: Services, ctx: Context) -> Outcome:
    spec = ctx.observed.spec
    timeout = spec.timeout if spec is not None else DEFAULT_TIMEOUT
    request = UninstallRequest(
        ctx.identity, spec.uninstall if spec is not None else UninstallSpec(), timeout
    )
    outcome = await services.uninstaller.uninstall(request, ctx.removable_records(), ctx.clients)
    metrics.record_action("uninstall", "success" if outcome.done else "failure")
    if outcome.done:
        await services.events.normal(ctx.target.body, "UninstallSucceeded", outcome.message)
    elif ctx.target.deleting_for() < timeout:
        ctx.draft.failed("UninstallFailed", outcome.message, stalled=False)
        await ctx.write_status()
        return Outcome(requeue_after=outcome.retry_after)
    else:
        # Deletion never hangs forever: after the timeout the HelmRelease goes, and the
        # event names what could not be removed.
        await services.events.warning(
            ctx.target.body,
            "UninstallFailed",
            f"{outcome.message}; gave up after {timeout:.0f}s and removed the finalizer",
        )
    await patch_finalizer(services, ctx.target, present=False)
    return Outcome(requeue_after=None)
