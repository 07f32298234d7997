"""Charts from classic HTTP repositories (index.yaml), shared by every HelmRelease.

    repos = HttpRepositories(cache, limits)
    pinned = await repos.pin(chart, transport)         # range -> version, digest, URL
    archive, downloaded = await repos.archive(pinned, transport)

One index per (index URL, credentials): fetched with a conditional GET (ETag /
If-Modified-Since), revalidated at most every `index_ttl` seconds, parsed in a worker
thread only when the repository sends a new one, and shared by every HelmRelease naming
it. Archives go to the same content-addressed cache as OCI charts, keyed by their
sha256, which must equal the spec's digest and the index's when it has one.

Tenant mode (`check_access`): the index fetched with the request's own credentials must
list the chart at a URL that, fetched with those same credentials, hashed to the digest
(remembered per credentials and URL). A tenant naming another tenant's digest through a
repository it controls therefore gets nothing from the cache.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Final

from rudder.chart import http_transport, metrics
from rudder.chart.archive import ArchiveLimits, ArchiveTooLarge, UnsafeArchive, check_archive
from rudder.chart.cache import BlobCache
from rudder.chart.digests import sha256_digest
from rudder.chart.errors import (
    CHART_NOT_FOUND,
    CHART_TOO_LARGE,
    DIGEST_MISMATCH,
    INVALID_CHART,
    REGISTRY_UNAVAILABLE,
    VERSION_NOT_FOUND,
    ChartError,
)
from rudder.chart.http_transport import Transport
from rudder.chart.repo_index import (
    INDEX_FILE,
    IndexEntry,
    InvalidIndex,
    NoSuchChart,
    NoSuchVersion,
    RepoIndex,
    display_url,
    parse_index,
    resolve_url,
    same_origin,
)
from rudder.chart.singleflight import SingleFlight

log = logging.getLogger(__name__)

DEFAULT_MAX_INDEX_BYTES: Final = 64 * 1024 * 1024  # public indexes are tens of MiB
# A burst of reconciles naming one repository (a restart, a new index) asks it once.
INDEX_TTL: Final = 15.0
INDEX_ENTRIES: Final = 32  # parsed indexes kept, least recently used dropped first
PROOF_ENTRIES: Final = 4096  # (credentials, URL) -> digest downloads remembered
URL_ENTRIES: Final = 4096  # digest -> the URL it was last found at, for status


@dataclass(frozen=True)
class HttpChart:
    """spec.chart's HTTP form; `url` (and, for a range, `digest`) once pinned."""

    repository: str
    name: str
    version: str  # exact, or a range with allow_range
    digest: str | None = None  # sha256:<hex> of the archive
    allow_range: bool = False
    pass_credentials: bool = False
    url: str | None = None

    @property
    def subject(self) -> str:
        """How messages name the chart: repository, name and version, nothing secret."""
        return f"{display_url(self.repository)} chart {self.name} {self.version}"

    @property
    def index_url(self) -> str:
        return resolve_url(self.repository, INDEX_FILE)


@dataclass
class _Index:
    index: RepoIndex
    etag: str | None
    last_modified: str | None
    checked: float  # when the repository last confirmed it (200 or 304)
    # Archive URLs whose digest the index does not give, as downloads found them.
    url_digests: dict[str, str] = field(default_factory=dict)

    def validators(self) -> dict[str, str]:
        headers = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers


class HttpRepositories:
    """Every HTTP repository rudder reads: their parsed indexes, the archive downloads in
    flight, and what each set of credentials was served (one instance per ChartSource)."""

    def __init__(
        self,
        cache: BlobCache,
        limits: ArchiveLimits,
        *,
        timeout: float = 30.0,
        max_index_bytes: int = DEFAULT_MAX_INDEX_BYTES,
        index_ttl: float = INDEX_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cache = cache
        self.limits = limits
        self._timeout = timeout
        self._max_index_bytes = max_index_bytes
        self._index_ttl = index_ttl
        self._clock = clock
        self._indexes: OrderedDict[tuple[str, str], _Index] = OrderedDict()
        self._refreshes: SingleFlight[tuple[str, str], _Index] = SingleFlight()
        self._downloads: SingleFlight[tuple[str, str, str], bytes] = SingleFlight()
        # (transport key, URL) -> the digest those credentials were served there.
        self._proofs: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._urls: OrderedDict[str, str] = OrderedDict()

    def url_of(self, digest: str) -> str | None:
        """The archive URL `digest` was last pinned or downloaded from (None: served from
        the disk cache since the start, without asking the index)."""
        return self._urls.get(digest)

    def _remember_url(self, digest: str, url: str) -> None:
        self._urls[digest] = url
        self._urls.move_to_end(digest)
        while len(self._urls) > URL_ENTRIES:
            self._urls.popitem(last=False)

    async def pin(self, chart: HttpChart, transport: Transport) -> HttpChart:
        """`chart` with the version the index picks, its archive URL and its digest."""
        state = await self._index(chart, transport)
        entry = _find(state.index, chart)
        url = resolve_url(chart.repository, entry.urls[0])
        digest = entry.digest or state.url_digests.get(url)
        if chart.digest is not None and digest is not None and digest != chart.digest:
            raise ChartError(
                DIGEST_MISMATCH,
                f"{chart.subject}: the repository's index gives {digest} for version "
                f"{entry.version}, spec.chart.digest is {chart.digest}",
            )
        if chart.digest is None and digest is None:
            # No digest in the index: the archive itself says (and is cached for the pull).
            body = await self._download(chart, url, transport)
            digest = sha256_digest(body)
            state.url_digests[url] = digest
        pinned = replace(chart, version=entry.version, digest=chart.digest or digest, url=url)
        assert pinned.digest is not None
        self._remember_url(pinned.digest, url)
        return pinned

    async def archive(self, chart: HttpChart, transport: Transport) -> tuple[bytes, int]:
        """The verified archive of a pinned chart and the bytes downloaded for it (0 when
        it came from the cache)."""
        assert chart.digest is not None
        cached = await asyncio.to_thread(self.cache.get, chart.digest)
        if cached is not None:
            return cached, 0
        pinned = chart if chart.url is not None else await self.pin(chart, transport)
        assert pinned.url is not None
        body = await self._download(pinned, pinned.url, transport)
        return body, len(body)

    async def check_access(self, chart: HttpChart, transport: Transport) -> None:
        """Tenant mode: these credentials were served this digest by this repository."""
        pinned = await self.pin(chart, transport)
        assert pinned.url is not None
        assert pinned.digest is not None
        if self._proofs.get((transport.key, pinned.url)) == pinned.digest:
            self._proofs.move_to_end((transport.key, pinned.url))
            return
        await self._download(pinned, pinned.url, transport)

    # -- the index -------------------------------------------------------------------------

    async def _index(self, chart: HttpChart, transport: Transport) -> _Index:
        key = (chart.index_url, transport.key)
        state = self._indexes.get(key)
        if state is not None and self._clock() - state.checked < self._index_ttl:
            self._indexes.move_to_end(key)
            return state
        return await self._refreshes.run(key, lambda: self._refresh(key, chart, transport))

    async def _refresh(
        self, key: tuple[str, str], chart: HttpChart, transport: Transport
    ) -> _Index:
        state = self._indexes.get(key)
        answer = await asyncio.to_thread(
            http_transport.get,
            chart.index_url,
            transport,
            subject=chart.subject,
            max_bytes=self._max_index_bytes,
            timeout=self._timeout,
            send_credentials=True,
            validators=state.validators() if state is not None else None,
            what="index",
        )
        if answer.not_modified and state is not None:
            metrics.INDEX_REQUESTS.labels(result="not_modified").inc()
            state.checked = self._clock()
            return state
        metrics.INDEX_REQUESTS.labels(result="changed").inc()
        try:
            index = await asyncio.to_thread(parse_index, answer.body)
        except InvalidIndex as error:
            shown = display_url(chart.index_url)
            raise ChartError(
                REGISTRY_UNAVAILABLE, f"{chart.subject}: {shown} is not a chart index: {error}"
            ) from None
        log.info("read the index of %s (%d bytes)", display_url(chart.repository), len(answer.body))
        state = _Index(index, answer.etag, answer.last_modified, self._clock())
        self._indexes[key] = state
        self._indexes.move_to_end(key)
        while len(self._indexes) > INDEX_ENTRIES:
            self._indexes.popitem(last=False)
        return state

    # -- archives --------------------------------------------------------------------------

    async def _download(self, chart: HttpChart, url: str, transport: Transport) -> bytes:
        body = await self._downloads.run(
            (url, transport.key, chart.digest or ""),
            lambda: asyncio.to_thread(self._download_blocking, chart, url, transport),
        )
        self._proofs[(transport.key, url)] = sha256_digest(body)  # what these credentials got
        self._proofs.move_to_end((transport.key, url))
        while len(self._proofs) > PROOF_ENTRIES:
            self._proofs.popitem(last=False)
        return body

    def _download_blocking(self, chart: HttpChart, url: str, transport: Transport) -> bytes:
        """Fetched, hashed to `chart.digest` when one is expected, checked, then cached."""
        answer = http_transport.get(
            url,
            transport,
            subject=chart.subject,
            max_bytes=self.limits.max_compressed,
            timeout=self._timeout,
            # Helm's rule: another host gets the credentials only with passCredentials.
            send_credentials=chart.pass_credentials or same_origin(chart.repository, url),
        )
        body = answer.body
        received = sha256_digest(body)
        if chart.digest is not None and received != chart.digest:
            raise ChartError(
                DIGEST_MISMATCH,
                f"{chart.subject}: {display_url(url)} sent an archive hashing to {received}, "
                f"expected {chart.digest}",
            )
        try:
            check_archive(body, self.limits)
        except ArchiveTooLarge as error:
            raise ChartError(
                CHART_TOO_LARGE, f"{chart.subject}: {error} (--max-chart-size)"
            ) from None
        except UnsafeArchive as error:
            raise ChartError(INVALID_CHART, f"{chart.subject}: {error}") from None
        self.cache.put(received, body)
        return body


def _find(index: RepoIndex, chart: HttpChart) -> IndexEntry:
    try:
        return index.find(chart.name, chart.version, allow_range=chart.allow_range)
    except NoSuchChart:
        raise ChartError(
            CHART_NOT_FOUND, f"{chart.subject}: the repository's index has no chart {chart.name}"
        ) from None
    except NoSuchVersion:
        what = "matches the range" if chart.allow_range else "is that version"
        raise ChartError(
            VERSION_NOT_FOUND,
            f"{chart.subject}: no version of {chart.name} in the repository's index {what}",
        ) from None
