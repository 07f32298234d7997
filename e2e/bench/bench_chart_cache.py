"""Benchmark: N concurrent `ChartSource.get` calls for one digest (a chart shared by many
HelmReleases, all reconciled at once) download it once.

    .venv/bin/python e2e/bench/bench_chart_cache.py [--gets 100] [--registry HOST:PORT]

Without --registry a throwaway Distribution registry is started. Registry requests are
counted by the test proxy in front of it. Prints the download counts and the times of
the cold round (empty caches), a warm round (same process) and a restarted round (a new
ChartSource on the same cache directory); exits non-zero unless the chart was downloaded
exactly once and the warm rounds made no request.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "e2e"), str(REPO / "tests")]

from registry_fixture import LocalRegistry, RegistryApi, push_chart, write_chart  # noqa: E402
from registry_proxy import RegistryProxy  # noqa: E402
from rudder.chart.digests import sha256_digest  # noqa: E402
from rudder.chart.source import ChartRequest, ChartSource, LoadedChart  # noqa: E402

MiB = 1024 * 1024


async def timed_round(source: ChartSource, ref: str, gets: int) -> tuple[float, LoadedChart]:
    started = time.perf_counter()
    charts = await asyncio.gather(
        *(source.get(ChartRequest(ref, insecure=True)) for _ in range(gets))
    )
    elapsed = time.perf_counter() - started
    assert len({id(chart.chart) for chart in charts}) == 1, "the chart was parsed more than once"
    return elapsed, charts[0]


async def bench(registry: RegistryApi, gets: int, workdir: Path) -> bool:
    # A large chart: ~1 MiB of incompressible files (podinfo-like charts are tens of KiB;
    # vendor charts with bundled dashboards reach megabytes).
    filler = {f"files/blob-{n}.txt": base64.b64encode(os.urandom(96 * 1024)) for n in range(8)}
    ref = push_chart(registry, write_chart(workdir, "bench", "1.0.0", extra_files=filler))
    with RegistryProxy(registry.host) as proxy:
        ref = ref.replace(registry.host, proxy.host)
        cache = workdir / "cache"

        source = ChartSource(cache, 100 * MiB, 10 * MiB, 100 * MiB)
        cold, chart = await timed_round(source, ref, gets)
        chart_downloads = proxy.count(sha256_digest(chart.archive))
        cold_requests = proxy.count()
        proxy.reset()
        warm, _ = await timed_round(source, ref, gets)
        restarted_source = ChartSource(cache, 100 * MiB, 10 * MiB, 100 * MiB)
        restarted, _ = await timed_round(restarted_source, ref, gets)
        warm_requests = proxy.count()

    print(f"chart: {ref} ({len(chart.archive)} bytes compressed)")
    print(f"concurrent gets per round: {gets}")
    print(
        f"cold round:      {cold * 1000:8.1f} ms  (empty caches; {cold_requests} registry requests)"
    )
    print(f"warm round:      {warm * 1000:8.1f} ms  (same process: parsed chart in memory)")
    print(f"restarted round: {restarted * 1000:8.1f} ms  (new source: disk cache, re-verified)")
    print(f"registry requests in warm rounds: {warm_requests}")
    print(f"chart downloads: {chart_downloads}")
    # manifest + config blob + chart blob, once each
    return chart_downloads == 1 and cold_requests == 3 and warm_requests == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gets", type=int, default=100)
    parser.add_argument("--registry", help="an open plain-HTTP registry (default: start one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rudder-bench-") as tmp:
        workdir = Path(tmp)
        if args.registry:
            ok = asyncio.run(bench(RegistryApi(args.registry), args.gets, workdir))
        else:
            local = LocalRegistry(workdir / "registry").start()
            try:
                ok = asyncio.run(bench(local, args.gets, workdir))
            finally:
                local.stop()
    print("OK: one download" if ok else "FAILED: expected exactly one download")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
