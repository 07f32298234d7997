"""Which cluster, user and namespace a command talks to, by kubectl's rules (pure file reads).

kubectl merges the files of $KUBECONFIG (or --kubeconfig alone, or ~/.kube/config): the
first file that sets current-context wins, and the first definition of each context,
cluster and user wins. Paths in a file are relative to that file. --context overrides the
current context; the namespace is the context's (or "default"). Without any kubeconfig,
inside a pod, the ServiceAccount's own namespace.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_PATH_KEYS = {
    "clusters": ("cluster", ("certificate-authority",)),
    "users": ("user", ("client-certificate", "client-key", "tokenFile")),
}


class KubeconfigError(Exception):
    """No usable kubeconfig; the message says what is missing."""


@dataclass(frozen=True)
class Target:
    config: dict[str, Any] | None  # the merged kubeconfig; None: in-cluster
    context: str | None
    namespace: str


def resolve(kubeconfig: str | None = None, context: str | None = None) -> Target:
    if kubeconfig:
        paths = [Path(kubeconfig)]
    else:
        listed = [Path(p) for p in (os.environ.get("KUBECONFIG") or "").split(os.pathsep) if p]
        paths = listed or [Path.home() / ".kube" / "config"]
    files = [(path, _read(path)) for path in paths if path.exists()]
    if kubeconfig and not files:
        raise KubeconfigError(f"the kubeconfig {kubeconfig} does not exist")
    if not files:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            return Target(None, None, _pod_namespace())
        raise KubeconfigError("no kubeconfig: set --kubeconfig or $KUBECONFIG")
    merged = _merge(files)
    name = context or merged.get("current-context")
    if not name:
        raise KubeconfigError("no current context: set one, or pass --context")
    entry = next((c for c in merged["contexts"] if c.get("name") == name), None)
    if entry is None:
        raise KubeconfigError(f'context "{name}" does not exist in the kubeconfig')
    namespace = (entry.get("context") or {}).get("namespace") or "default"
    return Target(merged, str(name), str(namespace))


def _read(path: Path) -> Mapping[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise KubeconfigError(f"cannot read the kubeconfig {path}: {error}") from None
    if not isinstance(loaded, Mapping):
        raise KubeconfigError(f"the kubeconfig {path} is not a mapping")
    return loaded


def _merge(files: list[tuple[Path, Mapping[str, Any]]]) -> dict[str, Any]:
    merged: dict[str, Any] = {"contexts": [], "clusters": [], "users": []}
    for path, config in files:
        if config.get("current-context") and "current-context" not in merged:
            merged["current-context"] = config["current-context"]
        for section in ("contexts", "clusters", "users"):
            known = {entry.get("name") for entry in merged[section]}
            for entry in config.get(section) or []:
                if isinstance(entry, Mapping) and entry.get("name") not in known:
                    merged[section].append(_absolute(section, dict(entry), path.parent))
                    known.add(entry.get("name"))
    return merged


def _absolute(section: str, entry: dict[str, Any], base: Path) -> dict[str, Any]:
    if section not in _PATH_KEYS:
        return entry
    key, fields = _PATH_KEYS[section]
    body = dict(entry.get(key) or {})
    for field in fields:
        value = body.get(field)
        if isinstance(value, str) and value and not os.path.isabs(value):
            body[field] = str(base / value)
    return {**entry, key: body}


def _pod_namespace() -> str:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"
