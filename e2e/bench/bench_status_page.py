"""The status page at cluster scale: how long the overview and a release page take to
build and render for N HelmReleases from a fake source (no cluster), and their size.

    .venv/bin/python e2e/bench/bench_status_page.py [--n 10000] [--repeat 20]

Prints the median and worst time and the bytes of each page; the target (issue 14) is
< 300 ms and < 500 KB per page at N = 10,000.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from rudder.observe import statuspage
from test_observe_statuspage import FakeSource, many


async def timed(work: Any, repeat: int) -> tuple[list[float], int]:
    times, size = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        page = await work()
        times.append(time.perf_counter() - started)
        size = len(page.encode())
    return times, size


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    source = FakeSource(many(args.n), {})
    first = source.releases[0]["metadata"]
    pages = {
        "overview": lambda: statuspage.render_page(source),
        "overview, filtered": lambda: statuspage.render_page(
            source, statuspage.Query.parse({"state": "not-ready", "q": "timed out"})
        ),
        "release page": lambda: _release(source, first["namespace"], first["name"]),
    }
    print(f"N = {args.n}, {args.repeat} renders each")
    for label, work in pages.items():
        times, size = await timed(work, args.repeat)
        print(
            f"  {label:20} median {statistics.median(times) * 1000:6.1f} ms, "
            f"worst {max(times) * 1000:6.1f} ms, {size / 1024:6.1f} KiB"
        )
    return 0


async def _release(source: FakeSource, namespace: str, name: str) -> str:
    return (await statuspage.render_release(source, namespace, name))[1]


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
