"""One table from an error to what status says of it: reason, stalled, counted.

- `stalled`: retrying cannot help without a change of spec or of the world (Stalled=True,
  no requeue); otherwise a retry is scheduled with backoff (Reconciling=True).
- `counted`: a failed revision was written for these inputs, so it counts against the
  remediation retries; failures before anything was written, and failures of the API
  server itself, do not.
- `unreachable`: only errors of the API connection; they are retried within seconds.

Every message passes through `redact`: Helm and the API server may quote values, and values
may come from Secrets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rudder.chart.errors import ChartError
from rudder.chart.render import RenderError
from rudder.kube.client import TRANSPORT_ERRORS, ApiError, ClusterUnreachable
from rudder.kube.ssa import StageRejected
from rudder.model import Reason, SpecError
from rudder.postrender.errors import PostRenderError
from rudder.reconcile.clusters import KubeConfigError
from rudder.reconcile.deploy_failure import DeployError, is_transient
from rudder.reconcile.values_sources import ValuesSourceError
from rudder.release.codec import ReleaseFormatError
from rudder.release.manifest import ManifestError


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str
    stalled: bool
    counted: bool = False
    unreachable: bool = False
    transient: bool = False  # the API server's failure (unreachable, 429, 5xx), not ours
    retry_after: float | None = None  # sooner than the interval (a dependency re-check)


def classify(error: BaseException, redact: Callable[[str], str] = str) -> Failure:
    """What `error` means for the HelmRelease's status."""
    if isinstance(error, DeployError):
        return Failure(
            error.reason,
            redact(error.message),
            stalled=not error.retriable and not _settled_beside(error.stage),
            counted=error.recorded and not error.transient,
        )
    if isinstance(error, ChartError):
        return Failure(error.reason, error.message, stalled=not error.retriable)
    if isinstance(error, ValuesSourceError):
        return Failure("ValuesSourceNotFound", error.message, stalled=False)
    if isinstance(error, PostRenderError):
        return Failure(error.reason, redact(error.message), stalled=not error.retriable)
    if isinstance(error, RenderError):
        # A denied `lookup` is an access problem (see _settled_beside), not a template bug.
        denied = error.reason == Reason.ACCESS_DENIED
        return Failure(error.reason, redact(error.message), stalled=not denied)
    if isinstance(error, ManifestError):
        return Failure("RenderFailed", redact(str(error)), stalled=True)
    if isinstance(error, ReleaseFormatError):
        message = f"a stored revision of the release cannot be read: {error}"
        return Failure("ReleaseUnreadable", message, stalled=True)
    if isinstance(error, SpecError):
        return Failure("InvalidSpec", str(error), stalled=True)
    if isinstance(error, ApiError):
        reason = "AccessDenied" if error.code == 403 else "KubernetesAPIError"
        return Failure(reason, redact(str(error)), stalled=False, transient=is_transient(error))
    if isinstance(error, KubeConfigError):
        return Failure(error.reason, error.message, stalled=error.stalled)
    if isinstance(error, ClusterUnreachable):
        # The remote cluster's outage: only its releases say so, and retry soon.
        message = f"the remote cluster could not be reached: {error}"
        # Not `transient`: a decommissioned remote must not hold its HelmReleases' deletion
        # (and their namespace's) for ever; deletion gives up after spec.timeout.
        return Failure("ClusterUnreachable", message, stalled=False, unreachable=True)
    if isinstance(error, TRANSPORT_ERRORS):
        message = f"the API server could not be reached: {error!r}"
        return Failure(
            "KubernetesAPIError", message, stalled=False, unreachable=True, transient=True
        )
    raise TypeError(f"no status for {type(error).__name__}") from error


def _settled_beside(stage: StageRejected | None) -> bool:
    """Whether what stops the stage is settled beside the HelmRelease, not in its spec:
    another manager lets go of its fields, an admin grants the missing access (and an API
    server that has just restarted denies until its authorizer has caught up). Retried with
    backoff, never Stalled."""
    return stage is not None and (bool(stage.conflicts) or stage.only_denied)


# The errors `classify` knows: what an action may raise for status to report.
REPORTED: tuple[type[BaseException], ...] = (
    DeployError,
    ChartError,
    ValuesSourceError,
    RenderError,
    PostRenderError,
    ManifestError,
    ReleaseFormatError,
    SpecError,
    KubeConfigError,
    ApiError,
    *TRANSPORT_ERRORS,
)
