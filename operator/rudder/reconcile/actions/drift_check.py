"""spec.driftDetection on a deployed release: warn reports drifted objects and fields;
enabled also takes them back (no new revision) and reports what it could not. Reads and
dry-runs only when nothing drifted; every request as the release's identity."""

from __future__ import annotations

from rudder.observe import metrics
from rudder.reconcile.context import Context, Services
from rudder.reconcile.drift_correct import correct
from rudder.reconcile.drift_detect import detect, summarize
from rudder.release.store import Record


async def check_drift(services: Services, ctx: Context, current: Record) -> None:
    spec, draft = ctx.spec, ctx.draft
    mode = spec.drift_detection.mode
    if mode == "disabled":
        draft.drop("Drifted")
        draft.set("drift", None)
        return
    applier = ctx.clients.applier
    drifted = await detect(
        applier,
        current.release.manifest,
        release_name=spec.release_name,
        release_namespace=spec.storage_namespace,
        target_namespace=spec.target_namespace,
        drift_managers=services.config.drift_managers,
        ignore=spec.drift_detection.ignore,
    )
    metrics.record_drift(ctx.target.namespace, ctx.target.name, len(drifted))
    if not drifted:
        draft.drop("Drifted")
        draft.set("drift", None)
        return
    if mode == "warn":
        message = f"Changed outside rudder: {summarize(drifted)}"
        draft.condition("Drifted", "True", "DriftDetected", message)
        draft.set("drift", [d.as_status() for d in drifted])
        return
    failed = await correct(applier, drifted, services.config.drift_managers)
    left = {f.ref for f in failed}
    if taken := [d for d in drifted if d.ref not in left]:
        await services.events.warning(
            ctx.target.body, "DriftCorrected", f"Took back: {summarize(taken)}"
        )
    if not failed:
        draft.drop("Drifted")
        draft.set("drift", None)
        return
    message = f"Not taken back: {summarize(failed)}"
    before = draft.get("Drifted")
    draft.condition("Drifted", "True", "DriftNotCorrected", message)
    draft.set("drift", [d.as_status() for d in drifted if d.ref in left])
    if before is None or before.message != message:  # once, not every interval
        await services.events.warning(ctx.target.body, "DriftNotCorrected", message)
