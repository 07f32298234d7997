"""A pending revision of this HelmRelease at the start of a reconcile belongs to an attempt
that is over (one worker per HelmRelease: a crashed process, a lost leader, an API failure
mid-action): mark it failed and interrupted, then decide again (it will be retried outside
the remediation counters)."""

from __future__ import annotations

from rudder.reconcile.context import Context, Services
from rudder.release.history import Status, latest, with_status


async def unlock(services: Services, ctx: Context) -> None:
    current = latest(ctx.observed.records)
    if current is None:
        return
    description = f"Release left {current.status} by an interrupted operator; unlocked"
    await ctx.clients.store.update(
        current, with_status(current.release, Status.FAILED, description), interrupted=True
    )
    await ctx.history()
