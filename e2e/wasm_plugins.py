"""The fixture post-renderer plugins (e2e/wasm-plugins, built by build-tools.sh), pushed to a
registry as Helm 4 plugin artifacts."""

from __future__ import annotations

import sys
from pathlib import Path

from localcluster import TOOLS

# The throwaway-registry helpers of the unit tests also drive the cluster's registries.
sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))
from registry_fixture import RegistryApi
from registry_fixture import push_plugin as push_archive

PLUGINS = TOOLS / "wasm-plugins"
VERSION = "0.1.0"


def archive(name: str) -> Path:
    """`helm plugin package` output of the fixture plugin `name`."""
    return PLUGINS / f"{name}-{VERSION}.tgz"


def push_plugin(registry: str, name: str) -> str:
    """Push the fixture plugin `name` to the registry at `registry`; its pinned ref."""
    return push_archive(RegistryApi(registry), name, archive(name).read_bytes(), VERSION)


def push_plugin_bytes(registry: str, name: str, data: bytes, repository: str) -> str:
    """Push `data` as if it were the archive of a plugin named `name`."""
    return push_archive(RegistryApi(registry), name, data, VERSION, repository)
