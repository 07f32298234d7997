"""Prometheus metrics of the chart source (the process-wide default registry)."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

PULL_DURATION: Final = Histogram(
    "rudder_chart_pull_duration_seconds",
    "Time to pull and verify a chart that was not in the cache, by result",
    ["result"],  # "success" or the failure reason
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
PULLED_BYTES: Final = Counter(
    "rudder_chart_pulled_bytes",
    "Bytes received from OCI registries and HTTP chart repositories",
)
CACHE_HITS: Final = Counter(
    "rudder_chart_cache_hits",
    "Chart requests served without downloading the chart, by tier (memory or disk)",
    ["tier"],
)
CACHE_MISSES: Final = Counter(
    "rudder_chart_cache_misses",
    "Chart requests that had to download from the registry",
)
CACHE_EVICTIONS: Final = Counter(
    "rudder_chart_cache_evictions",
    "Blobs evicted from the on-disk cache to stay under --chart-cache-size",
)
CACHE_CORRUPTIONS: Final = Counter(
    "rudder_chart_cache_corruptions",
    "On-disk cache entries whose content no longer matched their digest (discarded)",
)
CACHE_SIZE: Final = Gauge(
    "rudder_chart_cache_size_bytes",
    "Bytes held by the on-disk chart cache",
)
INDEX_REQUESTS: Final = Counter(
    "rudder_chart_index_requests",
    "HTTP chart repository index requests, by result (changed, or not_modified: a 304)",
    ["result"],
)
