"""Build the `Observed` bundle of one reconcile: reads only, in the order decide needs them.

The spec is parsed and the identity resolved first (tenancy applied; from status when the
spec is invalid), so every read made for the release afterwards — its records, values
sources, chart Secrets — is made as that identity. Observation stops at the first thing that
blocks acting (deletion needs only the records; a suspended HelmRelease needs nothing more).
"""

from __future__ import annotations

import base64
import dataclasses

from rudder.chart.errors import ChartError
from rudder.chart.source import ChartRequest, ChartSource
from rudder.config import OperatorConfig
from rudder.kube.client import KubeClient
from rudder.kube.ssa import Applier
from rudder.model import (
    HelmReleaseSpec,
    SpecError,
    conditions_from_status,
    find_condition,
    parse_spec,
)
from rudder.reconcile.failures import Failure, classify
from rudder.reconcile.identity import Identity, ReleaseClients, service_account_user
from rudder.reconcile.observed import Attempts, Desired, Observed
from rudder.reconcile.status import StatusDraft
from rudder.reconcile.target import HELMRELEASES, Target
from rudder.reconcile.values_sources import ValuesSourceError, compose_values
from rudder.release.store import Owner

ATTEMPT_COUNTERS = ("failures", "installFailures", "upgradeFailures")
DEPENDENCY_CYCLE_LIMIT = 32
DEPENDENCY_RECHECK = 10.0


class Observer:
    def __init__(
        self, kube: KubeClient, applier: Applier, charts: ChartSource, config: OperatorConfig
    ) -> None:
        self.kube = kube  # rudder's own: HelmRelease objects only
        self.applier = applier
        self.charts = charts
        self.config = config

    async def observe(self, target: Target, draft: StatusDraft) -> Observed:
        spec, error = self.parse(target)
        identity = self._identity(target, spec, error, draft)
        base = Observed(
            owner=target.owner,
            deleting=target.deleting,
            has_finalizer=target.has_finalizer,
            spec=spec,
            identity=identity,
            blocked=classify(error) if error else None,
        )
        if identity is None:
            return base
        clients = ReleaseClients.acting_as(identity.user, self.kube, self.applier)
        base = dataclasses.replace(base, clients=clients)
        if target.deleting:
            if not target.has_finalizer or (spec is not None and spec.suspend):
                return base  # nothing will be uninstalled: no need to read the records
            return await with_history(base)
        if spec is None or error is not None or spec.suspend:
            return base
        try:
            return await self._inputs(target, spec, base, clients, draft)
        except (ChartError, ValuesSourceError) as failed:
            return dataclasses.replace(base, blocked=classify(failed))

    def _identity(
        self,
        target: Target,
        spec: HelmReleaseSpec | None,
        error: SpecError | None,
        draft: StatusDraft,
    ) -> Identity | None:
        """The spec's identity while it is valid. Deleting, the one status recorded comes
        first: it is the one that holds the release, whatever the spec has become since
        (an invalid or refused spec, a rename not installed yet)."""
        valid = Identity.of(spec) if spec is not None and error is None else None
        if not target.deleting and valid is not None:
            return valid
        recorded = Identity.recorded(draft.current, target.namespace)
        if recorded is None:
            return valid
        if recorded.user is None and not recorded.service_account:
            # Status written before the ServiceAccount was recorded: the spec's, else the
            # operator's default (tenant mode), never rudder itself by accident.
            raw = (target.body.get("spec") or {}).get("serviceAccountName")
            account = str(raw or self.config.default_service_account or "")
            if account:
                user = service_account_user(target.namespace, account)
                recorded = dataclasses.replace(recorded, service_account=account, user=user)
        return recorded

    def parse(self, target: Target) -> tuple[HelmReleaseSpec | None, SpecError | None]:
        """The parsed spec with tenancy applied, and what is wrong with it."""
        try:
            spec = parse_spec(
                target.body.get("spec") or {}, name=target.name, namespace=target.namespace
            )
        except SpecError as error:
            return None, error
        spec = self._tenancy(target, spec)
        try:
            self._check_references(target, spec)
        except SpecError as error:
            return spec, error
        return spec, None

    def _tenancy(self, target: Target, spec: HelmReleaseSpec) -> HelmReleaseSpec:
        """--default-service-account: act as that ServiceAccount of the HelmRelease's
        namespace when the spec names none (without it, rudder acts as itself)."""
        if spec.service_account_user or not self.config.default_service_account:
            return spec
        name = self.config.default_service_account
        user = service_account_user(target.namespace, name)
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

    async def _inputs(
        self,
        target: Target,
        spec: HelmReleaseSpec,
        base: Observed,
        clients: ReleaseClients,
        draft: StatusDraft,
    ) -> Observed:
        """Dependencies, chart digest, values and records: what an install or upgrade needs."""
        waiting = await self._dependencies(target, spec)
        if waiting is not None:
            return dataclasses.replace(base, blocked=waiting)
        request = await self._chart_request(target, spec, clients)
        digest = spec.chart.reference.digest
        if digest is None:  # allowTag: re-resolved every interval
            digest = await self.charts.resolve(request)
        values = await compose_values(clients.kube, target.namespace, spec.values_from, spec.values)
        observed = await with_history(
            dataclasses.replace(
                base,
                desired=Desired(target.owner, digest, values.digest),
                values=values,
                chart_request=request if spec.chart.reference.digest else request.pinned(digest),
            )
        )
        return dataclasses.replace(
            observed, attempts=self._attempts(target, digest, values.digest, draft)
        )

    @staticmethod
    def _attempts(target: Target, chart: str, values: str, draft: StatusDraft) -> Attempts:
        """What status remembers of these inputs; a change of inputs resets the counters."""
        attempt = {"generation": target.generation, "chartDigest": chart, "valuesDigest": values}
        same = draft.fields.get("lastAttempted") == attempt
        if not same:
            for counter in ATTEMPT_COUNTERS:
                draft.set(counter, None)
        draft.set("lastAttempted", attempt)
        return Attempts(
            same_inputs=same,
            install_failures=int(draft.fields.get("installFailures", 0)),
            upgrade_failures=int(draft.fields.get("upgradeFailures", 0)),
        )

    async def _chart_request(
        self, target: Target, spec: HelmReleaseSpec, clients: ReleaseClients
    ) -> ChartRequest:
        async def secret_key(name: str | None, key: str) -> bytes | None:
            if not name:
                return None
            secret = await clients.kube.get_or_none(
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

    async def _dependencies(self, target: Target, spec: HelmReleaseSpec) -> Failure | None:
        """None when every dependsOn HelmRelease is Ready for its current generation. A
        cycle stalls; a dependency not ready is re-checked."""
        if not spec.depends_on:
            return None
        not_ready = []
        for dep in spec.depends_on:
            if await self._depends_on_me(Owner(dep.namespace, dep.name), target.owner):
                message = f"dependsOn {dep.namespace}/{dep.name} leads back to this HelmRelease"
                return Failure("DependencyCycle", message, stalled=True)
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
            message = f"waiting for {', '.join(not_ready)} to be Ready"
            return Failure(
                "DependencyNotReady", message, stalled=False, retry_after=DEPENDENCY_RECHECK
            )
        return None

    async def _depends_on_me(self, start: Owner, me: Owner) -> bool:
        """Does following dependsOn from `start` reach `me`? (bounded walk)"""
        seen: set[Owner] = set()
        frontier = [start]
        while frontier and len(seen) < DEPENDENCY_CYCLE_LIMIT:
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


async def with_history(observed: Observed) -> Observed:
    """`observed` with the release's records read (again), as its identity."""
    assert observed.identity is not None
    assert observed.clients is not None
    identity = observed.identity
    records = await observed.clients.store.history(
        identity.storage_namespace, identity.release_name
    )
    return observed.with_records(records)
