"""The namespace of the kubeconfig's current context, as kubectl picks it (pure file read)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml


def context_namespace(kubeconfig: str | None = None) -> str:
    """--kubeconfig, else the first file of $KUBECONFIG, else ~/.kube/config; "default"
    when the context names no namespace (or there is no file: in-cluster)."""
    paths = [kubeconfig] if kubeconfig else (os.environ.get("KUBECONFIG") or "").split(os.pathsep)
    candidates = [Path(p) for p in paths if p] or [Path.home() / ".kube" / "config"]
    for path in candidates:
        try:
            config = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        current = config.get("current-context")
        for entry in config.get("contexts") or []:
            if entry.get("name") == current:
                return str((entry.get("context") or {}).get("namespace") or "default")
    return "default"
