"""Remote clusters (`spec.kubeConfig`): one client per cluster, shared by its HelmReleases.

A kubeconfig comes from a Secret a tenant may write, so it is read as data only: one
context, credentials embedded (`*-data`, a token, basic auth). Fields that name files on
rudder's disk (rudder's own ServiceAccount token is one) are refused, and so are exec
credential plugins and auth-provider entries — they run programs in rudder's pod — unless
the operator allows them (`--allow-kubeconfig-exec`).

Each distinct kubeconfig gets one `RemoteCluster`: a KubeClient (its own connection pool
and rate limit, a short request timeout; a request that cannot be sent is
`ClusterUnreachable`, and for DOWN_FOR seconds after one its releases fail at once rather
than each waiting out a timeout), a discovery cache, an applier and a Helm renderer (whose
engine reads a kubeconfig file: a private temporary copy). The HelmReleases using it are
counted; when the last one goes (deleted — the queue says so — or pointed elsewhere) it is
closed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml
from kubernetes_asyncio.config import ConfigException

from rudder.chart.render import Renderer
from rudder.kube.client import ClientSettings, ClusterUnreachable, KubeClient, connect
from rudder.kube.discovery import Discovery
from rudder.kube.shared_watch import SharedWatches
from rudder.kube.ssa import Applier

log = logging.getLogger(__name__)

Key = tuple[str, str]  # a HelmRelease: (namespace, name)
FILE_FIELDS = {
    "cluster": ("certificate-authority",),
    "user": ("client-certificate", "client-key", "tokenFile"),
}
PROGRAM_FIELDS = ("exec", "auth-provider")
# Impersonation only Helm's engine would honour: requests would go out as two identities.
IMPERSONATION_FIELDS = ("as", "as-uid", "as-groups", "as-user-extra")
DOWN_FOR = 30.0


class KubeConfigError(Exception):
    """spec.kubeConfig cannot be used: `reason` for the condition, a message that says why
    (never the kubeconfig's contents); `stalled` when only a change can help."""

    def __init__(self, reason: str, message: str, *, stalled: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.stalled = stalled


def refused(message: str) -> KubeConfigError:
    return KubeConfigError("InvalidKubeConfig", f"spec.kubeConfig: {message}", stalled=True)


@dataclass
class RemoteCluster:
    server: str  # without user info: safe to show
    kube: KubeClient
    applier: Applier
    renderer: Renderer
    directory: Path  # holds the renderer's kubeconfig copy
    down_until: float = 0.0  # monotonic: fail fast until then after it was unreachable

    async def close(self) -> None:
        self.renderer.close()
        if self.applier.watches is not None:
            await self.applier.watches.close()
        await self.kube.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def parse_kubeconfig(data: bytes, *, allow_exec: bool) -> dict[str, Any]:
    """The kubeconfig reduced to its current context; KubeConfigError when unusable."""
    try:
        config = yaml.safe_load(data)
    except yaml.YAMLError as error:
        raise refused(f"not YAML: {type(error).__name__}") from error
    if not isinstance(config, dict):
        raise refused("not a kubeconfig")
    current = config.get("current-context")
    context = _named(config, "contexts", current)
    if context is None:
        raise refused(f"the current context {current!r} is not defined")
    entry = context.get("context") or {}
    cluster = _named(config, "clusters", entry.get("cluster"))
    user = _named(config, "users", entry.get("user")) or {"name": "", "user": {}}
    if cluster is None or not (cluster.get("cluster") or {}).get("server"):
        raise refused(f"context {current!r} names no cluster with a server")
    for section, item in (("cluster", cluster), ("user", user)):
        body = item.get(section) or {}
        for name in FILE_FIELDS[section]:
            if body.get(name):
                raise refused(
                    f"{section} field {name!r} names a file on rudder's disk: embed it "
                    f"({name}-data, or token)"
                    if name != "tokenFile"
                    else "user field 'tokenFile' names a file on rudder's disk: use token"
                )
    body = user.get("user") or {}
    for name in IMPERSONATION_FIELDS:
        if body.get(name):
            raise refused(
                f"user field {name!r} is not supported: use spec.serviceAccountName to "
                "impersonate in the remote cluster"
            )
    for name in PROGRAM_FIELDS:
        if body.get(name) and not allow_exec:
            raise refused(
                f"user field {name!r} runs a program in rudder's pod; not allowed "
                "(the operator's --allow-kubeconfig-exec)"
            )
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [user],
        "contexts": [context],
        "current-context": current,
    }


def display_server(server: str) -> str:
    """The server URL without user info (never shown: it may hold a password)."""
    parts = urlsplit(server)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _named(config: dict[str, Any], section: str, name: Any) -> dict[str, Any] | None:
    for item in config.get(section) or []:
        if isinstance(item, dict) and item.get("name") == name:
            return item
    return None


class RemoteClusters:
    def __init__(
        self,
        settings: ClientSettings,
        field_manager: str,
        *,
        allow_exec: bool,
        share_watches: bool = False,
    ) -> None:
        self.settings = settings
        self.field_manager = field_manager
        self.allow_exec = allow_exec
        self.share_watches = share_watches  # each cluster gets shared watches of its own
        self._clusters: dict[str, RemoteCluster] = {}
        self._users: dict[Key, str] = {}
        self._connecting = asyncio.Lock()

    async def use(self, key: Key, kubeconfig: bytes) -> RemoteCluster:
        """The cluster `key`'s kubeconfig names, connected once and shared."""
        config = parse_kubeconfig(kubeconfig, allow_exec=self.allow_exec)
        ident = hashlib.sha256(yaml.safe_dump(config, sort_keys=True).encode()).hexdigest()
        async with self._connecting:
            cluster = self._clusters.get(ident)
            if cluster is None:
                cluster = self._clusters[ident] = await self._connect(config)
        previous = self._users.get(key)
        self._users[key] = ident
        if previous is not None and previous != ident:
            await self._release(previous)
        if cluster.down_until > time.monotonic():
            # Its releases fail at once instead of each waiting out a timeout.
            raise ClusterUnreachable(f"{cluster.server}: unreachable moments ago; retrying soon")
        return cluster

    def mark_down(self, key: Key) -> None:
        """`key`'s cluster did not answer: its HelmReleases fail fast for DOWN_FOR seconds."""
        cluster = self._clusters.get(self._users.get(key, ""))
        now = time.monotonic()
        if cluster is not None and cluster.down_until <= now:  # not a fail-fast answer
            cluster.down_until = now + DOWN_FOR

    async def forget(self, key: Key) -> None:
        """`key` no longer uses a remote cluster (deleted, or local now)."""
        ident = self._users.pop(key, None)
        if ident is not None:
            await self._release(ident)

    async def close(self) -> None:
        for cluster in self._clusters.values():
            await cluster.close()
        self._clusters.clear()
        self._users.clear()

    async def _release(self, ident: str) -> None:
        if ident in self._users.values():
            return
        cluster = self._clusters.pop(ident, None)
        if cluster is not None:
            log.info("closing the connection to %s: no HelmRelease uses it", cluster.server)
            await cluster.close()

    async def _connect(self, config: dict[str, Any]) -> RemoteCluster:
        server = display_server(str(config["clusters"][0]["cluster"]["server"]))
        try:
            kube = await connect(self.settings, merged=config, context=config["current-context"])
        except (ValueError, OSError, ConfigException) as error:  # bad base64, PEM, CA
            raise refused(f"cannot be loaded ({type(error).__name__})") from error
        kube.remote = server
        directory = Path(tempfile.mkdtemp(prefix="rudder-remote-"))
        path = directory / "kubeconfig"
        path.touch(mode=0o600)
        path.write_text(yaml.safe_dump(config))
        log.info("connected to remote cluster %s", server)
        return RemoteCluster(
            server=server,
            kube=kube,
            applier=Applier(
                kube,
                Discovery(kube),
                self.field_manager,
                SharedWatches() if self.share_watches else None,
            ),
            renderer=Renderer(path),
            directory=directory,
        )
