"""`next_action`, the whole decision, as one table: every branch a named case.

Each case is an `Observed` bundle as the observer builds it (deletion: records, no desired
inputs; otherwise the spec, what blocks, the desired digests, the records and the attempts)
and the `Decision` it must lead to: the action, whether the newest revision is out of band,
whether letting go is a warning, the failure reported, and what the reason must name for a
user to act on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from rudder.model import HelmReleaseSpec, SpecError, parse_spec
from rudder.reconcile.decide import Action, Attempts, Desired, next_action
from rudder.reconcile.failures import Failure, classify
from rudder.reconcile.identity import Identity
from rudder.reconcile.observed import Observed
from rudder.release.store import (
    CHART_DIGEST_ANNOTATION,
    INSTANCE_ANNOTATION,
    INTERRUPTED_ANNOTATION,
    VALUES_DIGEST_ANNOTATION,
    Owner,
    Record,
)

ME = Owner("apps", "web")
OTHER = Owner("apps", "other")
RELEASE = "shop"  # spec.releaseName: differs from the HelmRelease's name on purpose
STORAGE = "shop-prod"  # spec.targetNamespace, and so the storage namespace
CHART = "sha256:" + "c" * 64
VALUES = "sha256:" + "v" * 64
OLD_CHART = "sha256:" + "0" * 64
OLD_VALUES = "sha256:" + "1" * 64
DESIRED = Desired(ME, CHART, VALUES)

FRESH = Attempts(same_inputs=False, install_failures=0, upgrade_failures=0)


def attempts(*, install: int = 0, upgrade: int = 0) -> Attempts:
    """Status remembers earlier attempts at these same inputs."""
    return Attempts(same_inputs=True, install_failures=install, upgrade_failures=upgrade)


# --- specs ---------------------------------------------------------------------------------


def spec(**fields: Any) -> HelmReleaseSpec:
    body: dict[str, Any] = {
        "chart": {"ref": f"oci://registry.example/charts/shop@{CHART}"},
        "releaseName": RELEASE,
        "targetNamespace": STORAGE,
    }
    return parse_spec(body | fields, name=ME.name, namespace=ME.namespace)


def remediation(
    *, install: int = 0, upgrade: int = 0, strategy: str = "rollback"
) -> HelmReleaseSpec:
    """A spec with install and upgrade remediation settings, parsed as the API serves them."""
    return spec(
        install={"remediation": {"retries": install}},
        upgrade={"remediation": {"retries": upgrade, "strategy": strategy}},
    )


SPEC = spec()
SUSPENDED = spec(suspend=True)
IDENTITY = Identity.of(SPEC)
# A spec that no longer parses: the identity comes from what status last recorded.
RECORDED = Identity.recorded({"release": {"name": RELEASE, "namespace": STORAGE}}, ME.namespace)

INVALID_SPEC = classify(SpecError("spec.chart", "is required"))
INVALID_REFERENCE = classify(
    SpecError(
        "spec.targetNamespace",
        f"{STORAGE!r} is outside the HelmRelease's namespace 'apps', and cross-namespace "
        "references are disabled (--no-cross-namespace-refs)",
    )
)
DEPENDENCY = Failure(
    "DependencyNotReady", "dependency apps/db is not ready", stalled=False, retry_after=10.0
)
CHART_MISSING = Failure(
    "ChartNotFound", f"oci://registry.example/charts/shop@{CHART}: not found", stalled=True
)
VALUES_MISSING = Failure(
    "ValuesSourceNotFound", "ConfigMap apps/shop-values has no key values.yaml", stalled=False
)


# --- records -------------------------------------------------------------------------------


def record(
    version: int,
    status: str,
    *,
    owner: Owner | None = ME,
    stamped: bool = True,
    chart: str = CHART,
    values: str = VALUES,
    interrupted: bool = False,
) -> Record:
    """A stored revision as listed. `owner=None`: written by the Helm CLI (no rudder labels);
    `stamped=False` with an owner: the CLI copied rudder's labels but not its annotations."""
    labels = {"owner": "helm", "name": RELEASE, "status": status, "version": str(version)}
    annotations: dict[str, str] = {}
    if owner is not None:
        labels |= owner.labels()
        if stamped:
            annotations = {
                CHART_DIGEST_ANNOTATION: chart,
                VALUES_DIGEST_ANNOTATION: values,
                INSTANCE_ANNOTATION: "rudder-0",
            }
            if interrupted:
                annotations[INTERRUPTED_ANNOTATION] = "true"
    return Record(
        {
            "metadata": {
                "name": f"sh.helm.release.v1.{RELEASE}.v{version}",
                "namespace": STORAGE,
                "labels": labels,
                "annotations": annotations,
                "creationTimestamp": "2026-11-23T12:00:00Z",
            }
        }
    )


def cli(version: int, status: str) -> Record:
    """A revision the Helm CLI wrote on a release nobody labelled."""
    return record(version, status, owner=None)


def copied(version: int, status: str) -> Record:
    """A revision the Helm CLI wrote on our release: our labels copied, no annotations."""
    return record(version, status, stamped=False)


def theirs(version: int, status: str) -> Record:
    return record(version, status, owner=OTHER)


# --- observations --------------------------------------------------------------------------


def deleting(
    *records: Record,
    has_finalizer: bool = True,
    spec: HelmReleaseSpec | None = SPEC,
    identity: Identity | None = IDENTITY,
    blocked: Failure | None = None,
) -> Observed:
    """A deleted HelmRelease, as observed: its records, no desired inputs."""
    return Observed(
        owner=ME,
        deleting=True,
        has_finalizer=has_finalizer,
        spec=spec,
        identity=identity,
        records=records,
        blocked=blocked,
    )


def blocked(failure: Failure, *, spec: HelmReleaseSpec | None = SPEC) -> Observed:
    """Observation stopped at `failure`: no records, no desired inputs."""
    return Observed(
        owner=ME,
        deleting=False,
        has_finalizer=True,
        spec=spec,
        identity=Identity.of(spec) if spec is not None else None,
        blocked=failure,
    )


def reconciling(
    *records: Record,
    spec: HelmReleaseSpec = SPEC,
    tried: Attempts = FRESH,
    desired: Desired = DESIRED,
) -> Observed:
    """Everything observed: the desired inputs, the records and the attempts."""
    return Observed(
        owner=ME,
        deleting=False,
        has_finalizer=True,
        spec=spec,
        identity=Identity.of(spec),
        records=records,
        desired=desired,
        attempts=tried,
    )


# --- the table -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    observed: Observed
    action: Action
    mentions: tuple[str, ...] = ()  # what the reason must name
    out_of_band: bool = False
    warning: bool = False
    failure: Failure | None = None  # BLOCKED: the failure reported, as observed


def case(
    observed: Observed,
    action: Action,
    *mentions: str,
    out_of_band: bool = False,
    warning: bool = False,
    failure: Failure | None = None,
) -> Case:
    return Case(observed, action, mentions, out_of_band, warning, failure)


DELETION = [
    pytest.param(
        case(deleting(record(1, "deployed"), has_finalizer=False), Action.FORGET),
        id="a deleted HelmRelease without rudder's finalizer is forgotten",
    ),
    pytest.param(
        case(deleting(record(1, "deployed"), has_finalizer=False, spec=SUSPENDED), Action.FORGET),
        id="a deleted suspended HelmRelease without the finalizer is forgotten too",
    ),
    pytest.param(
        case(deleting(record(1, "deployed"), spec=SUSPENDED), Action.LET_GO, RELEASE, "suspended"),
        id="a deleted suspended HelmRelease lets go of the release it drives, uninstalling nothing",
    ),
    pytest.param(
        case(
            deleting(spec=None, identity=None, blocked=INVALID_SPEC),
            Action.LET_GO,
            "spec.chart: is required",
            warning=True,
        ),
        id="a deleted HelmRelease with an invalid spec and no recorded release warns of the error",
    ),
    pytest.param(
        case(
            deleting(spec=None, identity=None), Action.LET_GO, "no release identity", warning=True
        ),
        id="a deleted HelmRelease with no spec, identity or failure lets go with a warning",
    ),
    pytest.param(
        case(
            deleting(record(1, "deployed"), spec=None, identity=RECORDED, blocked=INVALID_SPEC),
            Action.FINALIZE,
            RELEASE,
        ),
        id="a deleted HelmRelease with an invalid spec uninstalls the release status recorded",
    ),
    pytest.param(
        case(deleting(), Action.LET_GO, RELEASE, STORAGE),
        id="a deleted HelmRelease whose release has no revision at all lets go",
    ),
    pytest.param(
        case(deleting(cli(1, "superseded"), cli(2, "deployed")), Action.LET_GO, RELEASE, STORAGE),
        id="a deleted HelmRelease lets go of a release only the Helm CLI wrote",
    ),
    pytest.param(
        case(
            deleting(theirs(1, "superseded"), theirs(2, "deployed")),
            Action.LET_GO,
            RELEASE,
            STORAGE,
        ),
        id="a deleted HelmRelease lets go of a release only another HelmRelease wrote",
    ),
    pytest.param(
        case(deleting(theirs(1, "uninstalled")), Action.LET_GO, RELEASE, STORAGE),
        id="a deleted HelmRelease lets go of another HelmRelease's uninstalled revision",
    ),
    pytest.param(
        case(deleting(copied(1, "deployed")), Action.LET_GO, RELEASE, STORAGE),
        id="a deleted HelmRelease lets go when the CLI only copied its labels to revisions",
    ),
    pytest.param(
        case(deleting(record(1, "superseded"), record(2, "deployed")), Action.FINALIZE, RELEASE),
        id="a deleted HelmRelease uninstalls the release it wrote and still drives",
    ),
    pytest.param(
        case(deleting(record(1, "failed")), Action.FINALIZE, RELEASE),
        id="a deleted HelmRelease uninstalls a release whose only revision of its own failed",
    ),
    pytest.param(
        case(
            deleting(record(1, "superseded"), theirs(2, "deployed")),
            Action.LET_GO,
            RELEASE,
            STORAGE,
        ),
        id="a deleted HelmRelease lets go once another HelmRelease wrote a later revision",
    ),
    pytest.param(
        case(deleting(record(1, "superseded"), cli(2, "deployed")), Action.FINALIZE, RELEASE),
        id="a deleted HelmRelease still uninstalls after a later Helm CLI revision",
    ),
    pytest.param(
        case(deleting(record(1, "superseded"), copied(2, "deployed")), Action.FINALIZE, RELEASE),
        id="a deleted HelmRelease uninstalls after a later CLI revision that copied its labels",
    ),
    pytest.param(
        case(deleting(theirs(1, "uninstalled"), record(2, "deployed")), Action.FINALIZE, RELEASE),
        id="a deleted HelmRelease uninstalls what it reinstalled over another's history",
    ),
]

BLOCKING = [
    pytest.param(
        case(
            blocked(INVALID_SPEC, spec=None),
            Action.BLOCKED,
            "spec.chart: is required",
            failure=INVALID_SPEC,
        ),
        id="an invalid spec blocks everything",
    ),
    pytest.param(
        case(
            blocked(INVALID_REFERENCE, spec=SUSPENDED),
            Action.BLOCKED,
            "spec.targetNamespace",
            failure=INVALID_REFERENCE,
        ),
        id="an invalid reference blocks even a suspended HelmRelease",
    ),
    pytest.param(
        case(
            blocked(INVALID_REFERENCE),
            Action.BLOCKED,
            "--no-cross-namespace-refs",
            failure=INVALID_REFERENCE,
        ),
        id="an invalid reference of a parsed spec blocks",
    ),
    pytest.param(
        case(reconciling(record(1, "deployed"), spec=SUSPENDED), Action.SUSPENDED, "suspend"),
        id="a suspended HelmRelease is left alone",
    ),
    pytest.param(
        case(blocked(DEPENDENCY, spec=SUSPENDED), Action.SUSPENDED, "suspend"),
        id="a suspended HelmRelease reports suspension rather than a dependency not ready",
    ),
    pytest.param(
        case(blocked(DEPENDENCY), Action.BLOCKED, "apps/db", failure=DEPENDENCY),
        id="a dependency not ready blocks the release",
    ),
    pytest.param(
        case(blocked(CHART_MISSING), Action.BLOCKED, "charts/shop", failure=CHART_MISSING),
        id="a chart that cannot be pulled blocks the release",
    ),
    pytest.param(
        case(blocked(VALUES_MISSING), Action.BLOCKED, "apps/shop-values", failure=VALUES_MISSING),
        id="a missing values source blocks the release",
    ),
]

RELEASE_STATE = [
    pytest.param(
        case(reconciling(), Action.INSTALL),
        id="nothing stored is installed",
    ),
    pytest.param(
        case(
            reconciling(record(1, "superseded"), record(2, "deployed")),
            Action.NONE,
            "revision 2",
        ),
        id="a deployed revision in sync needs nothing",
    ),
    pytest.param(
        case(
            reconciling(record(1, "superseded"), record(2, "deployed"), tried=attempts(upgrade=9)),
            Action.NONE,
        ),
        id="a deployed revision in sync needs nothing whatever the failure counters say",
    ),
    pytest.param(
        case(reconciling(record(1, "deployed", chart=OLD_CHART)), Action.UPGRADE, "chart"),
        id="a changed chart is upgraded",
    ),
    pytest.param(
        case(reconciling(record(1, "deployed", values=OLD_VALUES)), Action.UPGRADE, "values"),
        id="changed values are upgraded",
    ),
    pytest.param(
        case(
            reconciling(record(1, "superseded"), cli(2, "deployed")),
            Action.UPGRADE,
            "revision 2",
            out_of_band=True,
        ),
        id="a Helm CLI revision is upgraded over, out of band",
    ),
    pytest.param(
        case(
            reconciling(record(1, "superseded"), copied(2, "deployed")),
            Action.UPGRADE,
            "revision 2",
            out_of_band=True,
        ),
        id="a Helm CLI revision that copied our labels is upgraded over, out of band",
    ),
    pytest.param(
        case(reconciling(cli(1, "deployed")), Action.UPGRADE, out_of_band=True),
        id="a release the Helm CLI installed is adopted, out of band",
    ),
    pytest.param(
        case(reconciling(theirs(1, "deployed")), Action.REFUSE, str(OTHER)),
        id="another HelmRelease's release is refused",
    ),
    pytest.param(
        case(
            reconciling(record(1, "superseded"), theirs(2, "deployed")), Action.REFUSE, str(OTHER)
        ),
        id="a release another HelmRelease wrote to after us is refused",
    ),
    pytest.param(
        case(reconciling(theirs(1, "superseded"), cli(2, "deployed")), Action.REFUSE, str(OTHER)),
        id="another HelmRelease's release is refused even after a later Helm CLI revision",
    ),
    pytest.param(
        case(
            reconciling(record(1, "deployed"), record(2, "pending-upgrade")),
            Action.UNLOCK,
            "revision 2",
        ),
        id="a pending revision of ours is unlocked",
    ),
    pytest.param(
        case(
            reconciling(
                record(1, "deployed"), record(2, "pending-upgrade"), tried=attempts(upgrade=9)
            ),
            Action.UNLOCK,
            "revision 2",
        ),
        id="a pending revision of ours is unlocked before remediation is considered",
    ),
    pytest.param(
        case(reconciling(record(1, "pending-install")), Action.UNLOCK, "revision 1"),
        id="a pending install of ours is unlocked",
    ),
    pytest.param(
        case(
            reconciling(record(1, "deployed"), cli(2, "pending-upgrade")),
            Action.WAIT,
            "revision 2",
        ),
        id="a pending revision of the Helm CLI is waited for",
    ),
    pytest.param(
        case(
            reconciling(record(1, "deployed"), copied(2, "pending-rollback")),
            Action.WAIT,
            "revision 2",
        ),
        id="a pending CLI revision that copied our labels is waited for, not unlocked",
    ),
    pytest.param(
        case(reconciling(record(1, "superseded"), record(2, "uninstalled")), Action.INSTALL),
        id="our uninstalled release with history kept is installed again",
    ),
    pytest.param(
        case(reconciling(theirs(1, "superseded"), theirs(2, "uninstalled")), Action.INSTALL),
        id="another HelmRelease's uninstalled release with history kept is installed",
    ),
    pytest.param(
        case(
            reconciling(theirs(1, "uninstalled"), record(2, "superseded"), record(3, "deployed")),
            Action.NONE,
            "revision 3",
        ),
        id="our revisions after reinstalling over another HelmRelease's history are in sync",
    ),
    pytest.param(
        case(
            reconciling(theirs(1, "uninstalled"), record(2, "deployed", values=OLD_VALUES)),
            Action.UPGRADE,
            "values",
        ),
        id="our revisions after reinstalling over another HelmRelease's history are upgraded",
    ),
    pytest.param(
        case(
            reconciling(theirs(1, "uninstalled"), record(2, "superseded"), theirs(3, "deployed")),
            Action.REFUSE,
            str(OTHER),
        ),
        id="a reinstalled release another HelmRelease then wrote to is refused",
    ),
    pytest.param(
        case(
            reconciling(
                record(1, "deployed"),
                record(2, "failed", interrupted=True),
                spec=remediation(upgrade=0),
                tried=attempts(upgrade=0),
            ),
            Action.UPGRADE,
            "interrupted",
        ),
        id="an interrupted upgrade is retried without counting, even with no retries",
    ),
    pytest.param(
        case(
            reconciling(
                record(1, "failed", interrupted=True),
                spec=remediation(install=0),
                tried=attempts(install=0),
            ),
            Action.INSTALL,
            "interrupted",
        ),
        id="an interrupted install is retried without counting, even with no retries",
    ),
]

REMEDIATION = [
    pytest.param(
        case(
            reconciling(
                record(1, "failed"), spec=remediation(install=2), tried=attempts(install=1)
            ),
            Action.INSTALL,
            "1/2",
        ),
        id="a failed install with retries left is installed again",
    ),
    pytest.param(
        case(
            reconciling(
                record(1, "failed"), spec=remediation(install=2), tried=attempts(install=2)
            ),
            Action.INSTALL,
            "2/2",
        ),
        id="a failed install is retried up to the last retry",
    ),
    pytest.param(
        case(
            reconciling(
                record(1, "failed"), spec=remediation(install=2), tried=attempts(install=3)
            ),
            Action.STALL,
            "3 time(s)",
        ),
        id="a failed install with retries exhausted stalls",
    ),
    pytest.param(
        case(
            reconciling(
                record(1, "failed"), spec=remediation(install=0), tried=attempts(install=1)
            ),
            Action.STALL,
            "install failed",
        ),
        id="a failed install with no retries stalls at once",
    ),
    pytest.param(
        case(
            reconciling(
                record(1, "deployed"),
                record(2, "failed"),
                spec=remediation(upgrade=2),
                tried=attempts(upgrade=1),
            ),
            Action.UPGRADE,
            "1/2",
        ),
        id="a failed upgrade with retries left is upgraded again",
    ),
    pytest.param(
        case(
            reconciling(
                record(1, "superseded"),
                record(2, "deployed"),
                record(3, "failed"),
                record(4, "failed"),
                record(5, "failed"),
                spec=remediation(upgrade=2, strategy="rollback"),
                tried=attempts(upgrade=3),
            ),
            Action.ROLLBACK,
            "revision 2",
        ),
        id="a failed upgrade with retries exhausted rolls back to the last deployed revision",
    ),
    pytest.param(
        case(
            reconciling(
                record(1, "deployed"),
                record(2, "failed"),
                spec=remediation(upgrade=1, strategy="uninstall"),
                tried=attempts(upgrade=2),
            ),
            Action.UNINSTALL,
            "exhausted",
        ),
        id="a failed upgrade with retries exhausted is uninstalled with strategy uninstall",
    ),
    pytest.param(
        case(
            reconciling(
                record(1, "deployed"),
                record(2, "failed"),
                spec=remediation(upgrade=0, strategy="rollback"),
                tried=attempts(upgrade=1),
            ),
            Action.STALL,
            "upgrade failed",
        ),
        id="a failed upgrade with no retries stalls without remediation",
    ),
    pytest.param(
        case(
            reconciling(
                record(1, "deployed"),
                record(2, "failed"),
                spec=remediation(upgrade=0, strategy="uninstall"),
                tried=attempts(upgrade=1),
            ),
            Action.STALL,
            "upgrade failed",
        ),
        id="a failed upgrade with no retries is not uninstalled either",
    ),
    pytest.param(
        case(
            reconciling(record(1, "deployed"), record(2, "failed"), spec=remediation(upgrade=0)),
            Action.UPGRADE,
            "revision 2",
        ),
        id="a failed upgrade is tried once more with new inputs that kept the digests",
    ),
    pytest.param(
        case(reconciling(record(1, "failed"), spec=remediation(install=0)), Action.INSTALL),
        id="a failed install is tried once more with new inputs that kept the digests",
    ),
    pytest.param(
        case(
            reconciling(
                record(1, "deployed", values=OLD_VALUES),
                record(2, "failed", values=OLD_VALUES),
                spec=remediation(upgrade=0),
            ),
            Action.UPGRADE,
            "values",
        ),
        id="a failed upgrade is followed by an upgrade to new values",
    ),
    pytest.param(
        case(
            reconciling(
                record(1, "superseded", values=OLD_VALUES),
                record(2, "failed"),
                record(3, "failed"),
                record(4, "failed"),
                record(5, "deployed", values=OLD_VALUES),
                spec=remediation(upgrade=2, strategy="rollback"),
                tried=attempts(upgrade=3),
            ),
            Action.STALL,
            "change the spec",
        ),
        id="inputs already rolled back are not upgraded to again",
    ),
    pytest.param(
        case(
            reconciling(
                record(1, "deployed"),
                record(2, "failed"),
                record(3, "failed"),
                record(4, "uninstalled"),
                spec=remediation(upgrade=2, strategy="uninstall"),
                tried=attempts(upgrade=3),
            ),
            Action.STALL,
            "change the spec",
        ),
        id="inputs already uninstalled with history kept are not installed again",
    ),
    pytest.param(
        case(
            reconciling(
                spec=remediation(upgrade=2, strategy="uninstall"), tried=attempts(upgrade=3)
            ),
            Action.STALL,
            "change the spec",
        ),
        id="inputs already uninstalled without history are not installed again",
    ),
]


@pytest.mark.parametrize("expected", [*DELETION, *BLOCKING, *RELEASE_STATE, *REMEDIATION])
def test_next_action(expected: Case) -> None:
    decision = next_action(expected.observed)

    assert decision.action is expected.action, decision.reason
    assert decision.out_of_band is expected.out_of_band
    assert decision.warning is expected.warning
    assert decision.failure == expected.failure
    if decision.failure is not None and decision.failure.reason == "InvalidSpec":
        assert decision.failure.stalled
    for needed in expected.mentions:
        assert needed in decision.reason


def _cases(params: list[Any]) -> list[Case]:
    return [param.values[0] for param in params]


def test_the_table_reaches_every_action() -> None:
    reached = {case.action for case in _cases([*DELETION, *BLOCKING, *RELEASE_STATE, *REMEDIATION])}
    assert reached == set(Action)
