"""One small async client for the Kubernetes API: raw JSON in and out, any resource path.

rudder applies arbitrary chart objects, so it talks REST by path instead of through the
generated per-kind APIs. kubernetes-asyncio supplies configuration (in-cluster, $KUBECONFIG,
~/.kube/config), TLS and token refresh; this module adds a client-side rate limit, per-request
impersonation, and errors that carry the API's Status object.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

JSON = dict[str, Any]
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"

# How a request fails when the API server cannot be reached or the connection breaks
# (rather than answering with a Status): worth retrying.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError, OSError)


class ClusterUnreachable(aiohttp.ClientError):
    """A remote cluster (spec.kubeConfig) could not be reached: a transport error, told
    apart from the management cluster's own so only its releases report it."""


# Every call made as rudder counts; verbs label the API requests metric.
RequestObserver = Any  # Callable[[str, int], None]; kept loose to avoid a metrics import here


class ApiError(Exception):
    """A non-2xx answer from the API server; `status` is its Status object when it sent one."""

    def __init__(self, code: int, status: JSON, method: str, path: str) -> None:
        self.code = code
        self.status = status
        self.method = method
        self.path = path
        message = status.get("message") or status.get("reason") or f"HTTP {code}"
        super().__init__(f"{method} {path}: {message}")

    @property
    def reason(self) -> str:
        return str(self.status.get("reason", ""))

    @property
    def message(self) -> str:
        return str(self.status.get("message", ""))

    @property
    def causes(self) -> list[JSON]:
        # Whatever answered (a proxy, a webhook) may not send a well-formed Status.
        details = self.status.get("details")
        causes = details.get("causes") if isinstance(details, dict) else None
        if not isinstance(causes, list):
            return []
        return [cause for cause in causes if isinstance(cause, dict)]


def is_not_found(error: BaseException) -> bool:
    return isinstance(error, ApiError) and error.code == 404


def is_conflict(error: BaseException) -> bool:
    return isinstance(error, ApiError) and error.code == 409


class RateLimiter:
    """Token bucket: `qps` tokens a second, at most `burst` saved up (client-go's semantics)."""

    def __init__(self, qps: float, burst: int) -> None:
        self.qps = qps
        self.burst = max(1, burst)
        self._tokens = float(self.burst)
        self._last = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        if self.qps <= 0:
            return
        async with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.qps)
            self._last = now
            if self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) / self.qps)
                self._last = time.monotonic()
                self._tokens = 0
            else:
                self._tokens -= 1


@dataclass
class ClientSettings:
    qps: float = 400.0  # as rudder.config's defaults
    burst: int = 800
    user_agent: str = "rudder"
    request_timeout: float = 60.0


@dataclass
class KubeClient:
    """The API as rudder's identity, or as an impersonated user made by `impersonate`."""

    api: k8s_client.ApiClient
    limiter: RateLimiter
    settings: ClientSettings = field(default_factory=ClientSettings)
    impersonate_user: str | None = None
    observers: list[RequestObserver] = field(default_factory=list)
    remote: str = ""  # a remote cluster's server URL; "" is the cluster rudder runs against

    def impersonate(self, user: str | None) -> KubeClient:
        """The same connection and rate limit, acting as `user` (None: rudder itself)."""
        return KubeClient(self.api, self.limiter, self.settings, user, self.observers, self.remote)

    def with_own_limit(self, qps: float, burst: int) -> KubeClient:
        """The same connection and identity, with a rate limit of its own: for work (the
        status page) that must never use up the reconciles' budget."""
        limiter = RateLimiter(qps, burst)
        return KubeClient(
            self.api, limiter, self.settings, self.impersonate_user, self.observers, self.remote
        )

    def _headers(self, content_type: str | None, accept: str) -> dict[str, str]:
        headers = {"Accept": accept, "User-Agent": self.settings.user_agent}
        if content_type:
            headers["Content-Type"] = content_type
        if self.impersonate_user:
            headers["Impersonate-User"] = self.impersonate_user
        return headers

    async def _send(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int | bool] | Sequence[tuple[str, str]] | None,
        body: Any,
        content_type: str | None,
        request_timeout: float | None,
        accept: str = "application/json",
    ) -> aiohttp.ClientResponse:
        await self.limiter.acquire()
        query_params = list(query.items()) if isinstance(query, Mapping) else list(query or [])
        query_params = [
            (k, str(v).lower() if isinstance(v, bool) else str(v)) for k, v in query_params
        ]
        try:
            response: aiohttp.ClientResponse = await self.api.call_api(
                path,
                method,
                query_params=query_params,
                header_params=self._headers(content_type if body is not None else None, accept),
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=request_timeout or self.settings.request_timeout,
            )
        except TRANSPORT_ERRORS as error:
            if self.remote and not isinstance(error, ClusterUnreachable):
                raise ClusterUnreachable(f"{self.remote}: {error!r}") from error
            raise
        for observe in self.observers:
            observe(method, response.status)
        return response

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int | bool] | Sequence[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str | None = "application/json",
        request_timeout: float | None = None,
        accept: str = "application/json",
    ) -> JSON:
        """Send one request; return the decoded JSON answer or raise ApiError."""
        response = await self._send(
            method,
            path,
            query=query,
            body=body,
            content_type=content_type,
            request_timeout=request_timeout,
            accept=accept,
        )
        async with response:
            raw = await response.read()
        try:
            decoded = json.loads(raw) if raw else {}
        except ValueError:
            decoded = {"message": raw[:500].decode(errors="replace")}
        if not isinstance(decoded, dict):
            decoded = {"items": decoded}
        if response.status >= 400:
            raise ApiError(response.status, decoded, method, path)
        return decoded

    async def get(self, path: str, **query: str | int | bool) -> JSON:
        return await self.request("GET", path, query=query)

    async def get_or_none(self, path: str) -> JSON | None:
        try:
            return await self.get(path)
        except ApiError as error:
            if error.code == 404:
                return None
            raise

    async def watch(
        self,
        path: str,
        *,
        resource_version: str,
        timeout_seconds: int = 300,
        accept: str = "application/json",
        **query: str,
    ) -> AsyncIterator[JSON]:
        """Yield watch events (`{"type", "object"}`) until the server ends the stream;
        `accept` may ask for metadata only (PartialObjectMetadata)."""
        params: dict[str, str | int | bool] = {
            "watch": True,
            "resourceVersion": resource_version,
            "allowWatchBookmarks": True,
            "timeoutSeconds": timeout_seconds,
            **query,
        }
        response = await self._send(
            "GET",
            path,
            query=params,
            body=None,
            content_type=None,
            request_timeout=timeout_seconds + 30,
            accept=accept,
        )
        async with response:
            if response.status >= 400:
                raw = await response.read()
                raise ApiError(response.status, json.loads(raw or b"{}"), "WATCH", path)
            async for line in response.content:
                if line.strip():
                    yield json.loads(line)

    async def close(self) -> None:
        await self.api.close()


async def connect(
    settings: ClientSettings | None = None,
    *,
    kubeconfig: str | Path | None = None,
    merged: Mapping[str, Any] | None = None,
    context: str | None = None,
) -> KubeClient:
    """Configure from `merged` (a kubeconfig already merged, with `context`), else
    --kubeconfig, $KUBECONFIG, in-cluster config or ~/.kube/config, in that order."""
    settings = settings or ClientSettings()
    configuration = k8s_client.Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if merged is not None:
        await k8s_config.load_kube_config_from_dict(
            dict(merged), context=context, client_configuration=configuration
        )
    elif path:
        await k8s_config.load_kube_config(config_file=str(path), client_configuration=configuration)
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        await k8s_config.load_kube_config(client_configuration=configuration)
    # One connection pool shared by every concurrent reconcile, without a cap of its own:
    # readiness watches hold a connection each, and a capped pool let them starve every
    # other request (the benchmark's concurrency 64 with a small burst). The rate limiter
    # and --concurrency bound the load.
    configuration.connection_pool_maxsize = 0
    if configuration.proxy is None:
        configuration.proxy = environment_proxy(str(configuration.host))
    api = k8s_client.ApiClient(configuration)
    api.user_agent = settings.user_agent
    _without_trust_env(api)
    return KubeClient(api, RateLimiter(settings.qps, settings.burst), settings)


def environment_proxy(url: str) -> str | None:
    """The proxy $HTTPS_PROXY / $HTTP_PROXY / $NO_PROXY choose for `url` (client-go honours
    them too), read once at start."""
    parts = urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return urllib.request.getproxies().get(parts.scheme or "https")


def _without_trust_env(api: k8s_client.ApiClient) -> None:
    """kubernetes-asyncio's session has trust_env=True, which makes aiohttp re-read
    ~/.netrc and scan the environment for proxies in worker threads on *every* request
    (about 14% of the operator's CPU in the scale benchmark). The proxy is resolved once in
    `connect` instead; the session is rebuilt on the same connector without trust_env."""
    rest = api.rest_client
    old: aiohttp.ClientSession = rest.pool_manager
    rest.pool_manager = aiohttp.ClientSession(
        connector=old.connector, trust_env=False, read_bufsize=2**21
    )
    old.detach()
