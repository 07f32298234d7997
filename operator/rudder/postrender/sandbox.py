"""Run Wasm post-renderers in the Extism sandbox, bounded and off the event loop.

The sandbox offers no host functions, no filesystem (WASI without preopened directories)
and no network (a plugin's allowedHosts are honoured only with
--post-renderer-allow-network). Memory pages and time are the plugin's own or the
HelmRelease's limits, never above the operator's maxima, which also apply when neither
declares any (Helm passes no limit then). Output is capped in bytes.

A module is compiled once per (module digest, pages, timeout, hosts) and kept, so a second
release using it instantiates the compiled form; a fresh instance serves each run, so no
state passes from one release to another. Work is submitted to a small thread pool of the
sandbox's own (Extism releases the GIL): a step holds one worker for at most its timeout,
and nothing of it runs on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import extism
from extism.extism import CompiledPlugin

from rudder.postrender import metrics
from rudder.postrender.errors import (
    POST_RENDER_FAILED,
    POST_RENDER_LIMIT_EXCEEDED,
    POST_RENDER_TIMEOUT,
    PostRenderError,
)
from rudder.postrender.plugin_artifact import Plugin

log = logging.getLogger(__name__)

T = TypeVar("T")

PAGE: Final = 64 * 1024
# Extism's words for a run it stopped; a plugin's own error is passed through as written.
_TIMEOUT: Final = "timeout"
_OUT_OF_MEMORY: Final = "oom"
# Instances of one compiled module share an engine, and a timeout interrupts every run on
# it: a run stopped well before its own deadline was another's victim and runs again.
INTERRUPTED_RETRIES: Final = 3
MAX_MESSAGE: Final = 16 * 1024  # of a plugin's error, before status truncates further
COMPILE_CACHE_SIZE: Final = "512Mi"  # kept beside the chart cache (deploy/: a 2Gi emptyDir)


@dataclass(frozen=True)
class SandboxLimits:
    """The operator's maxima (--post-renderer-max-memory, -timeout, -max-output)."""

    max_memory: int = 256 * 1024**2  # bytes
    timeout: float = 30.0  # seconds
    max_output: int = 16 * 1024**2  # bytes
    allow_network: bool = False
    workers: int = 2
    compiled_entries: int = 16


@dataclass(frozen=True)
class RunLimits:
    pages: int
    timeout_ms: int
    max_output: int
    allowed_hosts: tuple[str, ...]

    @property
    def compiled_with(self) -> tuple[int, int, tuple[str, ...]]:
        """What the compiled module holds (the output cap is checked afterwards)."""
        return self.pages, self.timeout_ms, self.allowed_hosts


def use_compile_cache(directory: Path) -> None:
    """Keep compiled modules in `directory`, so a restarted operator loads them in a fraction
    of a second instead of compiling again (kustomize's module: ~10 s). Extism's runtime
    reads EXTISM_CACHE_CONFIG (a wasmtime cache config) when it first compiles; without it,
    the cache is $HOME/.cache/wasmtime, which a read-only pod may not have. A value the
    operator's environment sets already (empty disables the cache) is left alone."""
    if "EXTISM_CACHE_CONFIG" in os.environ:
        return
    directory = directory.resolve()  # the runtime refuses a relative directory
    try:
        directory.mkdir(parents=True, exist_ok=True)
        # Beside the directory, not in it: the runtime deletes files it did not write there.
        config = directory.with_name(directory.name + ".toml")
        config.write_text(
            f"[cache]\ndirectory = {json.dumps(str(directory))}\n"
            f'files-total-size-soft-limit = "{COMPILE_CACHE_SIZE}"\n'
        )
    except OSError as error:
        log.warning("no cache for compiled post-renderers in %s: %s", directory, error)
        return
    os.environ["EXTISM_CACHE_CONFIG"] = str(config)


class Sandbox:
    def __init__(self, limits: SandboxLimits = SandboxLimits()) -> None:
        self.limits = limits
        self._pool = ThreadPoolExecutor(limits.workers, thread_name_prefix="post-render")
        self._compiled: OrderedDict[tuple[Any, ...], CompiledPlugin] = OrderedDict()
        self._compiling: dict[tuple[Any, ...], threading.Lock] = {}
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

    async def submit(self, work: Callable[[], T]) -> T:
        """Run `work` (which calls `call`) on one of the sandbox's workers."""
        return await asyncio.wrap_future(self._pool.submit(work))

    def call(
        self,
        plugin: Plugin,
        message: bytes,
        config: Mapping[str, str],
        limits: RunLimits,
        where: str,
    ) -> bytes:
        """The plugin's output for `message` (blocking: on a worker, from `submit`);
        PostRenderError on the plugin's failure or a limit."""
        compiled = self._compiled_plugin(plugin, limits, where)
        started = time.monotonic()
        result = "success"
        try:
            return _call(compiled, plugin, message, dict(config), limits, where)
        except PostRenderError as error:
            result = error.reason
            raise
        finally:
            metrics.RUN_DURATION.labels(plugin.name, result).observe(time.monotonic() - started)

    def _compiled_plugin(self, plugin: Plugin, limits: RunLimits, where: str) -> CompiledPlugin:
        key = (plugin.wasm_digest, *limits.compiled_with)
        with self._lock:
            compiling = self._compiling.setdefault(key, threading.Lock())
        with compiling:  # one compile per key; the others wait for it
            with self._lock:
                compiled = self._compiled.get(key)
                if compiled is not None:
                    self._compiled.move_to_end(key)
                    return compiled
            compiled = _compile(plugin, limits, where)
            with self._lock:
                self._compiled[key] = compiled
                while len(self._compiled) > self.limits.compiled_entries:
                    evicted, _ = self._compiled.popitem(last=False)
                    self._compiling.pop(evicted, None)
            return compiled

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


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
            POST_RENDER_FAILED, f"{where}: the Wasm module does not load: {_first_line(error)}"
        ) from None
    finally:
        _give_back_freed_memory()
    elapsed = time.monotonic() - started
    metrics.COMPILES.labels(plugin.name).inc()
    metrics.COMPILE_DURATION.labels(plugin.name).observe(elapsed)
    log.info("compiled post-renderer %s %s in %.1fs", plugin.name, plugin.version, elapsed)
    return compiled


def _give_back_freed_memory() -> None:
    """Compiling a module frees ~100 MiB that glibc keeps for the process; hand it back to
    the OS, or the operator's resident memory stays that much higher (measured: 289 -> 194
    MiB after compiling the add-label fixture). A no-op where there is no glibc."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _call(
    compiled: CompiledPlugin,
    plugin: Plugin,
    message: bytes,
    config: dict[str, str],
    limits: RunLimits,
    where: str,
) -> bytes:
    """Runs in fresh instances (an instance a limit stopped is unusable afterwards)."""
    for attempt in range(INTERRUPTED_RETRIES + 1):
        started = time.monotonic()
        try:
            output: bytes = extism.Plugin(compiled, config=config).call(
                plugin.runtime.entry, message
            )
            break
        except extism.Error as error:
            text = str(error).strip()
            elapsed_ms = (time.monotonic() - started) * 1000
            victim = text == _TIMEOUT and elapsed_ms < limits.timeout_ms * 0.9
            if victim and attempt < INTERRUPTED_RETRIES:
                continue  # another run's timeout stopped this one
            raise _as_error(text, limits, where) from None
    if len(output) > limits.max_output:
        raise PostRenderError(
            POST_RENDER_LIMIT_EXCEEDED,
            f"{where}: the output is {len(output)} bytes, over the {limits.max_output}-byte limit",
        )
    return output


def _as_error(text: str, limits: RunLimits, where: str) -> PostRenderError:
    if text == _TIMEOUT:
        return PostRenderError(
            POST_RENDER_TIMEOUT, f"{where}: did not finish within {limits.timeout_ms} ms"
        )
    if text == _OUT_OF_MEMORY:
        return PostRenderError(
            POST_RENDER_LIMIT_EXCEEDED,
            f"{where}: ran out of its {limits.pages} memory pages "
            f"({limits.pages * PAGE // 1024**2} MiB)",
        )
    return PostRenderError(POST_RENDER_FAILED, f"{where}: {_first_line(text)}")


def _first_line(error: object) -> str:
    text = str(error).strip()
    line = text.splitlines()[0] if text else "failed without a message"
    return line if len(line) <= MAX_MESSAGE else line[:MAX_MESSAGE] + "…"
