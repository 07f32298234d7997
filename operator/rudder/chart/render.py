"""Render a chart with Helm's own engine, against the live cluster.

helm-python-sdk's `Chart.render` is offline: `.Capabilities` would be Helm's built-in
defaults. rudder calls the binding's native `helm_render_with_config` instead, passing the
cluster's `kube_version` and `api_versions` from the discovery cache; those options exist
in the native call but not in the Python signature, so the binding is pinned exactly and
tests/test_render_binding.py guards the call. Rendering through a `Config` makes the
chart's `lookup` calls query the cluster as the release's identity (impersonated when
`spec.serviceAccountName` is set). The native call blocks: it runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
from helm_python import _native

FORBIDDEN = re.compile(r"error calling lookup: .* is forbidden: .* cannot ")


@dataclass(frozen=True)
class RenderRequest:
    release_name: str
    namespace: str
    revision: int
    is_install: bool
    kube_version: str
    api_versions: Sequence[str]
    impersonate: str | None = None


class RenderError(Exception):
    """The chart did not render; `reason` is RenderFailed or ValuesInvalid (schema)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def render_options(request: RenderRequest) -> dict[str, Any]:
    """The native render options, as Helm's install/upgrade actions set them."""
    return {
        "name": request.release_name,
        "namespace": request.namespace,
        "revision": request.revision,
        "is_install": request.is_install,
        "is_upgrade": not request.is_install,
        "kube_version": request.kube_version,
        "api_versions": list(request.api_versions),
    }


class Renderer:
    """Holds one helm `Config` per identity, so `lookup` sees the cluster as that identity."""

    def __init__(self, kubeconfig: str | Path | None) -> None:
        self._kubeconfig = str(kubeconfig) if kubeconfig else None
        self._configs: dict[str | None, helm_python.Config] = {}
        self._lock = threading.Lock()

    def _config(self, user: str | None) -> helm_python.Config:
        with self._lock:
            config = self._configs.get(user)
            if config is None:
                config = helm_python.Config(kubeconfig_path=self._kubeconfig, kube_as_user=user)
                self._configs[user] = config
            return config

    def render_sync(
        self, chart: helm_python.Chart, values: Mapping[str, Any], request: RenderRequest
    ) -> dict[str, str]:
        try:
            rendered = _native.call_string(
                "helm_render_with_config",
                self._config(request.impersonate)._raw(),
                chart._raw(),
                json.dumps(dict(values)),
                json.dumps(render_options(request)),
            )
        except helm_python.HelmValuesError as error:
            raise RenderError("ValuesInvalid", str(error)) from error
        except helm_python.HelmError as error:
            message = str(error)
            # A `lookup` the release's identity may not make is an access problem, not a
            # template bug: the API server's words name the resource and the verb.
            reason = "AccessDenied" if FORBIDDEN.search(message) else "RenderFailed"
            raise RenderError(reason, message) from error
        manifests: dict[str, str] = json.loads(rendered)
        return manifests

    async def render(
        self, chart: helm_python.Chart, values: Mapping[str, Any], request: RenderRequest
    ) -> dict[str, str]:
        return await asyncio.to_thread(self.render_sync, chart, values, request)

    def close(self) -> None:
        with self._lock:
            for config in self._configs.values():
                config.close()
            self._configs.clear()
