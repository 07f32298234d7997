"""Run Wasm post-renderers in the Extism sandbox, bounded and off the event loop.

The sandbox offers no host functions, no filesystem (WASI without preopened directories)
and no network (a plugin's allowedHosts are honoured only with
--post-renderer-allow-network). Memory pages and time are the plugin's own or the
HelmRelease's limits, never above the operator's maxima, which also apply when neither
declares any (Helm passes no limit then). Output is capped in bytes.

A module is compiled once per (module digest, limits) and kept, so a second release using
it instantiates the compiled form; a fresh instance serves each run, so no state passes
from one release to another. Runs happen in a small thread pool of their own (Extism
releases the GIL), so a slow plugin holds one worker for at most its timeout and blocks
no reconcile of other releases on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import extism
from extism.extism import CompiledPlugin

from rudder.chart.singleflight import SingleFlight
from rudder.postrender import metrics
from rudder.postrender.errors import (
    POST_RENDER_FAILED,
    POST_RENDER_LIMIT_EXCEEDED,
    POST_RENDER_TIMEOUT,
    PostRenderError,
)
from rudder.postrender.plugin_artifact import Plugin

log = logging.getLogger(__name__)

PAGE: Final = 64 * 1024


@dataclass(frozen=True)
class SandboxLimits:
    """The operator's maxima (--post-renderer-max-memory, -timeout, -max-output)."""

    max_memory: int = 256 * 1024**2  # bytes
    timeout: float = 30.0  # seconds
    max_output: int = 64 * 1024**2  # bytes
    allow_network: bool = False
    workers: int = 2
    compiled_entries: int = 16


@dataclass(frozen=True)
class RunLimits:
    pages: int
    timeout_ms: int
    max_output: int
    allowed_hosts: tuple[str, ...]


def use_compile_cache(directory: Path) -> None:
    """Keep compiled modules in `directory`, so a restarted operator loads them in a fraction
    of a second instead of compiling again (kustomize's module: ~10 s). Extism's runtime
    reads EXTISM_CACHE_CONFIG (a wasmtime cache config) when it first compiles; without it,
    the cache is $HOME/.cache/wasmtime, which a read-only pod may not have. A value the
    operator's environment sets already (empty disables the cache) is left alone."""
    if "EXTISM_CACHE_CONFIG" in os.environ:
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # Beside the directory, not in it: the runtime deletes files it did not write there.
        config = directory.with_name(directory.name + ".toml")
        config.write_text(f"[cache]\ndirectory = {json.dumps(str(directory))}\n")
    except OSError as error:
        log.warning("no cache for compiled post-renderers in %s: %s", directory, error)
        return
    os.environ["EXTISM_CACHE_CONFIG"] = str(config)


class Sandbox:
    def __init__(self, limits: SandboxLimits = SandboxLimits()) -> None:
        self.limits = limits
        self._pool = ThreadPoolExecutor(limits.workers, thread_name_prefix="post-render")
        self._compiled: OrderedDict[tuple[str, RunLimits], CompiledPlugin] = OrderedDict()
        self._compiles: SingleFlight[tuple[str, RunLimits], CompiledPlugin] = SingleFlight()
        self._lock = threading.Lock()

    def run_limits(
        self,
        plugin: Plugin,
        pages: int | None = None,
        timeout: float | None = None,
        max_output: int | None = None,
    ) -> RunLimits:
        """The HelmRelease's limits, else the plugin's, each capped by the operator's."""
        max_pages = max(1, self.limits.max_memory // PAGE)
        wanted_pages = pages or plugin.runtime.max_pages or max_pages
        timeout_ms = int(self.limits.timeout * 1000)
        wanted_ms = int(timeout * 1000) if timeout else plugin.runtime.timeout_ms or timeout_ms
        hosts = plugin.runtime.allowed_hosts if self.limits.allow_network else ()
        return RunLimits(
            pages=min(wanted_pages, max_pages),
            timeout_ms=max(1, min(wanted_ms, timeout_ms)),
            max_output=min(max_output or self.limits.max_output, self.limits.max_output),
            allowed_hosts=tuple(hosts),
        )

    async def run(
        self,
        plugin: Plugin,
        message: bytes,
        config: Mapping[str, str],
        limits: RunLimits,
        where: str,
    ) -> bytes:
        """The plugin's output for `message`; PostRenderError on failure or a limit."""
        compiled = await self._compiled_plugin(plugin, limits, where)
        started = time.monotonic()
        result = "success"
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._pool, _call, compiled, plugin, message, dict(config), limits, where
            )
        except PostRenderError as error:
            result = error.reason
            raise
        finally:
            metrics.RUN_DURATION.labels(plugin.name, result).observe(time.monotonic() - started)

    async def _compiled_plugin(
        self, plugin: Plugin, limits: RunLimits, where: str
    ) -> CompiledPlugin:
        key = (plugin.wasm_digest, limits)
        with self._lock:
            compiled = self._compiled.get(key)
            if compiled is not None:
                self._compiled.move_to_end(key)
                return compiled
        compiled = await self._compiles.run(
            key, lambda: asyncio.to_thread(self._compile, plugin, limits, where)
        )
        with self._lock:
            self._compiled[key] = compiled
            self._compiled.move_to_end(key)
            while len(self._compiled) > self.limits.compiled_entries:
                self._compiled.popitem(last=False)
        return compiled

    @staticmethod
    def _compile(plugin: Plugin, limits: RunLimits, where: str) -> CompiledPlugin:
        started = time.monotonic()
        manifest: dict[str, Any] = {
            "wasm": [{"data": plugin.wasm}],
            "memory": {"max_pages": limits.pages},
            "timeout_ms": limits.timeout_ms,
            "allowed_hosts": list(limits.allowed_hosts),
            "allowed_paths": {},
        }
        try:
            compiled = CompiledPlugin(manifest, wasi=True, functions=[])
        except extism.Error as error:
            raise PostRenderError(
                POST_RENDER_FAILED, f"{where}: the Wasm module does not load: {error}"
            ) from None
        elapsed = time.monotonic() - started
        metrics.COMPILES.labels(plugin.name).inc()
        metrics.COMPILE_DURATION.labels(plugin.name).observe(elapsed)
        log.info("compiled post-renderer %s %s in %.1fs", plugin.name, plugin.version, elapsed)
        return compiled

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _call(
    compiled: CompiledPlugin,
    plugin: Plugin,
    message: bytes,
    config: dict[str, str],
    limits: RunLimits,
    where: str,
) -> bytes:
    """One run in a fresh instance (blocking; in the sandbox's pool)."""
    started = time.monotonic()
    try:
        instance = extism.Plugin(compiled, config=config)
        output: bytes = instance.call(plugin.runtime.entry, message)
    except extism.Error as error:
        raise _as_error(str(error), time.monotonic() - started, limits, where) from None
    if len(output) > limits.max_output:
        raise PostRenderError(
            POST_RENDER_LIMIT_EXCEEDED,
            f"{where}: the output is {len(output)} bytes, over the {limits.max_output}-byte limit",
        )
    return output


def _as_error(message: str, elapsed: float, limits: RunLimits, where: str) -> PostRenderError:
    lowered = message.lower()
    if "timeout" in lowered or "timed out" in lowered or elapsed * 1000 >= limits.timeout_ms:
        return PostRenderError(
            POST_RENDER_TIMEOUT, f"{where}: did not finish within {limits.timeout_ms} ms"
        )
    if any(word in lowered for word in _MEMORY_WORDS):
        return PostRenderError(
            POST_RENDER_LIMIT_EXCEEDED,
            f"{where}: ran out of its {limits.pages} memory pages "
            f"({limits.pages * PAGE // 1024**2} MiB): {_first_line(message)}",
        )
    return PostRenderError(POST_RENDER_FAILED, f"{where}: {_first_line(message)}")


_MEMORY_WORDS: Final[Sequence[str]] = ("out of memory", "memory.grow", "memory limit", "oom")


def _first_line(message: str, limit: int = 512) -> str:
    line = message.strip().splitlines()[0] if message.strip() else "failed without a message"
    return line if len(line) <= limit else line[:limit] + "…"
