"""The chart source the reconciler calls: `resolve` a reference to a digest, `get` the chart.

    source = ChartSource(cache_dir, max_cache_bytes, max_compressed, max_uncompressed)
    digest = await source.resolve(request)            # tags need allowTag; asks the registry
    chart = await source.get(request.pinned(digest))  # verified, cached, parsed once

Network and parsing block, so they run in worker threads. Concurrent requests for the
same chart share one download; a parsed chart is kept in memory per digest, so a chart
used by many HelmReleases is downloaded and parsed once. Cosign verification, when a
public key is given, happens before the chart is returned, and its success is remembered
in memory per (digest, key).

The cache is keyed by digest and shared by every HelmRelease. In tenant mode
(`check_access`) a request is served only once the registry has accepted that request's
own credentials for the digest in the repository it names (one HEAD), remembered per
(identity, registry, repository, digest, credentials) for `ACCESS_TTL`; otherwise a
tenant without access to a private repository would get its charts by naming a digest.

Charts of classic HTTP repositories (`request.http`) take the same path through
`HttpRepositories`: the same disk cache keyed by the archive's digest, the same parse
once per digest, and an access check of their own in tenant mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import helm_python
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from rudder.chart import metrics
from rudder.chart.archive import ArchiveLimits
from rudder.chart.cache import BlobCache
from rudder.chart.cosign import key_fingerprint, load_public_key
from rudder.chart.dockerconfig import DockerConfigError, credentials_for
from rudder.chart.errors import (
    INVALID_CHART,
    INVALID_CHART_REFERENCE,
    REGISTRY_AUTH_FAILED,
    REGISTRY_UNAVAILABLE,
    VERIFICATION_FAILED,
    ChartError,
)
from rudder.chart.http_repo import DEFAULT_MAX_INDEX_BYTES, INDEX_TTL, HttpChart, HttpRepositories
from rudder.chart.http_transport import RepoCredentials, Transport
from rudder.chart.oci import OciPuller, PulledChart
from rudder.chart.reference import OciReference, parse_reference
from rudder.chart.registry import Endpoint, RegistryClient
from rudder.chart.repo_index import display_url
from rudder.chart.signatures import verify_signed
from rudder.chart.singleflight import SingleFlight

log = logging.getLogger(__name__)

# How long a registry's yes to one identity's credentials is trusted: steady-state
# reconciles and retries skip the registry, and revoked access stops working this soon.
ACCESS_TTL: Final = 300.0
ACCESS_ENTRIES: Final = 4096  # remembered grants, least recently used dropped first

# identity, registry, repository, digest, transport key (credentials, CA, scheme)
_AccessKey = tuple[str, str, str, str, str]


@dataclass(frozen=True)
class ChartRequest:
    """What a HelmRelease's `spec.chart` asks for, with its Secrets' contents read.

    An HTTP repository's chart has `http` set, `repo_credentials` for its secretRef, and
    a `ref` that only names it in messages."""

    ref: str
    allow_tag: bool = False
    insecure: bool = False
    docker_config_json: bytes | None = field(default=None, repr=False)  # .dockerconfigjson
    ca_pem: bytes | None = field(default=None, repr=False)  # ca.crt
    cosign_public_key_pem: bytes | None = field(default=None, repr=False)  # cosign.pub
    # Tenant mode: the user the HelmRelease acts as, and that a cached chart is served only
    # after the registry accepted this request's credentials for it.
    identity: str | None = None
    check_access: bool = False
    http: HttpChart | None = None
    repo_credentials: RepoCredentials | None = field(default=None, repr=False)

    def pinned(self, digest: str) -> ChartRequest:
        """The same request pinned to `digest` (what `resolve` returned)."""
        return replace(self, ref=str(parse_reference(self.ref).pinned(digest)))

    @property
    def digest(self) -> str | None:
        """The digest the request pins, None while a tag or version range is unresolved."""
        if self.http is not None:
            return self.http.digest
        return parse_reference(self.ref).digest

    def status_fields(self, spec_ref: str) -> dict[str, str]:
        """Where the chart came from, for status.chart: spec.chart.ref as written, or the
        repository (without user info or query); the archive URL comes with the chart."""
        if self.http is None:
            return {"ref": spec_ref}
        return {"repository": display_url(self.http.repository)}


@dataclass(frozen=True)
class ChartMetadata:
    name: str
    version: str
    app_version: str


@dataclass(frozen=True)
class LoadedChart:
    ref: str
    digest: str  # the pinned manifest (or index) digest, `sha256:…`
    archive: bytes = field(repr=False)
    chart: Any = field(repr=False)  # helm_python.Chart, immutable and shared between threads
    metadata: ChartMetadata
    url: str | None = None  # where an HTTP repository's archive came from, when known


class ChartSource:
    def __init__(
        self,
        cache_dir: Path,
        max_cache_bytes: int,
        max_compressed: int,
        max_uncompressed: int,
        *,
        memory_entries: int = 64,
        timeout: float = 30.0,
        access_ttl: float = ACCESS_TTL,
        clock: Callable[[], float] = time.monotonic,
        max_index_bytes: int = DEFAULT_MAX_INDEX_BYTES,
        index_ttl: float = INDEX_TTL,
    ) -> None:
        self.cache = BlobCache(Path(cache_dir), max_cache_bytes)
        limits = ArchiveLimits(max_compressed, max_uncompressed)
        self._puller = OciPuller(self.cache, limits)
        self.http = HttpRepositories(
            self.cache,
            limits,
            timeout=timeout,
            max_index_bytes=max_index_bytes,
            index_ttl=index_ttl,
            clock=clock,
        )
        self._ca_dir = Path(cache_dir) / "ca"
        self._timeout = timeout
        self._memory: OrderedDict[str, LoadedChart] = OrderedDict()
        self._memory_entries = memory_entries
        self._verified: set[tuple[str, str]] = set()  # (digest, key fingerprint)
        self._loads: SingleFlight[tuple[str, str], LoadedChart] = SingleFlight()
        self._verifications: SingleFlight[tuple[str, str, str], None] = SingleFlight()
        self._resolutions: SingleFlight[tuple[str, str], str] = SingleFlight()
        self._access_ttl = access_ttl
        self._clock = clock
        self._access: OrderedDict[_AccessKey, float] = OrderedDict()  # key -> expiry
        self._access_checks: SingleFlight[_AccessKey, None] = SingleFlight()

    async def resolve(self, request: ChartRequest) -> str:
        """The digest the request pins, or (allowTag) the one its tag points to right now."""
        ref = self._reference(request)
        if ref.digest is not None:
            return ref.digest
        key = (str(ref), transport_key(request))
        digest = await self._resolutions.run(
            key, lambda: asyncio.to_thread(self._resolve_blocking, request, ref)
        )
        if request.check_access:
            # The registry just served the tag's manifest to these credentials.
            self._grant(_access_key(request, ref, digest))
        return digest

    async def pin(self, request: ChartRequest) -> ChartRequest:
        """`request` pinned to what it installs now: a tag, or an HTTP repository's version
        range, resolved (asking the registry or the index); a pinned request as it is."""
        if request.http is not None:
            if request.digest is not None:
                return request
            pinned = await self.http.pin(request.http, self._transport(request))
            return replace(request, http=pinned)
        if request.digest is not None:
            return request
        return request.pinned(await self.resolve(request))

    async def get(self, request: ChartRequest) -> LoadedChart:
        """The chart, verified by digest (and by cosign when a key is given), parsed once."""
        if request.http is not None:
            return await self._get_http(request)
        ref = self._reference(request)
        if ref.digest is None:
            ref = ref.pinned(await self.resolve(request))
        digest = ref.digest
        assert digest is not None
        await self.authorize(request, ref, digest)
        loaded = self._remembered(digest)
        if loaded is not None:
            metrics.CACHE_HITS.labels(tier="memory").inc()
        else:
            loaded = await self._loads.run(
                (digest, transport_key(request)), lambda: self._load(request, ref)
            )
        return replace(loaded, ref=request.ref)

    async def authorize(self, request: ChartRequest, ref: OciReference, digest: str) -> None:
        """What must hold before cached content of `digest` is served to `request`: the
        registry's yes to its credentials (tenant mode) and its cosign signature (a key
        given). Post-renderer plugins go through the same gate."""
        if request.check_access:
            await self._check_access(request, ref, digest)
        if request.cosign_public_key_pem is not None:
            await self._verify(request, ref, digest)

    async def _get_http(self, request: ChartRequest) -> LoadedChart:
        transport = self._transport(request)
        chart = (await self.pin(request)).http
        assert chart is not None
        assert chart.digest is not None
        if request.check_access:
            await self.http.check_access(chart, transport)
        digest = chart.digest
        loaded = self._remembered(digest)
        if loaded is not None:
            metrics.CACHE_HITS.labels(tier="memory").inc()
        else:
            loaded = await self._loads.run(
                (digest, transport.key), lambda: self._load_http(chart, transport)
            )
        return replace(loaded, ref=request.ref, url=chart.url or self.http.url_of(digest))

    async def _load_http(self, chart: HttpChart, transport: Transport) -> LoadedChart:
        assert chart.digest is not None
        started = time.monotonic()
        try:
            archive, downloaded = await self.http.archive(chart, transport)
        except ChartError as error:
            metrics.PULL_DURATION.labels(result=error.reason).observe(time.monotonic() - started)
            raise
        if downloaded:
            metrics.CACHE_MISSES.inc()
            metrics.PULL_DURATION.labels(result="success").observe(time.monotonic() - started)
            log.info("downloaded %s (%d bytes)", chart.subject, downloaded)
        else:
            metrics.CACHE_HITS.labels(tier="disk").inc()
        loaded = await asyncio.to_thread(_parse, chart.subject, chart.digest, archive)
        self._remember(loaded)
        return loaded

    def _transport(self, request: ChartRequest) -> Transport:
        assert request.http is not None
        ca_bundle = self._ca_bundle(request.ref, request.ca_pem) if request.ca_pem else None
        return Transport(request.repo_credentials, ca_bundle, transport_key(request))

    # -- steps -----------------------------------------------------------------------------

    def _reference(self, request: ChartRequest) -> OciReference:
        ref = parse_reference(request.ref)
        if ref.digest is None and not request.allow_tag:
            raise ChartError(
                INVALID_CHART_REFERENCE,
                f"{request.ref}: a tag is accepted only with spec.chart.allowTag: true; "
                "pin the chart with @sha256:<digest>",
            )
        return ref

    async def _check_access(self, request: ChartRequest, ref: OciReference, digest: str) -> None:
        """Asked before the caches are used, even for a cold pull: another request's pull
        may fill them at any moment, and what it proved was for its credentials only."""
        key = _access_key(request, ref, digest)
        expiry = self._access.get(key)
        if expiry is not None and self._clock() < expiry:
            self._access.move_to_end(key)
            return
        await self._access_checks.run(
            key, lambda: asyncio.to_thread(self._check_access_blocking, request, ref, digest)
        )
        self._grant(key)
        log.debug("registry granted %s access to %s", request.identity or "rudder", ref)

    def _grant(self, key: _AccessKey) -> None:
        self._access[key] = self._clock() + self._access_ttl
        self._access.move_to_end(key)
        while len(self._access) > ACCESS_ENTRIES:
            self._access.popitem(last=False)

    async def _verify(self, request: ChartRequest, ref: OciReference, digest: str) -> None:
        assert request.cosign_public_key_pem is not None
        try:
            public_key = load_public_key(request.cosign_public_key_pem)
        except ValueError as error:
            raise ChartError(VERIFICATION_FAILED, f"{ref}: {error}") from None
        remembered = (digest, key_fingerprint(public_key))
        if remembered in self._verified:
            return
        await self._verifications.run(
            (*remembered, transport_key(request)),
            lambda: asyncio.to_thread(self._verify_blocking, request, ref, digest, public_key),
        )
        self._verified.add(remembered)

    async def _load(self, request: ChartRequest, ref: OciReference) -> LoadedChart:
        started = time.monotonic()
        try:
            pulled = await asyncio.to_thread(self._pull_blocking, request, ref)
        except ChartError as error:
            metrics.PULL_DURATION.labels(result=error.reason).observe(time.monotonic() - started)
            raise
        if pulled.downloaded_bytes:
            metrics.CACHE_MISSES.inc()
            metrics.PULL_DURATION.labels(result="success").observe(time.monotonic() - started)
            log.info("pulled %s (%d bytes)", ref, pulled.downloaded_bytes)
        else:
            metrics.CACHE_HITS.labels(tier="disk").inc()
        loaded = await asyncio.to_thread(_parse, str(ref), pulled.digest, pulled.archive)
        self._remember(loaded)
        return loaded

    def _remembered(self, digest: str) -> LoadedChart | None:
        loaded = self._memory.get(digest)
        if loaded is not None:
            self._memory.move_to_end(digest)
        return loaded

    def _remember(self, loaded: LoadedChart) -> None:
        self._memory[loaded.digest] = loaded
        self._memory.move_to_end(loaded.digest)
        while len(self._memory) > self._memory_entries:
            self._memory.popitem(last=False)  # the chart handle is freed once unused

    # -- blocking parts, run in worker threads ---------------------------------------------

    def _resolve_blocking(self, request: ChartRequest, ref: OciReference) -> str:
        with contextlib.closing(self.registry_client(request, ref)) as client:
            return self._puller.resolve(client, ref)

    def _check_access_blocking(self, request: ChartRequest, ref: OciReference, digest: str) -> None:
        with contextlib.closing(self.registry_client(request, ref)) as client:
            self._puller.check_access(client, ref, digest)

    def _pull_blocking(self, request: ChartRequest, ref: OciReference) -> PulledChart:
        with contextlib.closing(self.registry_client(request, ref)) as client:
            return self._puller.pull(client, ref)

    def _verify_blocking(
        self,
        request: ChartRequest,
        ref: OciReference,
        digest: str,
        public_key: ec.EllipticCurvePublicKey,
    ) -> None:
        with contextlib.closing(self.registry_client(request, ref)) as client:
            verify_signed(client, ref, digest, public_key)

    def registry_client(self, request: ChartRequest, ref: OciReference) -> RegistryClient:
        """A client for `ref`'s registry with the request's credentials and CA (blocking use)."""
        credentials = None
        if request.docker_config_json is not None:
            try:
                credentials = credentials_for(request.docker_config_json, ref.registry)
            except DockerConfigError as error:
                raise ChartError(REGISTRY_AUTH_FAILED, f"{ref}: {error}") from None
        endpoint = Endpoint(
            registry=ref.registry,
            insecure=request.insecure,
            credentials=credentials,
            ca_bundle=self._ca_bundle(str(ref), request.ca_pem) if request.ca_pem else None,
        )
        return RegistryClient(endpoint, subject=str(ref), timeout=self._timeout)

    def _ca_bundle(self, subject: str, pem: bytes) -> Path:
        """The CA certificates as a file (what requests wants), named by their content."""
        try:
            x509.load_pem_x509_certificates(pem)
        except ValueError:
            raise ChartError(
                REGISTRY_UNAVAILABLE,
                f"{subject}: ca.crt of spec.chart.certSecretRef is not a PEM certificate",
            ) from None
        path = self._ca_dir / f"{hashlib.sha256(pem).hexdigest()}.pem"
        if not path.exists():
            self._ca_dir.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self._ca_dir)
            with os.fdopen(handle, "wb") as out:
                out.write(pem)
            os.replace(temporary, path)
        return path


def _parse(subject: str, digest: str, archive: bytes) -> LoadedChart:
    try:
        chart = helm_python.Chart.load_archive(archive)
        metadata = chart.metadata
    except helm_python.HelmError as error:
        raise ChartError(INVALID_CHART, f"{subject}: Helm cannot load the chart: {error}") from None
    return LoadedChart(
        ref=subject,
        digest=digest,
        archive=archive,
        chart=chart,
        metadata=ChartMetadata(
            name=str(metadata.get("name") or ""),
            version=str(metadata.get("version") or ""),
            app_version=str(metadata.get("appVersion") or ""),
        ),
    )


def _access_key(request: ChartRequest, ref: OciReference, digest: str) -> _AccessKey:
    return (request.identity or "", ref.registry, ref.repository, digest, transport_key(request))


def transport_key(request: ChartRequest) -> str:
    """Requests that reach the registry the same way (same credentials, CA, scheme) may
    share one download; others must not ride on a download made with other credentials."""
    credentials = request.repo_credentials or RepoCredentials()
    parts = (
        b"insecure" if request.insecure else b"tls",
        request.docker_config_json or b"",
        request.ca_pem or b"",
        b"\0".join(
            value.encode()
            for value in (credentials.username, credentials.password, credentials.token)
        ),
    )
    return hashlib.sha256(b"\0".join(hashlib.sha256(part).digest() for part in parts)).hexdigest()
