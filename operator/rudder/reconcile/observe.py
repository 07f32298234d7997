"""Build the `Observed` bundle of one reconcile: reads only, in the order decide needs them.

The spec is parsed and the identity resolved first (tenancy applied; from status when the
spec is invalid), so every read made for the release afterwards — its records, values
sources, chart Secrets — is made as that identity. Observation stops at the first thing that
blocks acting (deletion needs only the records; a suspended HelmRelease needs nothing more).
"""

from __future__ import annotations

import base64
import dataclasses

from rudder.chart.errors import REGISTRY_AUTH_FAILED, ChartError
from rudder.chart.http_repo import HttpChart
from rudder.chart.http_transport import RepoCredentials
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
from rudder.postrender.pipeline import inputs_digest
from rudder.reconcile.clusters import KubeConfigError, RemoteClusters
from rudder.reconcile.decide import drives
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
        self,
        kube: KubeClient,
        applier: Applier,
        charts: ChartSource,
        config: OperatorConfig,
        clusters: RemoteClusters,
    ) -> None:
        self.kube = kube  # rudder's own: HelmRelease objects only
        self.applier = applier
        self.charts = charts
        self.config = config
        self.clusters = clusters  # spec.kubeConfig's

    async def observe(
        self,
        target: Target,
        draft: StatusDraft,
        parsed: tuple[HelmReleaseSpec | None, SpecError | None],
    ) -> Observed:
        """`parsed` is `parse(target)`, done by the caller (it needs the intervals even
        when observing fails)."""
        spec, error = parsed
        candidates = self._identities(target, spec, error, draft)
        identity = candidates[0] if candidates else None
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
        if target.deleting:
            if not target.has_finalizer or (spec is not None and spec.suspend):
                return base  # nothing will be uninstalled: no need to read the records
            return await self._driven(target, base, candidates)
        if spec is None or error is not None or spec.suspend:
            return base  # nothing is done to the release: no clients (no remote connection)
        try:
            clients = await self._clients(target, identity)
            base = dataclasses.replace(base, clients=clients)
            return await self._inputs(target, spec, base, clients, draft)
        except (ChartError, ValuesSourceError, KubeConfigError) as failed:
            return dataclasses.replace(base, blocked=classify(failed))

    async def _clients(self, target: Target, identity: Identity) -> ReleaseClients:
        """As `identity`, on the cluster the release is in: this one, or spec.kubeConfig's
        (its Secret read as the identity, like every other Secret the spec names)."""
        key = (target.namespace, target.name)
        ref = identity.kube_config  # the spec's, or the one status recorded
        if ref is None:
            await self.clusters.forget(key)
            return ReleaseClients.acting_as(identity.user, self.kube, self.applier)
        secret = await self.kube.impersonate(identity.user).get_or_none(
            f"/api/v1/namespaces/{target.namespace}/secrets/{ref.secret_name}"
        )
        encoded = ((secret or {}).get("data") or {}).get(ref.key)
        if not encoded:
            what = "does not exist" if secret is None else f"has no key {ref.key!r}"
            raise KubeConfigError(
                "KubeConfigNotFound",
                f"spec.kubeConfig: Secret {target.namespace}/{ref.secret_name} {what}",
                stalled=False,
            )
        remote = await self.clusters.use(key, base64.b64decode(encoded))
        return ReleaseClients.acting_as(identity.user, self.kube, remote.applier, remote.renderer)

    async def _driven(
        self,
        target: Target,
        base: Observed,
        candidates: list[Identity],
    ) -> Observed:
        """Deleting: the first identity whose release this HelmRelease drives (the spec's,
        then the one status recorded), with its records; else the last one read."""
        observed = base
        for identity in candidates:
            clients = await self._clients(target, identity)
            # Uninstall acts on what the API holds, whatever a watch last saw.
            observed = await with_history(
                dataclasses.replace(base, identity=identity, clients=clients), fresh=True
            )
            if drives(observed.records, base.owner):
                break
        return observed

    def _identities(
        self,
        target: Target,
        spec: HelmReleaseSpec | None,
        error: SpecError | None,
        draft: StatusDraft,
    ) -> list[Identity]:
        """The spec's identity while it is valid. Deleting, also the one status recorded:
        the spec may have become invalid or refused, or name a release (a rename) that was
        never installed, while the recorded one holds objects."""
        valid = Identity.of(spec) if spec is not None and error is None else None
        recorded = self._recorded(target, valid, draft)
        if not target.deleting:
            return [valid] if valid is not None else [recorded] if recorded is not None else []
        return [i for i in dict.fromkeys((valid, recorded)) if i is not None]

    def _recorded(
        self, target: Target, valid: Identity | None, draft: StatusDraft
    ) -> Identity | None:
        recorded = Identity.recorded(draft.current, target.namespace)
        if recorded is None:
            return None
        release = (draft.current.get("release") or {}) if draft.current else {}
        same = valid is not None and (valid.release_name, valid.storage_namespace) == (
            recorded.release_name,
            recorded.storage_namespace,
        )
        if same and valid is not None and "targetNamespace" not in release:
            # Status written before the target namespace was recorded: the spec's.
            recorded = dataclasses.replace(recorded, target_namespace=valid.target_namespace)
        if recorded.user is None and "serviceAccountName" not in release:
            # Written before the ServiceAccount was recorded: the spec's, else the
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
        # A tag (allowTag) or a version range (allowVersionRange) is resolved again on
        # every reconcile; the digest it gives is what is installed and compared.
        request = await self.charts.pin(await self._chart_request(target, spec, clients))
        digest = request.digest
        assert digest is not None
        values = await compose_values(clients.kube, target.namespace, spec.values_from, spec.values)
        # The digest the release is stamped with covers the post-renderers too.
        values = dataclasses.replace(values, digest=inputs_digest(values.digest, spec))
        observed = await with_history(
            dataclasses.replace(
                base,
                desired=Desired(target.owner, digest, values.digest),
                values=values,
                chart_request=request,
                plugin_requests=await self._plugin_requests(target, spec, clients),
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
        chart = spec.chart
        if chart.http is not None:
            return await self._http_chart_request(target, spec, clients)
        return await self._artifact_request(
            target,
            spec,
            clients,
            chart.ref,
            allow_tag=chart.allow_tag,
            insecure=chart.insecure,
            secret_ref=chart.secret_ref,
            cert_secret_ref=chart.cert_secret_ref,
            cosign_secret=chart.verify_cosign_secret,
        )

    async def _http_chart_request(
        self, target: Target, spec: HelmReleaseSpec, clients: ReleaseClients
    ) -> ChartRequest:
        """An HTTP repository's chart; secretRef holds username and password, or token."""
        chart = spec.chart.http
        assert chart is not None
        auth = await _secret_data(clients, target.namespace, spec.chart.secret_ref)
        ca = await _secret_data(clients, target.namespace, spec.chart.cert_secret_ref)
        credentials = None
        if auth:
            credentials = RepoCredentials(
                username=auth.get("username", b"").decode(errors="replace"),
                password=auth.get("password", b"").decode(errors="replace"),
                token=auth.get("token", b"").decode(errors="replace").strip(),
            )
            if not credentials.token and not credentials.username:
                raise ChartError(
                    REGISTRY_AUTH_FAILED,
                    f"Secret {spec.chart.secret_ref} (spec.chart.secretRef) has neither "
                    "username and password nor token",
                )
        http = HttpChart(
            repository=chart.repository,
            name=chart.name,
            version=chart.version,
            digest=chart.digest,
            allow_range=chart.allow_version_range,
            pass_credentials=chart.pass_credentials,
        )
        return ChartRequest(
            ref=http.subject,
            ca_pem=ca.get("ca.crt"),
            identity=spec.service_account_user,
            check_access=bool(self.config.default_service_account),
            http=http,
            repo_credentials=credentials,
        )

    async def _plugin_requests(
        self, target: Target, spec: HelmReleaseSpec, clients: ReleaseClients
    ) -> tuple[ChartRequest | None, ...]:
        """One request per post-renderer: its Wasm plugin's, None for kustomize."""
        requests: list[ChartRequest | None] = []
        for item in spec.post_renderers:
            wasm = item.wasm
            if wasm is None:
                requests.append(None)
                continue
            requests.append(
                await self._artifact_request(
                    target,
                    spec,
                    clients,
                    wasm.ref,
                    allow_tag=False,
                    insecure=wasm.insecure,
                    secret_ref=wasm.secret_ref,
                    cert_secret_ref=wasm.cert_secret_ref,
                    cosign_secret=wasm.verify_cosign_secret,
                )
            )
        return tuple(requests)

    async def _artifact_request(
        self,
        target: Target,
        spec: HelmReleaseSpec,
        clients: ReleaseClients,
        ref: str,
        *,
        allow_tag: bool,
        insecure: bool,
        secret_ref: str | None,
        cert_secret_ref: str | None,
        cosign_secret: str | None,
    ) -> ChartRequest:
        """A pull of a chart or plugin, its Secrets read as the release's identity."""

        async def secret_key(name: str | None, key: str) -> bytes | None:
            return (await _secret_data(clients, target.namespace, name)).get(key)

        return ChartRequest(
            ref=ref,
            allow_tag=allow_tag,
            insecure=insecure,
            docker_config_json=await secret_key(secret_ref, ".dockerconfigjson"),
            ca_pem=await secret_key(cert_secret_ref, "ca.crt"),
            cosign_public_key_pem=(
                await secret_key(cosign_secret, "cosign.pub") if cosign_secret else None
            ),
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


async def _secret_data(
    clients: ReleaseClients, namespace: str, name: str | None
) -> dict[str, bytes]:
    """The decoded data of Secret `name` (none named, or missing: empty), read as the
    release's identity."""
    if not name:
        return {}
    secret = await clients.kube.get_or_none(f"/api/v1/namespaces/{namespace}/secrets/{name}")
    data = (secret or {}).get("data") or {}
    return {key: base64.b64decode(value) for key, value in data.items() if value}


async def with_history(observed: Observed, *, fresh: bool = False) -> Observed:
    """`observed` with the release's records read (again), as its identity; `fresh`: from
    the API itself, not the shared watch."""
    assert observed.identity is not None
    assert observed.clients is not None
    identity = observed.identity
    records = await observed.clients.store.history(
        identity.storage_namespace, identity.release_name, fresh=fresh
    )
    return observed.with_records(records)
