"""The fixture post-renderer plugins (e2e/wasm-plugins, built by build-tools.sh), pushed to a
registry as Helm 4 plugin artifacts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from localcluster import TOOLS

# The throwaway-registry helpers of the unit tests also drive the cluster's registries.
sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))
from registry_fixture import RegistryApi

PLUGINS = TOOLS / "wasm-plugins"
VERSION = "0.1.0"
ARTIFACT_TYPE = "application/vnd.helm.plugin.v1+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def archive(name: str) -> Path:
    """`helm plugin package` output of the fixture plugin `name`."""
    return PLUGINS / f"{name}-{VERSION}.tgz"


def push_plugin(registry: str, name: str, repository: str = "plugins") -> str:
    """Push as Helm lays plugins out in OCI (pkg/registry/plugin.go); the pinned ref."""
    data = archive(name).read_bytes()
    return push_plugin_bytes(registry, name, data, repository)


def push_plugin_bytes(
    registry_host: str, name: str, data: bytes, repository: str = "plugins"
) -> str:
    registry = RegistryApi(registry_host)
    path = f"{repository}/{name}"
    config = b"{}"
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": EMPTY_CONFIG,
            "digest": registry.upload_blob(path, config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": LAYER,
                "digest": registry.upload_blob(path, data),
                "size": len(data),
                "annotations": {"org.opencontainers.image.title": f"{name}-{VERSION}.tgz"},
            }
        ],
    }
    digest = registry.put_manifest(path, VERSION, json.dumps(manifest).encode())
    return f"oci://{registry.host}/{path}@{digest}"
