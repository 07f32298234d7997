"""What one reconcile observed, as plain data: the input of the pure `decide`.

Built once per reconcile by `observe.Observer`, with the identity already resolved. What
could not be observed (an invalid spec, a dependency not ready, a chart or values source
that failed) is `blocked`, with the failure status will report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from rudder.chart.source import ChartRequest
from rudder.model import HelmReleaseSpec
from rudder.reconcile.failures import Failure
from rudder.reconcile.identity import Identity, ReleaseClients
from rudder.reconcile.values_sources import ComposedValues
from rudder.release.store import Owner, Record


@dataclass(frozen=True)
class Desired:
    owner: Owner
    chart_digest: str
    values_digest: str


@dataclass(frozen=True)
class Attempts:
    """What status remembers of earlier attempts at the same inputs."""

    same_inputs: bool  # lastAttempted is this generation, chart digest and values digest
    install_failures: int
    upgrade_failures: int


@dataclass(frozen=True)
class RemediationPolicy:
    install_retries: int
    upgrade_retries: int
    upgrade_strategy: str  # rollback | uninstall

    @classmethod
    def of(cls, spec: HelmReleaseSpec) -> RemediationPolicy:
        return cls(
            install_retries=spec.install.remediation.retries,
            upgrade_retries=spec.upgrade.remediation.retries,
            upgrade_strategy=spec.upgrade.remediation.strategy,
        )


@dataclass(frozen=True)
class Observed:
    owner: Owner
    deleting: bool
    has_finalizer: bool
    spec: HelmReleaseSpec | None  # None: the spec does not parse (`blocked` says why)
    identity: Identity | None  # None: no spec and no release recorded in status
    records: Sequence[Record] = ()
    blocked: Failure | None = None
    desired: Desired | None = None  # set once chart and values are known
    attempts: Attempts = Attempts(False, 0, 0)
    # For the actions, not for decide: the clients of the identity, the values and chart.
    clients: ReleaseClients | None = field(default=None, compare=False)
    values: ComposedValues | None = field(default=None, compare=False)
    chart_request: ChartRequest | None = field(default=None, compare=False)
    # spec.postRenderers[i]'s plugin pull, None for kustomize.
    plugin_requests: tuple[ChartRequest | None, ...] = field(default=(), compare=False)

    def with_records(self, records: Sequence[Record]) -> Observed:
        return replace(self, records=records)
