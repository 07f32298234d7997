"""What an action is handed: the shared services, and this reconcile's state.

`Services` holds rudder's own parts (its client is for the HelmRelease object, its status
and events only); everything an action does to the release goes through
`ctx.clients`, which acts as the release's identity.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from rudder.chart.source import ChartSource
from rudder.config import OperatorConfig
from rudder.kube.client import MERGE_PATCH, ApiError, KubeClient
from rudder.kube.versions import Floors
from rudder.kube.watch import resource_version
from rudder.model import HelmReleaseSpec
from rudder.observe.events import EventRecorder
from rudder.postrender.pipeline import PostRenderer
from rudder.reconcile.decide import Decision
from rudder.reconcile.deploy import Deployer
from rudder.reconcile.identity import Identity, ReleaseClients
from rudder.reconcile.manager import Run
from rudder.reconcile.observe import with_history
from rudder.reconcile.observed import Observed
from rudder.reconcile.plan import Placement
from rudder.reconcile.status import StatusDraft
from rudder.reconcile.target import Target
from rudder.reconcile.uninstall import Uninstaller
from rudder.release.store import Record


@dataclass
class Services:
    kube: KubeClient  # rudder itself: the HelmRelease, its status, its finalizer
    events: EventRecorder
    charts: ChartSource
    post_renderer: PostRenderer
    deployer: Deployer
    uninstaller: Uninstaller
    config: OperatorConfig
    instance: str  # this operator process, stamped on the revisions it writes
    # The resourceVersion of rudder's last write of each HelmRelease (by (namespace, name)):
    # a reconcile acts on the watched object only once the watch has caught up with it.
    written: Floors = field(default_factory=Floors)


@dataclass
class Context:
    target: Target
    draft: StatusDraft
    run: Run
    observed: Observed
    decision: Decision
    write_status: Callable[[], Awaitable[None]]

    @property
    def spec(self) -> HelmReleaseSpec:
        assert self.observed.spec is not None, "an action on the release needs its spec"
        return self.observed.spec

    @property
    def identity(self) -> Identity:
        assert self.observed.identity is not None
        return self.observed.identity

    @property
    def clients(self) -> ReleaseClients:
        assert self.observed.clients is not None
        return self.observed.clients

    @property
    def redact(self) -> Callable[[str], str]:
        """Scrubs values that came from Secrets out of a message."""
        return self.observed.values.redact if self.observed.values else str

    @property
    def placement(self) -> Placement:
        identity = self.identity
        return Placement(
            identity.release_name, identity.storage_namespace, identity.target_namespace
        )

    def removable_records(self) -> list[Record]:
        """The records an uninstall may delete: not those another HelmRelease wrote (an
        uninstalled history it kept)."""
        return [r for r in self.observed.records if r.owner in (None, self.target.owner)]

    async def history(self) -> Observed:
        """The release's records read again (as the identity), e.g. after an action."""
        self.observed = await with_history(self.observed)
        return self.observed


async def patch_finalizer(services: Services, target: Target, *, present: bool) -> Target:
    """Add or remove rudder's finalizer (as rudder: the HelmRelease is rudder's object);
    the HelmRelease as it is afterwards (a later write must carry its resourceVersion).
    The patch is guarded by the resourceVersion the reconcile saw (the list of finalizers
    is replaced whole); if someone wrote the HelmRelease since, it is read and patched
    again once, so an uninstall that is done is not left to a later reconcile."""
    for attempt in range(2):
        try:
            body = await services.kube.request(
                "PATCH",
                target.path,
                body=target.finalizers_patch(present=present),
                content_type=MERGE_PATCH,
            )
            break
        except ApiError as error:
            if error.code == 409 and attempt == 0:
                fresh = await services.kube.get_or_none(target.path)
                if fresh is not None:
                    target = Target(fresh)
                    continue
                if present:
                    raise
                return target  # gone: nothing holds it any more
            if error.code == 404 and not present:
                return target
            raise
    if not isinstance(body, dict) or not body.get("metadata"):
        return target
    services.written.wrote(target.key, resource_version(body))
    return Target(body)
