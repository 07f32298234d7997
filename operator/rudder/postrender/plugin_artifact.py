"""A Helm 4 post-renderer plugin as an OCI artifact: its manifest, archive and plugin.yaml (pure).

Helm pushes a plugin as an image manifest with artifactType (or, older, config media type)
`application/vnd.helm.plugin.v1+json` and one tar(+gzip) layer titled
`<name>-<version>.tgz`; `helm plugin package` puts plugin.yaml and plugin.wasm under a
`<name>/` directory. rudder runs only `type: postrenderer/v1` with `runtime: extism/v1`.
The archive passes the chart archive's limits and refuses any link; only plugin.yaml and
plugin.wasm are read from it, never written to disk.
"""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import yaml

from rudder.chart.archive import ArchiveLimits, ArchiveTooLarge, UnsafeArchive, check_archive
from rudder.chart.digests import sha256_digest
from rudder.chart.errors import INVALID_PLUGIN, ChartError
from rudder.chart.manifest import Descriptor, ImageManifest

PLUGIN_ARTIFACT_TYPE: Final = "application/vnd.helm.plugin.v1+json"
# Helm also allows a plain tar layer, but its plugin archives are always gzip'd .tgz files.
PLUGIN_LAYER: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
TITLE: Final = "org.opencontainers.image.title"
POSTRENDERER: Final = "postrenderer/v1"
EXTISM: Final = "extism/v1"
DEFAULT_ENTRY: Final = "helm_plugin_main"
MAX_PLUGIN_YAML: Final = 64 * 1024
_NAME: Final = re.compile(r"^[A-Za-z0-9_-]+$")  # Helm's validPluginName


@dataclass(frozen=True)
class RuntimeConfig:
    """plugin.yaml's runtimeConfig for extism/v1: what the plugin declares it needs."""

    max_pages: int | None = None
    timeout_ms: int | None = None
    config: Mapping[str, str] = field(default_factory=dict)
    allowed_hosts: tuple[str, ...] = ()
    entry: str = DEFAULT_ENTRY


@dataclass(frozen=True)
class Plugin:
    name: str
    version: str
    digest: str  # of the OCI manifest the HelmRelease pins
    wasm: bytes = field(repr=False)
    wasm_digest: str  # of plugin.wasm: the compiled module is cached under it
    runtime: RuntimeConfig


def plugin_layer(manifest: ImageManifest, name: str, where: str) -> Descriptor:
    """The plugin archive layer of a Helm plugin manifest, or ChartError(InvalidPlugin)."""
    declared = manifest.artifact_type or manifest.config.media_type
    if declared != PLUGIN_ARTIFACT_TYPE:
        raise ChartError(
            INVALID_PLUGIN, f"{where}: artifact type {declared!r} is not {PLUGIN_ARTIFACT_TYPE!r}"
        )
    for layer in manifest.layers:
        title = layer.annotations.get(TITLE, "")
        if title.startswith(f"{name}-") and title.endswith(".tgz"):
            if layer.media_type != PLUGIN_LAYER:
                raise ChartError(
                    INVALID_PLUGIN, f"{where}: layer {title} has media type {layer.media_type!r}"
                )
            return layer
    raise ChartError(INVALID_PLUGIN, f"{where}: no layer titled {name}-<version>.tgz")


def unpack(archive: bytes, name: str, digest: str, limits: ArchiveLimits, where: str) -> Plugin:
    try:
        check_archive(archive, limits)
        files = _regular_files(archive, name)
    except (ArchiveTooLarge, UnsafeArchive) as error:
        raise ChartError(INVALID_PLUGIN, f"{where}: {error}") from None
    if "plugin.yaml" not in files or "plugin.wasm" not in files:
        raise ChartError(INVALID_PLUGIN, f"{where}: the archive has no plugin.yaml and plugin.wasm")
    if len(files["plugin.yaml"]) > MAX_PLUGIN_YAML:
        raise ChartError(INVALID_PLUGIN, f"{where}: plugin.yaml is over {MAX_PLUGIN_YAML} bytes")
    version, runtime = parse_plugin_yaml(files["plugin.yaml"], name, where)
    wasm = files["plugin.wasm"]
    return Plugin(name, version, digest, wasm, sha256_digest(wasm), runtime)


def _regular_files(archive: bytes, name: str) -> dict[str, bytes]:
    """plugin.yaml and plugin.wasm, at the top or under `<name>/`; links are refused."""
    wanted = {
        f"{prefix}{file}" for prefix in ("", f"{name}/") for file in ("plugin.yaml", "plugin.wasm")
    }
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.issym() or member.islnk():
                raise UnsafeArchive(f"entry {member.name!r} is a link")
            path = member.name.removeprefix("./")
            if member.isfile() and path in wanted:
                extracted = tar.extractfile(member)
                assert extracted is not None
                found[path.rsplit("/", 1)[-1]] = extracted.read()
    return found


def parse_plugin_yaml(text: bytes, name: str, where: str) -> tuple[str, RuntimeConfig]:
    """The version and runtime config of a postrenderer/v1, extism/v1 plugin named `name`."""
    try:
        metadata = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ChartError(INVALID_PLUGIN, f"{where}: plugin.yaml is not YAML") from None
    if not isinstance(metadata, dict):
        raise ChartError(INVALID_PLUGIN, f"{where}: plugin.yaml is not a mapping")
    expected = {"apiVersion": "v1", "type": POSTRENDERER, "runtime": EXTISM, "name": name}
    for key, value in expected.items():
        if metadata.get(key) != value:
            raise ChartError(
                INVALID_PLUGIN,
                f"{where}: plugin.yaml says {key}: {metadata.get(key)!r}; rudder runs "
                f"{key}: {value!r}"
                + (" (the last path component of the ref)" if key == "name" else ""),
            )
    version = metadata.get("version")
    if not isinstance(version, str) or not version:
        raise ChartError(INVALID_PLUGIN, f"{where}: plugin.yaml has no version")
    return version, _runtime(metadata.get("runtimeConfig") or {}, where)


def _runtime(config: Any, where: str) -> RuntimeConfig:
    if not isinstance(config, dict):
        raise ChartError(INVALID_PLUGIN, f"{where}: runtimeConfig is not a mapping")
    memory = config.get("memory") or {}
    pages = memory.get("maxPages") if isinstance(memory, dict) else None
    timeout = config.get("timeout")
    plugin_config = config.get("config") or {}
    hosts = config.get("allowedHosts") or []
    entry = config.get("entryFuncName") or DEFAULT_ENTRY
    if config.get("hostFunctions"):
        raise ChartError(
            INVALID_PLUGIN,
            f"{where}: plugin.yaml asks for host functions {config['hostFunctions']!r}; "
            "rudder's sandbox offers none",
        )
    if isinstance(config.get("fileSystem"), dict) and config["fileSystem"].get("createTempDir"):
        raise ChartError(
            INVALID_PLUGIN,
            f"{where}: plugin.yaml asks for a temporary directory; rudder's sandbox has no "
            "filesystem",
        )
    valid = (
        (pages is None or (_is_int(pages) and pages > 0))
        and (timeout is None or (_is_int(timeout) and timeout > 0))
        and isinstance(plugin_config, dict)
        and isinstance(hosts, list)
        and isinstance(entry, str)
        and _NAME.match(entry) is not None
    )
    if not valid:
        raise ChartError(INVALID_PLUGIN, f"{where}: plugin.yaml's runtimeConfig is malformed")
    return RuntimeConfig(
        max_pages=pages,
        timeout_ms=timeout,
        config={str(k): str(v) for k, v in plugin_config.items()},
        allowed_hosts=tuple(str(h) for h in hosts),
        entry=entry,
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
