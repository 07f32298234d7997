"""Prometheus metrics of post-rendering (the process-wide default registry)."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Histogram

RUN_DURATION: Final = Histogram(
    "rudder_post_render_duration_seconds",
    "Time one post-renderer took on one stream of manifests, by plugin and result",
    ["plugin", "result"],  # result: "success" or the failure reason
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
COMPILE_DURATION: Final = Histogram(
    "rudder_post_render_compile_seconds",
    "Time to compile a Wasm module (once per module digest and limits)",
    ["plugin"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80),
)
COMPILES: Final = Counter(
    "rudder_post_render_compiles",
    "Wasm modules compiled; a module already compiled is reused, not compiled again",
    ["plugin"],
)
