"""One reconcile of one HelmRelease: observe, decide, act, report.

    the object (from the watch) -> observe (identity first; spec, records, chart and
        values digests) -> decide (pure) -> run the action (UNLOCK: then decide again)
        -> status: one merge patch, or none when nothing changed

The object and its records come from watches once they have caught up with rudder's own
last writes (`rudder.kube.versions`), else from one direct read each; writes happen only
when the decision calls for them, so an unchanged HelmRelease costs no request at all.
Every failure lands in a condition with a specific reason (failures.py) and never touches
the previous release or its objects.
"""

from __future__ import annotations

import copy
import logging
import uuid
from collections.abc import Awaitable, Callable

from rudder.chart.render import Renderer
from rudder.chart.source import ChartSource
from rudder.config import OperatorConfig
from rudder.kube.client import (
    JSON,
    MERGE_PATCH,
    ApiError,
    ClientSettings,
    ClusterUnreachable,
    KubeClient,
)
from rudder.kube.discovery import Discovery
from rudder.kube.shared_watch import SharedWatches
from rudder.kube.ssa import Applier
from rudder.kube.watch import resource_version
from rudder.observe import metrics
from rudder.observe.events import EventRecorder
from rudder.postrender.checks import OutputPolicy
from rudder.postrender.pipeline import PostRenderer
from rudder.postrender.plugins import PluginSource
from rudder.postrender.sandbox import Sandbox, SandboxLimits, use_compile_cache
from rudder.reconcile.actions import ACTIONS
from rudder.reconcile.actions.finalize import DEFAULT_TIMEOUT, deletion_failed
from rudder.reconcile.actions.release import action_kind, prepare_request, preview_of
from rudder.reconcile.actions.unlock import unlock
from rudder.reconcile.clusters import RemoteClusters
from rudder.reconcile.context import Context, Services, patch_finalizer
from rudder.reconcile.decide import Action, drives, next_action
from rudder.reconcile.deploy import Deployer
from rudder.reconcile.failures import REPORTED, Failure, classify
from rudder.reconcile.manager import TRANSPORT_RETRY, Outcome, Run
from rudder.reconcile.observe import Observer
from rudder.reconcile.observed import Observed
from rudder.reconcile.preview_diff import NoPreview, Preview
from rudder.reconcile.source_watch import SourceWatcher
from rudder.reconcile.status import StatusDraft
from rudder.reconcile.target import Target
from rudder.reconcile.uninstall import Uninstaller

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 600.0
# A remote cluster that does not answer must not hold a reconcile slot for long.
REMOTE_REQUEST_TIMEOUT = 15.0
# UNLOCK changes the records and decides again; more steps than this is a loop.
MAX_STEPS = 3


class Reconciler:
    def __init__(
        self,
        kube: KubeClient,
        discovery: Discovery,
        charts: ChartSource,
        config: OperatorConfig,
        watches: SharedWatches | None = None,
    ) -> None:
        self.kube = kube
        applier = Applier(kube, discovery, config.field_manager, watches)
        self.clusters = RemoteClusters(
            ClientSettings(
                qps=config.kube_api_qps,
                burst=config.kube_api_burst,
                request_timeout=REMOTE_REQUEST_TIMEOUT,
            ),
            config.field_manager,
            allow_exec=config.allow_kubeconfig_exec,
            share_watches=watches is not None,
        )
        self.observer = Observer(kube, applier, charts, config, self.clusters)
        self.services = Services(
            kube=kube,
            events=EventRecorder(kube),
            charts=charts,
            post_renderer=post_renderer(charts, config),
            deployer=Deployer(Renderer(config.kubeconfig)),
            uninstaller=Uninstaller(),
            config=config,
            instance=uuid.uuid4().hex,
        )
        # The queue wires itself in here (app.py): a values source changed -> wake its users.
        self.wake: Callable[[tuple[str, str]], None] = lambda key: None
        self.sources = SourceWatcher(kube, lambda key: self.wake(key), as_user=kube.impersonate)

    async def __call__(self, event_body: JSON, run: Run) -> Outcome:
        body = await self._current(Target(event_body))
        if body is None:
            await self.forget(Target(event_body).key)
            return Outcome(requeue_after=None)
        target = Target(body)
        run.begin(target.generation)
        draft = StatusDraft(body.get("status"), target.generation)
        parsed = self.observer.parse(target)
        spec = parsed[0]
        interval = spec.interval if spec is not None else DEFAULT_INTERVAL
        timeout = spec.timeout if spec is not None else DEFAULT_TIMEOUT
        try:
            observed = await self.observer.observe(target, draft, parsed)
            outcome = await self._act(target, draft, run, observed)
        except Exception as error:
            if not target.deleting and not isinstance(error, REPORTED):
                raise
            failure = (
                classify(error)
                if isinstance(error, REPORTED)
                else Failure("UninstallFailed", f"{type(error).__name__}: {error}", stalled=False)
            )
            if target.deleting:
                # Deletion never hangs unreported: an uninstall that cannot even start
                # (records unreadable as the identity, the API away) gives up after the
                # timeout like one that fails.
                return await deletion_failed(
                    self.services,
                    target,
                    draft,
                    failure,
                    timeout,
                    self._status_writer(target, draft),
                )
            if isinstance(error, ClusterUnreachable):
                self.clusters.mark_down((target.namespace, target.name))
            draft.failed(failure.reason, failure.message, stalled=False)
            retry = min(interval, TRANSPORT_RETRY) if failure.unreachable else interval
            outcome = Outcome(requeue_after=retry, failed=True)
        if target.deleting:
            return outcome  # the finalize action wrote what there was to say
        await self._write_status(target, draft)
        metrics.record_conditions(target.namespace, target.name, draft.desired()["conditions"])
        metrics.record_conflicts(
            target.namespace, target.name, len(draft.fields.get("conflicts") or [])
        )
        return outcome

    async def _act(
        self, target: Target, draft: StatusDraft, run: Run, observed: Observed
    ) -> Outcome:
        key = (target.namespace, target.name)
        if target.deleting or observed.spec is None:
            self.sources.forget(key)
        else:
            self.sources.track(
                key,
                [(ref.kind, target.namespace, ref.name) for ref in observed.spec.values_from],
                observed.spec.service_account_user,
            )
        if target.requested_at is not None and not target.deleting:
            # Handled whatever the outcome, an invalid spec included: `rudder reconcile
            # --wait` waits for this, then reads what the reconcile reported.
            draft.set("lastHandledRequestedAt", target.requested_at)
        if (
            not target.deleting
            and not target.has_finalizer
            and drives(observed.records, target.owner)
        ):
            # Removed by hand: deletion would leave the release behind without it.
            target = await patch_finalizer(self.services, target, present=True)
        for _ in range(MAX_STEPS):
            ctx = Context(
                target,
                draft,
                run,
                observed,
                next_action(observed),
                self._status_writer(target, draft),
            )
            if ctx.decision.action is not Action.UNLOCK:
                return await ACTIONS[ctx.decision.action](self.services, ctx)
            await unlock(self.services, ctx)
            observed = ctx.observed
        draft.progressing("the release's records keep changing; looking again")
        return Outcome(requeue_after=1.0)

    async def _current(self, seen: Target) -> JSON | None:
        """The HelmRelease to act on (None: it is gone): the watched object once the watch
        has caught up with rudder's own last write of it, else one read — acting on a
        status older than rudder's last status write would undo that write."""
        if self.services.written.allows(seen.key, resource_version(seen.body)):
            return copy.deepcopy(seen.body)  # the watch's copy stays as it was delivered
        body = await self.kube.get_or_none(seen.path)
        if body is not None:
            self.services.written.wrote(seen.key, resource_version(body))
        return body

    async def forget(self, key: tuple[str, str]) -> None:
        """The HelmRelease is gone: stop watching its sources, drop its remote cluster."""
        self.services.written.forget(key)
        self.sources.forget(key)
        await self.clusters.forget(key)

    async def preview(self, body: JSON) -> Preview | NoPreview:
        """The preview of `body`'s next action, observed and computed as a reconcile would,
        writing nothing (the status page and `rudder diff` ask for it)."""
        target = Target(body)
        draft = StatusDraft(body.get("status"), target.generation)
        observed = await self.observer.observe(target, draft, self.observer.parse(target))
        decision = next_action(observed)
        if decision.action not in (Action.INSTALL, Action.UPGRADE):
            failure = decision.failure
            message = f"{failure.reason}: {failure.message}" if failure else decision.reason
            return NoPreview(decision.action.value, message)
        ctx = Context(target, draft, Run(), observed, decision, _no_write)
        try:
            _, request = await prepare_request(self.services, ctx, action_kind(ctx))
            return await preview_of(self.services, ctx, request)
        except REPORTED as error:
            failure = classify(error, ctx.redact)
            return NoPreview("failed", f"{failure.reason}: {failure.message}")

    def _status_writer(self, target: Target, draft: StatusDraft) -> Callable[[], Awaitable[None]]:
        async def write() -> None:
            await self._write_status(target, draft)

        return write

    async def _write_status(self, target: Target, draft: StatusDraft) -> None:
        # One write at a time per draft (a delayed announcement may race the final write),
        # and `current` becomes exactly what was sent.
        async with draft.writing:
            desired = draft.desired()
            patch = draft.patch(desired)
            if patch is None:
                return
            try:
                written = await self.kube.request(
                    "PATCH",
                    f"{target.path}/status",
                    body={"status": patch},
                    content_type=MERGE_PATCH,
                )
                self.services.written.wrote(target.key, resource_version(written))
            except ApiError as error:
                if error.code != 404:  # deleted meanwhile: nothing to report to
                    raise
            draft.current = desired


async def _no_write() -> None:
    return None


def post_renderer(charts: ChartSource, config: OperatorConfig) -> PostRenderer:
    """The post-renderer service the operator's flags describe."""
    use_compile_cache(config.chart_cache_dir / "compiled-wasm")
    sandbox = Sandbox(
        SandboxLimits(
            max_memory=config.post_renderer_max_memory,
            timeout=config.post_renderer_timeout,
            max_output=config.post_renderer_max_output,
            allow_network=config.post_renderer_allow_network,
            workers=config.post_renderer_workers,
        )
    )
    return PostRenderer(
        sandbox,
        PluginSource(charts, max_size=config.max_plugin_size),
        config.kustomize_module,
        OutputPolicy(
            deny_kinds=frozenset(config.post_renderer_deny_kinds),
            deny_namespaces=frozenset(config.post_renderer_deny_namespaces),
        ),
    )
