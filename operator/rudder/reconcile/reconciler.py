"""One reconcile of one HelmRelease: observe, decide, act, report.

    spec -> (deleting? uninstall) -> finalizer -> suspend? -> chart digest -> values
         -> stored revisions -> decide() -> install | upgrade | unlock | nothing
         -> status (one merge patch, or none when nothing changed)

Reads are cheap and always done; writes happen only when the decision calls for them, so
an unchanged HelmRelease costs reads only. Every failure lands in a condition with a
specific reason and never touches the previous release or its objects.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from rudder.chart.errors import ChartError
from rudder.chart.render import Renderer, RenderError
from rudder.chart.source import ChartRequest, ChartSource, LoadedChart
from rudder.config import OperatorConfig
from rudder.kube.client import JSON, MERGE_PATCH, TRANSPORT_ERRORS, ApiError, KubeClient
from rudder.kube.discovery import Discovery
from rudder.kube.readiness import ReadinessReport
from rudder.kube.ssa import Applier
from rudder.model import (
    HelmReleaseSpec,
    SpecError,
    conditions_from_status,
    find_condition,
    parse_spec,
)
from rudder.observe import metrics
from rudder.observe.events import EventRecorder
from rudder.reconcile.decide import (
    Action,
    Attempts,
    Decision,
    Desired,
    RemediationPolicy,
    decide,
    remediate,
)
from rudder.reconcile.deploy import Deployer, DeployError, DeployRequest, DeployResult
from rudder.reconcile.drift import correct, summarize
from rudder.reconcile.drift import detect as detect_drift
from rudder.reconcile.hooks import HookFailed
from rudder.reconcile.manager import Outcome, Run
from rudder.reconcile.source_watch import SourceWatcher
from rudder.reconcile.status import StatusDraft
from rudder.reconcile.uninstall import Uninstaller
from rudder.reconcile.values_sources import ComposedValues, ValuesSourceError, compose_values
from rudder.release import history
from rudder.release.codec import Hook
from rudder.release.history import Status, latest, with_status
from rudder.release.manifest import ManifestError
from rudder.release.store import Owner, Record, ReleaseStore, RevisionExists, Stamp

log = logging.getLogger(__name__)

FINALIZER = "rudder.dev/finalizer"
HELMRELEASES = "/apis/rudder.dev/v1alpha1/namespaces/{namespace}/helmreleases/{name}"
WAIT_FOR_OTHER_WRITER = 15.0
DEPENDENCY_RECHECK = 10.0
# An install or upgrade that takes longer than this says so in status (Reconciling); one
# that ends sooner writes its status once, at the end.
ANNOUNCE_AFTER = 2.0
REQUESTED_AT_ANNOTATION = "rudder.dev/requestedAt"


@dataclass(frozen=True)
class Target:
    """The HelmRelease being reconciled, as the watch delivered it."""

    body: JSON

    @property
    def meta(self) -> JSON:
        meta: JSON = self.body.get("metadata", {})
        return meta

    @property
    def namespace(self) -> str:
        return str(self.meta.get("namespace", ""))

    @property
    def name(self) -> str:
        return str(self.meta.get("name", ""))

    @property
    def generation(self) -> int:
        return int(self.meta.get("generation", 0))

    @property
    def path(self) -> str:
        return HELMRELEASES.format(namespace=self.namespace, name=self.name)

    @property
    def owner(self) -> Owner:
        return Owner(self.namespace, self.name)


def action_fields(
    spec: HelmReleaseSpec, action: str, result: str, revision: int | None, started: float
) -> dict[str, object]:
    """The structured fields of an action's log line (never values or Secret data)."""
    return {
        "release": spec.release_name,
        "release_namespace": spec.storage_namespace,
        "action": action,
        "result": result,
        "revision": revision,
        "duration": round(time.monotonic() - started, 3),
    }


def deleting_for(target: Target) -> float:
    """Seconds since the HelmRelease was marked for deletion."""
    stamp = str(target.meta.get("deletionTimestamp", ""))
    try:
        since = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return (datetime.datetime.now(datetime.UTC) - since).total_seconds()


def history_entry(record: Record) -> dict[str, object]:
    summary = record.summary
    entry: dict[str, object] = {
        "revision": record.version,
        "status": record.status,
        "chartDigest": record.chart_digest or "",
        "valuesDigest": record.values_digest or "",
        "chartVersion": summary.chart_version,
    }
    if summary.first_deployed:
        entry["firstDeployed"] = summary.first_deployed
    if summary.last_deployed:
        entry["lastDeployed"] = summary.last_deployed
    return entry


def short_digest(digest: str) -> str:
    return digest[: len("sha256:") + 12]


class Reconciler:
    def __init__(
        self,
        kube: KubeClient,
        discovery: Discovery,
        charts: ChartSource,
        config: OperatorConfig,
    ) -> None:
        self.kube = kube
        self.discovery = discovery
        self.charts = charts
        self.config = config
        self.instance = uuid.uuid4().hex
        self.store = ReleaseStore(kube)
        self.applier = Applier(kube, discovery, config.field_manager)
        self.renderer = Renderer(config.kubeconfig)
        self.deployer = Deployer(self.applier, discovery, self.store, self.renderer)
        self.uninstaller = Uninstaller(self.applier, self.store)
        self.events = EventRecorder(kube)
        # The queue wires itself in here (app.py): a values source changed -> wake its users.
        self.wake: Callable[[tuple[str, str]], None] = lambda key: None
        self.sources = SourceWatcher(kube, lambda key: self.wake(key))

    async def __call__(self, event_body: JSON, run: Run) -> Outcome:
        # The watch may lag behind this process's own last status write; acting on a stale
        # status would undo it. One read gives the object as it is now.
        body = await self.kube.get_or_none(Target(event_body).path)
        if body is None:
            return Outcome(requeue_after=None)
        target = Target(body)
        run.begin(target.generation)
        draft = StatusDraft(body.get("status"), target.generation)
        try:
            spec = parse_spec(body.get("spec") or {}, name=target.name, namespace=target.namespace)
        except SpecError as error:
            draft.failed("InvalidSpec", str(error), stalled=True)
            await self._write_status(target, draft)
            return Outcome(requeue_after=None)

        if target.meta.get("deletionTimestamp"):
            return await self._finalize(target, spec, draft)
        if FINALIZER not in (target.meta.get("finalizers") or []):
            await self._add_finalizer(target)
        spec = self._apply_tenancy(target, spec)
        requested = (target.meta.get("annotations") or {}).get(REQUESTED_AT_ANNOTATION)
        if requested is not None:
            draft.set("lastHandledRequestedAt", requested)
        if spec.suspend:
            ready = draft.get("Ready")
            draft.condition(
                "Ready",
                ready.status if ready else "Unknown",
                "Suspended",
                "Reconciliation is suspended (spec.suspend); nothing is changed",
            )
            draft.drop("Reconciling")
            await self._write_status(target, draft)
            return Outcome(requeue_after=None)
        try:
            self._check_references(target, spec)
        except SpecError as error:
            draft.failed("InvalidSpec", str(error), stalled=True)
            await self._write_status(target, draft)
            return Outcome(requeue_after=None)
        waiting = await self._dependencies(target, spec)
        if waiting is not None:
            reason, message, stalled = waiting
            draft.failed(reason, message, stalled=stalled)
            await self._write_status(target, draft)
            return Outcome(requeue_after=None if stalled else DEPENDENCY_RECHECK)

        try:
            outcome = await self._reconcile(target, spec, draft, run)
        except ApiError as error:
            reason = "AccessDenied" if error.code == 403 else "KubernetesAPIError"
            draft.failed(reason, str(error), stalled=False)
            outcome = Outcome(requeue_after=spec.interval, failed=True)
        except TRANSPORT_ERRORS as error:
            message = f"the API server could not be reached: {error!r}"
            draft.failed("KubernetesAPIError", message, stalled=False)
            outcome = Outcome(requeue_after=spec.interval, failed=True)
        await self._write_status(target, draft)
        conditions = draft.desired()["conditions"]
        metrics.record_conditions(target.namespace, target.name, conditions)
        metrics.record_conflicts(
            target.namespace, target.name, len(draft.fields.get("conflicts") or [])
        )
        return outcome

    # -- the main path -------------------------------------------------------------------

    async def _reconcile(
        self, target: Target, spec: HelmReleaseSpec, draft: StatusDraft, run: Run
    ) -> Outcome:
        request = await self._chart_request(target, spec)
        reference = spec.chart.reference
        chart: LoadedChart | None = None
        try:
            digest = reference.digest
            if digest is None:  # allowTag: re-resolved every interval
                digest = await self.charts.resolve(request)
        except ChartError as error:
            return self._chart_failed(draft, error, spec)

        self.sources.track(
            (target.namespace, target.name),
            [(ref.kind, target.namespace, ref.name) for ref in spec.values_from],
        )
        try:
            values = await compose_values(
                self.kube.impersonate(spec.service_account_user),
                target.namespace,
                spec.values_from,
                spec.values,
            )
        except ValuesSourceError as error:
            draft.failed("ValuesSourceNotFound", error.message, stalled=False)
            return Outcome(requeue_after=spec.interval, failed=True)

        records = await self.store.as_user(spec.service_account_user).history(
            spec.storage_namespace, spec.release_name
        )
        desired = Desired(
            owner=target.owner,
            chart_digest=digest,
            values_digest=values.digest,
        )
        decision = decide(desired, records)
        if decision.action is Action.UNLOCK:
            await self._unlock(spec, records)
            records = await self.store.history(spec.storage_namespace, spec.release_name)
            decision = decide(desired, records)

        attempt = {
            "generation": target.generation,
            "chartDigest": digest,
            "valuesDigest": values.digest,
        }
        same_inputs = draft.fields.get("lastAttempted") == attempt
        if not same_inputs:  # a change of spec (or of its sources) resets the counters
            for counter in ("failures", "installFailures", "upgradeFailures"):
                draft.set(counter, None)
        draft.set("lastAttempted", attempt)
        decision = remediate(
            decision,
            records,
            Attempts(
                same_inputs=same_inputs,
                install_failures=int(draft.fields.get("installFailures", 0)),
                upgrade_failures=int(draft.fields.get("upgradeFailures", 0)),
            ),
            RemediationPolicy(
                install_retries=spec.install.remediation.retries,
                upgrade_retries=spec.upgrade.remediation.retries,
                upgrade_strategy=spec.upgrade.remediation.strategy,
            ),
        )
        if decision.action is Action.STALL:
            self._report_release(draft, spec, records)
            ready = draft.get("Ready")
            if ready is None or ready.reason != "RetriesExceeded":
                draft.failed("RetriesExceeded", decision.reason, stalled=True)
            else:
                draft.failed(ready.reason, ready.message, stalled=True)
            return Outcome(requeue_after=None)
        if decision.action in (Action.ROLLBACK, Action.UNINSTALL):
            return await self._remediate(target, spec, draft, decision, records, values)
        if decision.action is Action.REFUSE:
            draft.failed("ReleaseOwnedElsewhere", decision.reason, stalled=True)
            return Outcome(requeue_after=None)
        if decision.action is Action.WAIT:
            draft.progressing(decision.reason)
            return Outcome(requeue_after=WAIT_FOR_OTHER_WRITER)
        if decision.action is Action.NONE:
            self._report_release(draft, spec, records)
            current = latest(records)
            ready = draft.get("Ready")
            if current is not None and current.status == "deployed":
                await self._check_drift(target, spec, draft, current)
                if ready is not None and ready.status == "True":
                    draft.ready(ready.reason, ready.message)  # same words, this generation
                else:
                    draft.ready(
                        "InstallSucceeded" if current.version == 1 else "UpgradeSucceeded",
                        f"Release {spec.release_name} revision {current.version} is deployed",
                    )
            elif current is not None and current.status == "failed":
                # The same inputs failed before; trying them again is remediation's call.
                reason = (
                    "InstallFailed" if history.last_deployed(records) is None else "UpgradeFailed"
                )
                if ready is None or ready.status != "False":
                    draft.failed(
                        reason,
                        f"Revision {current.version} failed: {current.summary.description}",
                        stalled=True,
                    )
                else:
                    draft.failed(ready.reason, ready.message, stalled=True)
            return Outcome(requeue_after=spec.interval)

        # install or upgrade: now the chart bytes are needed.
        try:
            chart = await self.charts.get(request if reference.digest else request.pinned(digest))
        except ChartError as error:
            return self._chart_failed(draft, error, spec)
        self._report_chart(draft, spec, chart)

        is_install = decision.action is Action.INSTALL
        verb = "install" if is_install else "upgrade"
        if decision.out_of_band:
            draft.condition("Released", "False", "OutOfBandRevision", decision.reason)
            await self.events.warning(target.body, "OutOfBandRevision", decision.reason)
        # A retry of the same inputs keeps reporting its last failure until it succeeds,
        # so a release that keeps failing the same way does not write status each time.
        announce = (
            None
            if same_inputs
            else asyncio.create_task(
                self._announce(
                    target, draft, f"Running {verb} of {spec.release_name}: {decision.reason}"
                )
            )
        )
        action_spec = spec.install if is_install else spec.upgrade
        deploy_request = DeployRequest(
            release_name=spec.release_name,
            target_namespace=spec.target_namespace,
            storage_namespace=spec.storage_namespace,
            chart_archive=chart.archive,
            chart=chart.chart,
            chart_name=chart.metadata.name,
            values=values.values,
            stamp=Stamp(
                target.owner, chart.digest, values.digest, target.generation, self.instance
            ),
            records=records,
            is_install=is_install,
            crds_policy=action_spec.crds,
            create_namespace=spec.install.create_namespace,
            take_ownership=action_spec.take_ownership,
            force_conflicts=spec.upgrade.force_conflicts,
            max_history=spec.max_history,
            description="Install complete" if is_install else "Upgrade complete",
            impersonate=spec.service_account_user,
            take_over_from=self.config.takeover_managers if decision.out_of_band else (),
            disable_hooks=action_spec.disable_hooks,
            disable_wait=action_spec.disable_wait,
            cancel=run.superseded,
            on_progress=lambda report: self._waiting(target, draft, verb, report),
            redact=values.redact,
            timeout=spec.timeout,
            skip_unchanged=(
                not is_install
                and not decision.out_of_band
                and getattr(latest(records), "status", "") == "deployed"
            ),
        )
        started = time.monotonic()
        try:
            result = await self._deploy_announced(announce, self.deployer.deploy(deploy_request))
        except RenderError as error:
            # Helm's messages may quote values, and values may come from Secrets.
            message = values.redact(error.message)
            draft.failed(error.reason, message, stalled=True)
            draft.condition("Released", "False", error.reason, message)
            await self.events.warning(target.body, error.reason, message)
            return Outcome(requeue_after=None)
        except ManifestError as error:
            message = values.redact(str(error))
            draft.failed("RenderFailed", message, stalled=True)
            await self.events.warning(target.body, "RenderFailed", message)
            return Outcome(requeue_after=None)
        except RevisionExists as error:
            draft.progressing(f"revision {error} was written by another writer; re-reading")
            return Outcome(requeue_after=1.0)
        except DeployError as error:
            metrics.record_action(verb, "failure", time.monotonic() - started)
            log.warning(
                "%s/%s: %s failed (%s)",
                target.namespace,
                target.name,
                verb,
                error.reason,
                extra=action_fields(spec, verb, "failure", None, started),
            )
            if error.superseded:
                # Not an attempt that failed: the next reconcile starts over afresh.
                draft.set("lastAttempted", None)
                draft.progressing(error.message)
                return Outcome(requeue_after=0.0)
            if error.readiness is not None:
                draft.set("resources", error.readiness.as_status())
            error.message = values.redact(error.message)
            return await self._deploy_failed(target, spec, draft, error, is_install)

        metrics.record_action(verb, "success", time.monotonic() - started)
        draft.set("conflicts", None)
        draft.drop("Conflicted")
        draft.set("resources", result.readiness.as_status() if result.readiness else None)
        self._report_release(draft, spec, result.records)
        reason = "InstallSucceeded" if is_install else "UpgradeSucceeded"
        done = "Installed" if is_install else "Upgraded"
        message = (
            f"{done} {spec.release_name} revision {result.release.version} "
            f"({chart.metadata.name}:{chart.metadata.version})"
        )
        if decision.out_of_band:
            message += f"; re-converged to the spec after {decision.reason}"
        draft.condition("Released", "True", reason, message)
        await self.events.normal(target.body, reason, message)
        log.info(
            "%s/%s: %s",
            target.namespace,
            target.name,
            message,
            extra=action_fields(spec, verb, "success", result.release.version, started),
        )
        if spec.test.enable:
            passed, test_message = await self._run_tests(target, spec, result)
            draft.condition(
                "TestSuccess",
                "True" if passed else "False",
                "TestSucceeded" if passed else "TestFailed",
                values.redact(test_message),
            )
            if not passed and not spec.test.ignore_failures:
                draft.failed("TestFailed", values.redact(test_message), stalled=True)
                return Outcome(requeue_after=spec.interval)
        else:
            draft.drop("TestSuccess")
        draft.ready(reason, message)
        return Outcome(requeue_after=spec.interval)

    async def _check_drift(
        self, target: Target, spec: HelmReleaseSpec, draft: StatusDraft, current: Record
    ) -> None:
        """spec.driftDetection: warn reports drifted objects and fields; enabled also takes
        them back (no new revision) and reports what it could not. Reads and dry-runs only
        when nothing drifted."""
        mode = spec.drift_detection.mode
        if mode == "disabled":
            draft.drop("Drifted")
            draft.set("drift", None)
            return
        applier = self.applier.as_user(spec.service_account_user)
        drifted = await detect_drift(
            applier,
            current.release.manifest,
            release_name=spec.release_name,
            release_namespace=spec.storage_namespace,
            target_namespace=spec.target_namespace,
            drift_managers=self.config.drift_managers,
            ignore=spec.drift_detection.ignore,
        )
        metrics.record_drift(target.namespace, target.name, len(drifted))
        if not drifted:
            draft.drop("Drifted")
            draft.set("drift", None)
            return
        if mode == "warn":
            message = f"Changed outside rudder: {summarize(drifted)}"
            draft.condition("Drifted", "True", "DriftDetected", message)
            draft.set("drift", [d.as_status() for d in drifted])
            return
        failed = await correct(applier, drifted, self.config.drift_managers)
        left = {f.ref for f in failed}
        if taken := [d for d in drifted if d.ref not in left]:
            await self.events.warning(target.body, "DriftCorrected", f"Took back: {summarize(taken)}")
        if not failed:
            draft.drop("Drifted")
            draft.set("drift", None)
            return
        message = f"Not taken back: {summarize(failed)}"
        before = draft.get("Drifted")
        draft.condition("Drifted", "True", "DriftNotCorrected", message)
        draft.set("drift", [d.as_status() for d in drifted if d.ref in left])
        if before is None or before.message != message:  # once, not every interval
            await self.events.warning(target.body, "DriftNotCorrected", message)

    async def _run_tests(
        self, target: Target, spec: HelmReleaseSpec, result: DeployResult
    ) -> tuple[bool, str]:
        """`helm test` for the new revision: run its test hooks, record their last_run in
        that revision, and say how it went."""
        tests = [hook for hook in result.release.hooks if "test" in hook.events]
        if not tests:
            return True, "the chart has no tests"
        store = self.store.as_user(spec.service_account_user)
        record = result.record

        async def save(hooks: list[Hook]) -> None:
            nonlocal record
            record = await store.update(record, dataclasses.replace(result.release, hooks=hooks))

        try:
            hooks = await self.deployer.hook_runner.run(
                result.release.hooks,
                "test",
                namespace=spec.target_namespace,
                release_name=spec.release_name,
                release_namespace=spec.storage_namespace,
                timeout=spec.test.timeout,
                applier=self.applier.as_user(spec.service_account_user),
                record=save,
            )
        except HookFailed as failed:
            await save(failed.hooks)
            message = f"test {failed.hook.name} failed: {failed.message}"
            metrics.record_action("test", "failure")
            await self.events.warning(target.body, "TestFailed", message)
            return False, message
        await save(hooks)
        message = f"{len(tests)} test(s) passed for revision {result.release.version}"
        metrics.record_action("test", "success")
        await self.events.normal(target.body, "TestSucceeded", message)
        return True, message

    async def _remediate(
        self,
        target: Target,
        spec: HelmReleaseSpec,
        draft: StatusDraft,
        decision: Decision,
        records: list[Record],
        values: ComposedValues,
    ) -> Outcome:
        """Upgrade retries are spent: roll back to the last deployed revision or uninstall,
        once; then stall until the spec changes."""
        draft.progressing(decision.reason)
        await self._write_status(target, draft)
        if decision.action is Action.UNINSTALL:
            outcome = await self.uninstaller.uninstall(spec, records)
            if not outcome.done:
                draft.failed("UninstallFailed", outcome.message, stalled=False)
                return Outcome(requeue_after=outcome.retry_after, failed=True)
            message = f"Upgrade retries exhausted; {outcome.message}"
            metrics.record_action("uninstall", "success")
            draft.condition("Remediated", "True", "UninstallSucceeded", message)
            await self.events.warning(target.body, "UninstallSucceeded", message)
        else:
            good = history.last_deployed(records)
            assert good is not None  # remediate() rolls back only to a deployed revision
            try:
                result = await self.deployer.deploy(
                    DeployRequest(
                        release_name=spec.release_name,
                        target_namespace=spec.target_namespace,
                        storage_namespace=spec.storage_namespace,
                        chart_archive=b"",
                        chart=None,
                        chart_name="",
                        values=good.release.config,
                        stamp=Stamp(
                            target.owner,
                            good.chart_digest or "",
                            good.values_digest or "",
                            target.generation,
                            self.instance,
                        ),
                        records=records,
                        is_install=False,
                        crds_policy="Skip",
                        create_namespace=False,
                        take_ownership=False,
                        force_conflicts=spec.upgrade.force_conflicts,
                        max_history=spec.max_history,
                        description=f"Rollback to {good.version}",
                        impersonate=spec.service_account_user,
                        disable_hooks=spec.rollback.disable_hooks,
                        disable_wait=spec.rollback.disable_wait,
                        timeout=spec.timeout,
                        redact=values.redact,
                        rollback_to=good,
                    )
                )
            except DeployError as error:
                message = values.redact(error.message)
                metrics.record_action("rollback", "failure")
                draft.condition("Remediated", "False", "RollbackFailed", message)
                draft.failed("RollbackFailed", message, stalled=True)
                await self.events.warning(target.body, "RollbackFailed", message)
                return Outcome(requeue_after=None)
            message = (
                f"Upgrade retries exhausted; rolled back to revision {good.version} "
                f"as revision {result.release.version}"
            )
            metrics.record_action("rollback", "success")
            draft.condition("Remediated", "True", "RollbackSucceeded", message)
            await self.events.warning(target.body, "RollbackSucceeded", message)
        records = await self.store.history(spec.storage_namespace, spec.release_name)
        self._report_release(draft, spec, records)
        draft.failed("RetriesExceeded", message, stalled=True)
        return Outcome(requeue_after=None)

    def _apply_tenancy(self, target: Target, spec: HelmReleaseSpec) -> HelmReleaseSpec:
        """--default-service-account: act as that ServiceAccount of the HelmRelease's
        namespace when the spec names none (without it, rudder acts as itself)."""
        if spec.service_account_user or not self.config.default_service_account:
            return spec
        name = self.config.default_service_account
        user = f"system:serviceaccount:{target.namespace}:{name}"
        return dataclasses.replace(spec, service_account_name=name, service_account_user=user)

    def _check_references(self, target: Target, spec: HelmReleaseSpec) -> None:
        """--no-cross-namespace-refs: everything a HelmRelease names stays in its namespace."""
        if not self.config.no_cross_namespace_refs:
            return
        for field, namespace in (
            ("spec.targetNamespace", spec.target_namespace),
            ("spec.storageNamespace", spec.storage_namespace),
            *(
                (f"spec.dependsOn[{i}].namespace", d.namespace)
                for i, d in enumerate(spec.depends_on)
            ),
        ):
            if namespace != target.namespace:
                raise SpecError(
                    field,
                    f"{namespace!r} is outside the HelmRelease's namespace {target.namespace!r}, "
                    "and cross-namespace references are disabled (--no-cross-namespace-refs)",
                )

    async def _dependencies(
        self, target: Target, spec: HelmReleaseSpec
    ) -> tuple[str, str, bool] | None:
        """None when every dependsOn HelmRelease is Ready for its current generation; else
        (reason, message, stalled). A cycle stalls; a dependency not ready is re-checked."""
        if not spec.depends_on:
            return None
        not_ready = []
        for dep in spec.depends_on:
            if await self._depends_on_me(Owner(dep.namespace, dep.name), target.owner):
                return (
                    "DependencyCycle",
                    f"dependsOn {dep.namespace}/{dep.name} leads back to this HelmRelease",
                    True,
                )
            other = await self.kube.get_or_none(
                HELMRELEASES.format(namespace=dep.namespace, name=dep.name)
            )
            ready = find_condition(conditions_from_status((other or {}).get("status")), "Ready")
            meta = (other or {}).get("metadata", {})
            current = (other or {}).get("status", {}).get("observedGeneration") == meta.get(
                "generation"
            )
            if other is None or ready is None or ready.status != "True" or not current:
                not_ready.append(f"{dep.namespace}/{dep.name}")
        if not_ready:
            return ("DependencyNotReady", f"waiting for {', '.join(not_ready)} to be Ready", False)
        return None

    async def _depends_on_me(self, start: Owner, me: Owner, limit: int = 32) -> bool:
        """Does following dependsOn from `start` reach `me`? (bounded walk)"""
        seen: set[Owner] = set()
        frontier = [start]
        while frontier and len(seen) < limit:
            node = frontier.pop()
            if node == me:
                return True
            if node in seen:
                continue
            seen.add(node)
            body = await self.kube.get_or_none(
                HELMRELEASES.format(namespace=node.namespace, name=node.name)
            )
            for dep in ((body or {}).get("spec") or {}).get("dependsOn") or []:
                frontier.append(Owner(dep.get("namespace") or node.namespace, dep.get("name", "")))
        return False

    async def _announce(self, target: Target, draft: StatusDraft, message: str) -> None:
        await asyncio.sleep(ANNOUNCE_AFTER)
        draft.progressing(message)
        await self._write_status(target, draft)

    @staticmethod
    async def _deploy_announced(
        announce: asyncio.Task[None] | None, deploy: Awaitable[DeployResult]
    ) -> DeployResult:
        """Run the action; a pending announcement is dropped once it is over."""
        try:
            return await deploy
        finally:
            if announce is not None:
                announce.cancel()
                try:
                    await announce
                except asyncio.CancelledError:
                    pass
                except Exception as error:
                    # A failed progress write must not replace the action's own result or
                    # error; the final status write reports the outcome.
                    log.warning("writing the progress status failed: %s", error)

    async def _waiting(
        self, target: Target, draft: StatusDraft, verb: str, report: ReadinessReport
    ) -> None:
        """While the readiness wait runs: say what it waits for (written only on change)."""
        draft.progressing(f"Waiting for the {verb} to become ready: {report.summary()}")
        draft.set("resources", report.as_status())
        await self._write_status(target, draft)

    # -- failures ------------------------------------------------------------------------

    def _chart_failed(
        self, draft: StatusDraft, error: ChartError, spec: HelmReleaseSpec
    ) -> Outcome:
        draft.failed(error.reason, error.message, stalled=not error.retriable)
        if error.retriable:
            return Outcome(requeue_after=spec.interval, failed=True)
        return Outcome(requeue_after=None)

    async def _deploy_failed(
        self,
        target: Target,
        spec: HelmReleaseSpec,
        draft: StatusDraft,
        error: DeployError,
        is_install: bool,
    ) -> Outcome:
        if error.stage is not None and error.stage.conflicts:
            draft.set("conflicts", [c.as_status() for c in error.stage.conflicts])
            draft.condition("Conflicted", "True", "ApplyConflict", error.message)
            stalled = not spec.upgrade.force_conflicts
        else:
            stalled = not error.retriable
        if error.recorded:
            failed_reason = "InstallFailed" if is_install else "UpgradeFailed"
            draft.condition("Released", "False", failed_reason, error.message)
            if not error.transient:
                counter = "installFailures" if is_install else "upgradeFailures"
                draft.set(counter, int(draft.fields.get(counter, 0)) + 1)
                draft.set("failures", int(draft.fields.get("failures", 0)) + 1)
            records = await self.store.history(spec.storage_namespace, spec.release_name)
            self._report_release(draft, spec, records)
        draft.failed(error.reason, error.message, stalled=stalled)
        await self.events.warning(target.body, error.reason, error.message)
        if stalled:
            return Outcome(requeue_after=None)
        return Outcome(requeue_after=spec.interval, failed=True)

    # -- pieces --------------------------------------------------------------------------

    async def _chart_request(self, target: Target, spec: HelmReleaseSpec) -> ChartRequest:
        async def secret_key(name: str | None, key: str) -> bytes | None:
            if not name:
                return None
            secret = await self.kube.get_or_none(
                f"/api/v1/namespaces/{target.namespace}/secrets/{name}"
            )
            value = ((secret or {}).get("data") or {}).get(key)
            return base64.b64decode(value) if value else None

        cosign = spec.chart.verify_cosign_secret
        return ChartRequest(
            ref=spec.chart.ref,
            allow_tag=spec.chart.allow_tag,
            insecure=spec.chart.insecure,
            docker_config_json=await secret_key(spec.chart.secret_ref, ".dockerconfigjson"),
            ca_pem=await secret_key(spec.chart.cert_secret_ref, "ca.crt"),
            cosign_public_key_pem=await secret_key(cosign, "cosign.pub") if cosign else None,
            identity=spec.service_account_user,
            check_access=bool(self.config.default_service_account),
        )

    def _report_chart(self, draft: StatusDraft, spec: HelmReleaseSpec, chart: LoadedChart) -> None:
        meta = chart.metadata
        draft.set(
            "chart",
            {
                "ref": spec.chart.ref,
                "digest": chart.digest,
                "name": meta.name,
                "version": meta.version,
                "appVersion": meta.app_version,
                "nameVersion": f"{meta.name}:{meta.version}",
                "shortDigest": short_digest(chart.digest),
            },
        )

    def _report_release(
        self, draft: StatusDraft, spec: HelmReleaseSpec, records: list[Record]
    ) -> None:
        current = latest(records)
        if current is None:
            draft.set("release", None)
            draft.set("history", None)
            return
        summary = current.summary
        release = {
            "name": spec.release_name,
            "namespace": spec.storage_namespace,
            "revision": current.version,
            "status": current.status,
        }
        if summary.last_deployed:
            release["lastDeployed"] = summary.last_deployed
        draft.set("release", release)
        newest_first = sorted(records, key=lambda r: r.version, reverse=True)
        draft.set("history", [history_entry(r) for r in newest_first[: max(spec.max_history, 1)]])

    async def _unlock(self, spec: HelmReleaseSpec, records: list[Record]) -> None:
        current = latest(records)
        if current is None:
            return
        description = f"Release left {current.status} by an interrupted operator; unlocked"
        await self.store.update(
            current, with_status(current.release, Status.FAILED, description), interrupted=True
        )

    async def _add_finalizer(self, target: Target) -> None:
        finalizers = [*(target.meta.get("finalizers") or []), FINALIZER]
        await self.kube.request(
            "PATCH",
            target.path,
            body={
                "metadata": {
                    "finalizers": finalizers,
                    "resourceVersion": target.meta.get("resourceVersion"),
                }
            },
            content_type=MERGE_PATCH,
        )

    async def _finalize(self, target: Target, spec: HelmReleaseSpec, draft: StatusDraft) -> Outcome:
        self.sources.forget((target.namespace, target.name))
        if FINALIZER not in (target.meta.get("finalizers") or []):
            return Outcome(requeue_after=None)
        records = await self.store.history(spec.storage_namespace, spec.release_name)
        ours = [r for r in records if r.owner in (None, target.owner)]
        foreign = any(r.owner not in (None, target.owner) for r in records)
        if records and not foreign:
            outcome = await self.uninstaller.uninstall(spec, ours)
            metrics.record_action("uninstall", "success" if outcome.done else "failure")
            if outcome.done:
                await self.events.normal(target.body, "UninstallSucceeded", outcome.message)
            elif deleting_for(target) < spec.timeout:
                draft.failed("UninstallFailed", outcome.message, stalled=False)
                await self._write_status(target, draft)
                return Outcome(requeue_after=outcome.retry_after)
            else:
                # Deletion never hangs forever: after spec.timeout the HelmRelease goes, and
                # the event names what could not be removed.
                await self.events.warning(
                    target.body,
                    "UninstallFailed",
                    f"{outcome.message}; gave up after {spec.timeout:.0f}s and removed the "
                    "finalizer",
                )
        finalizers = [f for f in target.meta.get("finalizers") or [] if f != FINALIZER]
        try:
            await self.kube.request(
                "PATCH",
                target.path,
                body={
                    "metadata": {
                        "finalizers": finalizers,
                        "resourceVersion": target.meta.get("resourceVersion"),
                    }
                },
                content_type=MERGE_PATCH,
            )
        except ApiError as error:
            if error.code != 404:
                raise
        return Outcome(requeue_after=None)

    async def _write_status(self, target: Target, draft: StatusDraft) -> None:
        # One write at a time per draft (a delayed announcement may race the final write),
        # and `current` becomes exactly what was sent.
        async with draft.writing:
            desired = draft.desired()
            patch = draft.patch(desired)
            if patch is None:
                return
            try:
                await self.kube.request(
                    "PATCH",
                    f"{target.path}/status",
                    body={"status": patch},
                    content_type=MERGE_PATCH,
                )
            except ApiError as error:
                if error.code != 404:  # deleted meanwhile: nothing to report to
                    raise
            draft.current = desired
