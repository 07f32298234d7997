"""Raw bytes from an OCI registry over oras-py's session and auth flows (blocking).

oras-py (`oras.provider.Registry`) owns the requests session and the authentication
dance (Bearer token service or Basic). rudder needs more than its high-level calls give:
the exact bytes of manifests (oras parses them as JSON) and blobs (it streams them to
files unhashed), so the digests can be checked here. Its `do_request` is replaced: the
original retries any exception for minutes with sleeps and sets no timeout, while rudder
must fail fast with a classified error and let the reconciler back off.

Every failure becomes a `ChartError` whose message names the chart reference and the
registry, never the credentials, and never echoes a registry's response body.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import Any, Final

import oras.auth
import oras.provider
import requests

from rudder.chart import metrics
from rudder.chart.dockerconfig import Credentials
from rudder.chart.errors import REGISTRY_AUTH_FAILED, REGISTRY_UNAVAILABLE, ChartError

log = logging.getLogger(__name__)

_CHUNK: Final = 64 * 1024
_UNAUTHORIZED: Final = (401, 403)
_MISSING: Final = (404, 410)


@dataclass(frozen=True)
class Endpoint:
    """How to reach one registry."""

    registry: str  # host[:port]
    insecure: bool = False  # plain HTTP
    credentials: Credentials | None = None
    ca_bundle: Path | None = None  # PEM file of the CAs to trust instead of the system's


@dataclass(frozen=True)
class Fetched:
    body: bytes
    content_type: str
    docker_digest: str | None  # the registry's Docker-Content-Digest header, if sent


class BodyTooLarge(Exception):
    """The response is longer than the caller allowed; nothing past the limit was read."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"response longer than {limit} bytes")
        self.limit = limit


class RegistryClient:
    """Requests to one registry for one operation (pull, resolve, signature lookup).

    A fresh client per operation keeps oras's mutable auth state (a bearer token scoped to
    one repository) from leaking between charts and threads.
    """

    def __init__(self, endpoint: Endpoint, *, subject: str, timeout: float = 30.0) -> None:
        self.endpoint = endpoint
        self._subject = subject  # the chart reference, for messages
        self._oras = _OrasRegistry(endpoint, timeout)

    def close(self) -> None:
        self._oras.session.close()

    def manifest(
        self, repository: str, reference: str, accept: Iterable[str], max_bytes: int
    ) -> Fetched | None:
        """GET a manifest by digest or tag; None if the registry does not have it."""
        url = self._url(f"/v2/{repository}/manifests/{reference}")
        return self._get(url, {"Accept": ", ".join(accept)}, max_bytes)

    def has_manifest(self, repository: str, reference: str, accept: Iterable[str]) -> bool:
        """HEAD a manifest: True if the registry has it and lets these credentials read it,
        False if it does not have it. No body is sent, and registries such as Docker Hub
        do not count a HEAD against pull limits."""
        url = self._url(f"/v2/{repository}/manifests/{reference}")
        with self._send("HEAD", url, {"Accept": ", ".join(accept)}) as response:
            status = response.status_code
            if status in _MISSING:
                return False
            self._check_status(status)
            return True

    def blob(self, repository: str, digest: str, max_bytes: int) -> bytes | None:
        """GET a blob; None if the registry does not have it."""
        fetched = self._get(self._url(f"/v2/{repository}/blobs/{digest}"), {}, max_bytes)
        return None if fetched is None else fetched.body

    def referrers(
        self, repository: str, digest: str, artifact_type: str, max_bytes: int
    ) -> Fetched | None:
        """The OCI 1.1 referrers index of `digest`; None when the registry has no such API."""
        url = self._url(f"/v2/{repository}/referrers/{digest}")
        return self._get(
            url,
            {"Accept": "application/vnd.oci.image.index.v1+json"},
            max_bytes,
            params={"artifactType": artifact_type},
        )

    def _url(self, path: str) -> str:
        scheme = "http" if self.endpoint.insecure else "https"
        return f"{scheme}://{self.endpoint.registry}{path}"

    def _get(
        self,
        url: str,
        headers: Mapping[str, str],
        max_bytes: int,
        params: Mapping[str, str] | None = None,
    ) -> Fetched | None:
        with self._send("GET", url, headers, params) as response:
            status = response.status_code
            if status in _MISSING:
                return None
            self._check_status(status)
            try:
                body = read_limited(response, max_bytes)
            except requests.exceptions.RequestException as error:
                why = f"reading the response failed ({type(error).__name__})"
                raise self._unavailable(why) from None
            metrics.PULLED_BYTES.inc(len(body))
            return Fetched(
                body=body,
                content_type=response.headers.get("Content-Type", "").split(";")[0].strip(),
                docker_digest=response.headers.get("Docker-Content-Digest"),
            )

    def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """The response (body not yet read), or a `ChartError` if none came."""
        try:
            return self._oras.do_request(
                url, method, headers=dict(headers), stream=True, params=params
            )
        except requests.exceptions.SSLError as error:
            raise self._unavailable(f"TLS verification failed ({ssl_reason(error)})") from None
        except requests.exceptions.Timeout:
            raise self._unavailable("the request timed out") from None
        except requests.exceptions.RequestException as error:
            raise self._unavailable(f"connection failed ({type(error).__name__})") from None
        except OSError as error:  # e.g. an unreadable CA bundle
            raise self._unavailable(f"cannot set up the connection ({error.strerror})") from None

    def _check_status(self, status: int) -> None:
        """Refusals and anything but a 200 as `ChartError`s (a missing manifest or blob is
        the caller's to handle)."""
        if status in _UNAUTHORIZED:
            raise self._auth_failed(status)
        if status != 200:
            raise self._unavailable(f"the registry answered HTTP {status}")

    def _unavailable(self, why: str) -> ChartError:
        return ChartError(
            REGISTRY_UNAVAILABLE,
            f"{self._subject}: registry {self.endpoint.registry} is unavailable: {why}",
        )

    def _auth_failed(self, status: int) -> ChartError:
        if self.endpoint.credentials is None:
            why = "requires credentials (set spec.chart.secretRef)"
        else:
            why = "refused the credentials of spec.chart.secretRef"
        return ChartError(
            REGISTRY_AUTH_FAILED,
            f"{self._subject}: registry {self.endpoint.registry} {why} (HTTP {status})",
        )


def read_limited(response: requests.Response, limit: int, deadline: float | None = None) -> bytes:
    """At most `limit` bytes of the body; with `deadline` (time.monotonic), the whole read
    too: requests' timeout bounds each socket read, so a server sending a byte now and
    then would otherwise hold the thread for ever."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    body = bytearray()
    for chunk in response.iter_content(_CHUNK):
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(limit)
        if deadline is not None and time.monotonic() > deadline:
            raise requests.exceptions.Timeout("the response took too long to arrive")
    return bytes(body)


def ssl_reason(error: requests.exceptions.SSLError) -> str:
    text = str(error)
    for marker in ("CERTIFICATE_VERIFY_FAILED", "WRONG_VERSION_NUMBER", "hostname mismatch"):
        if marker in text:
            return marker
    return "handshake failed"


class _OrasRegistry(oras.provider.Registry):  # type: ignore[misc]  # oras ships no types
    """oras's registry client with a fail-fast request loop and Basic-or-Bearer auth."""

    session: requests.Session

    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        tls_verify: bool | str = str(endpoint.ca_bundle) if endpoint.ca_bundle else True
        super().__init__(
            hostname=endpoint.registry, insecure=endpoint.insecure, tls_verify=tls_verify
        )
        # oras's auth backends fetch tokens through this session without a timeout.
        self.session.close()
        self.session = _SessionWithTimeout(timeout)
        self.session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))  # as oras does
        auth = _ChallengeAuth(endpoint.credentials)
        # What oras.auth.get_auth_backend sets on the backends it builds.
        auth.session = self.session
        auth.prefix = self.prefix
        auth._tls_verify = tls_verify
        self.auth = auth
        self._timeout = timeout

    def do_request(
        self,
        url: str,
        method: str = "GET",
        data: Any = None,
        headers: dict[str, str] | None = None,
        json: Any = None,
        stream: bool = False,
        params: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """One request, and one retry after answering an authentication challenge."""
        headers = {**(headers or {}), **self.auth.get_auth_header()}
        response = self._send(method, url, data, headers, json, stream, params)
        if response.status_code not in _UNAUTHORIZED:
            return response
        retry_headers, changed = self.auth.authenticate_request(response, headers)
        if not changed:
            return response
        response.close()
        return self._send(method, url, data, retry_headers, json, stream, params)

    def _send(
        self,
        method: str,
        url: str,
        data: Any,
        headers: dict[str, str],
        json: Any,
        stream: bool,
        params: Mapping[str, str] | None,
    ) -> requests.Response:
        response: requests.Response = self.session.request(
            method,
            url,
            data=data,
            json=json,
            headers=headers,
            params=params,
            stream=stream,
            verify=self._tls_verify,
            timeout=self._timeout,
        )
        return response


class _SessionWithTimeout(requests.Session):
    """A session whose requests time out unless told otherwise (requests never does)."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._default_timeout = timeout

    def request(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self._default_timeout)
        return super().request(*args, **kwargs)


class _ChallengeAuth(oras.auth.TokenAuth):  # type: ignore[misc]  # oras ships no types
    """oras's token auth, also answering `Basic` challenges (htpasswd registries).

    oras's TokenAuth treats every challenge as a token-service realm, so a `Basic
    realm="basic"` challenge would send it to `https://basic`. A Basic challenge is
    answered with the credentials directly, and later requests send them up front.
    """

    def __init__(self, credentials: Credentials | None) -> None:
        super().__init__()
        self._use_basic = False
        self._static_token = False
        if credentials is not None and credentials.registry_token:
            self.token = credentials.registry_token
            self._static_token = True
        elif credentials is not None:
            self.set_basic_auth(credentials.username, credentials.password)

    def get_auth_header(self) -> dict[str, str]:
        if self._use_basic and getattr(self, "_basic_auth", None):
            return {"Authorization": f"Basic {self._basic_auth}"}
        header: dict[str, str] = super().get_auth_header()
        return header

    def authenticate_request(
        self, original: requests.Response, headers: dict[str, str], refresh: bool = False
    ) -> tuple[dict[str, str], bool]:
        challenge = original.headers.get("Www-Authenticate", "")
        if self._static_token or self._use_basic:
            return headers, False  # what we sent is all we have
        if challenge.lower().startswith("basic"):
            if not getattr(self, "_basic_auth", None):
                return headers, False
            self._use_basic = True
            return {**headers, **self.get_auth_header()}, True
        # A challenge after a token was sent means that token does not cover this request
        # (another repository's scope): always ask the token service again.
        result: tuple[dict[str, str], bool] = super().authenticate_request(
            original, headers, refresh=True
        )
        return result
