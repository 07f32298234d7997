"""Post-renderer plugins from OCI registries, pinned by digest, through the chart machinery.

A plugin is pulled like a chart: the same content-addressed cache (every manifest and blob
hashed against its digest), the same credentials and CA handling, the same tenant access
check and cosign verification (`ChartSource.authorize`), one download per digest however
many HelmReleases use it. What differs is the artifact (plugin_artifact.py) and the
reasons: PluginNotFound for what the registry does not have, InvalidPlugin for what is not
a postrenderer/v1 extism/v1 plugin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from typing import Final

from rudder.chart.archive import ArchiveLimits
from rudder.chart.errors import (
    CHART_NOT_FOUND,
    CHART_TOO_LARGE,
    INVALID_CHART,
    INVALID_MEDIA_TYPE,
    INVALID_PLUGIN,
    PLUGIN_NOT_FOUND,
    ChartError,
)
from rudder.chart.manifest import ImageManifest
from rudder.chart.oci import CachedPull
from rudder.chart.reference import OciReference, parse_reference
from rudder.chart.singleflight import SingleFlight
from rudder.chart.source import ChartRequest, ChartSource, transport_key
from rudder.postrender.plugin_artifact import Plugin, plugin_layer, unpack

log = logging.getLogger(__name__)

DEFAULT_MAX_PLUGIN_SIZE: Final = 64 * 1024**2  # compressed; Go-built modules are large
_AS_PLUGIN_REASON: Final = {
    CHART_NOT_FOUND: PLUGIN_NOT_FOUND,
    INVALID_CHART: INVALID_PLUGIN,
    INVALID_MEDIA_TYPE: INVALID_PLUGIN,
    CHART_TOO_LARGE: INVALID_PLUGIN,
}


class PluginSource:
    def __init__(
        self, charts: ChartSource, max_size: int = DEFAULT_MAX_PLUGIN_SIZE, memory_entries: int = 32
    ) -> None:
        self._charts = charts
        self._limits = ArchiveLimits(max_size, max_size * 4)
        self._memory: OrderedDict[tuple[str, str], Plugin] = OrderedDict()  # (digest, name)
        self._memory_entries = memory_entries
        self._loads: SingleFlight[tuple[str, str, str], Plugin] = SingleFlight()

    async def get(self, request: ChartRequest) -> Plugin:
        """The plugin `request.ref` pins (its last path component is the plugin's name)."""
        ref = parse_reference(request.ref)
        digest = ref.digest
        if digest is None:
            raise ChartError(INVALID_PLUGIN, f"{request.ref}: a plugin must be pinned by digest")
        name = ref.repository.rsplit("/", 1)[-1]
        remembered = (digest, name)  # the same bytes under another name are checked again
        try:
            await self._charts.authorize(request, ref, digest)
            plugin = self._memory.get(remembered)
            if plugin is None:
                plugin = await self._loads.run(
                    (digest, name, transport_key(request)),
                    lambda: asyncio.to_thread(self._pull_blocking, request, ref, digest),
                )
        except ChartError as error:
            reason = _AS_PLUGIN_REASON.get(error.reason, error.reason)
            raise ChartError(reason, error.message) from None
        self._memory[remembered] = plugin
        self._memory.move_to_end(remembered)
        while len(self._memory) > self._memory_entries:
            self._memory.popitem(last=False)
        return plugin

    def _pull_blocking(self, request: ChartRequest, ref: OciReference, digest: str) -> Plugin:
        name = ref.repository.rsplit("/", 1)[-1]
        where = str(ref)
        with contextlib.closing(self._charts.registry_client(request, ref)) as client:
            pull = CachedPull(self._charts.cache, client, ref)
            manifest = pull.parsed(digest)
            if not isinstance(manifest, ImageManifest):
                raise ChartError(INVALID_PLUGIN, f"{where}: an index, not a plugin manifest")
            layer = plugin_layer(manifest, name, where)
            if layer.size > self._limits.max_compressed:
                raise ChartError(
                    INVALID_PLUGIN,
                    f"{where}: the plugin archive is {layer.size} bytes, over the "
                    f"{self._limits.max_compressed}-byte limit (--max-plugin-size)",
                )
            archive = pull.blob(layer)
            if pull.downloaded:
                log.info("pulled plugin %s (%d bytes)", where, pull.downloaded)
        return unpack(archive, name, digest, self._limits, where)
