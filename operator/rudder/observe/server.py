"""rudder's one HTTP server (on --metrics-addr): metrics, probes and the status page.

- `/metrics`: every metric of the default prometheus-client registry (text format, or
  OpenMetrics when the scraper asks for it).
- `/healthz`: liveness. 200 while the event loop keeps running its timers; 503 when the
  heartbeat task has not run for `stall_after` seconds. (If the loop is blocked outright
  the request is not answered at all and the probe times out, which fails it just as well.)
- `/readyz`: readiness. 200 once `is_ready()` says so, else 503.
- `/`: the status page (see `rudder.observe.statuspage`), read-only, with a
  Content-Security-Policy that allows no script and nothing from other origins.

The server runs on the operator's own event loop; nothing it serves is expensive except the
status page, whose source calls are bounded by `page_timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from rudder.observe import metrics, statuspage
from rudder.observe.preview_page import PreviewSource, PreviewView, render_preview
from rudder.observe.statuspage import StatusPageSource

log = logging.getLogger(__name__)

DEFAULT_ADDR: Final = ":8080"
HEARTBEAT_SECONDS: Final = 1.0
STALL_AFTER: Final = 30.0
PAGE_TIMEOUT: Final = 20.0
PREVIEW_TIMEOUT: Final = 120.0  # a preview renders the chart and dry-runs every object
PAGE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def parse_addr(addr: str) -> tuple[str | None, int]:
    """`host:port`, `:port` (every interface), `[::1]:port` -> (host or None, port)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"not a listen address: {addr!r} (use host:port or :port)")
    host = host.strip("[]")
    return (host or None), int(port)


@dataclass
class Heartbeat:
    """Proof that the event loop runs timers: `last` moves every `interval` seconds."""

    interval: float = HEARTBEAT_SECONDS
    last: float = field(default_factory=time.monotonic)
    lag: float = 0.0  # how late the latest tick woke up

    async def run(self) -> None:
        self.last = time.monotonic()
        while True:
            expected = time.monotonic() + self.interval
            await asyncio.sleep(self.interval)
            self.last = time.monotonic()
            self.lag = max(0.0, self.last - expected)

    def stalled_for(self) -> float:
        return max(0.0, time.monotonic() - self.last - self.interval)


class Runner:
    """The running server. `port` is the bound port (useful with `:0`); `stop()` ends it."""

    def __init__(self, runner: web.AppRunner, heartbeat: asyncio.Task[None]) -> None:
        self._runner = runner
        self._heartbeat = heartbeat

    @property
    def port(self) -> int:
        for address in self._runner.addresses:
            return int(address[1])
        raise RuntimeError("server is not listening")

    async def stop(self) -> None:
        self._heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._heartbeat
        await self._runner.cleanup()


def make_app(
    page: StatusPageSource,
    is_ready: Callable[[], bool],
    heartbeat: Heartbeat,
    *,
    stall_after: float = STALL_AFTER,
    page_timeout: float = PAGE_TIMEOUT,
    previews: PreviewSource | None = None,
    preview_timeout: float = PREVIEW_TIMEOUT,
) -> web.Application:
    """The aiohttp application (exposed for tests; `start` is what the operator calls)."""

    async def metrics_handler(request: web.Request) -> web.Response:
        body, content_type = metrics.exposition(request.headers.get("Accept"))
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    async def healthz(_: web.Request) -> web.Response:
        stalled = heartbeat.stalled_for()
        if stalled > stall_after:
            return web.Response(
                status=503, text=f"event loop stalled: no heartbeat for {stalled:.1f}s\n"
            )
        return web.Response(text=f"ok (loop lag {heartbeat.lag * 1000:.0f}ms)\n")

    async def readyz(_: web.Request) -> web.Response:
        try:
            ready = bool(is_ready())
        except Exception as error:
            log.warning("readiness check failed: %s", error)
            ready = False
        if ready:
            return web.Response(text="ok\n")
        return web.Response(status=503, text="not ready\n")

    async def status_page(request: web.Request) -> web.Response:
        query = statuspage.Query.parse(request.query)
        return await _answer(statuspage.render_page(page, query))

    async def release_page(request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        return await _answer(statuspage.render_release(page, namespace, name))

    one_preview = asyncio.Lock()  # each is a render and a dry-run per object: one at a time

    async def preview_page(request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        if previews is None:
            return web.Response(status=404, text="previews are not served (--no-page-previews)\n")
        if one_preview.locked():  # no queue of expensive work behind a refreshing tab
            return web.Response(
                status=429,
                text="a preview is being computed; try again in a few seconds\n",
                headers={"Retry-After": "5"},
            )
        async with one_preview:
            try:
                view = await asyncio.wait_for(previews.preview(namespace, name), preview_timeout)
            except TimeoutError:
                message = f"computing the preview took over {preview_timeout:.0f}s"
                view = PreviewView(namespace, name, message=message)
        status, html = render_preview(view, namespace, name)
        return web.Response(
            status=status, text=html, content_type="text/html", headers=PAGE_HEADERS
        )

    async def _answer(rendering: Awaitable[str | tuple[int, str]]) -> web.Response:
        try:
            rendered = await asyncio.wait_for(rendering, page_timeout)
            status, html = rendered if isinstance(rendered, tuple) else (200, rendered)
        except TimeoutError:
            empty = statuspage.Page(
                releases=(),
                generated=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                error=f"reading the HelmReleases took longer than {page_timeout:.0f}s",
            )
            html, status = statuspage.render(empty), 503
        return web.Response(
            status=status, text=html, content_type="text/html", headers=PAGE_HEADERS
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/", status_page)
    app.router.add_get("/releases/{namespace}/{name}", release_page)
    app.router.add_get("/releases/{namespace}/{name}/preview", preview_page)
    return app


async def start(
    addr: str,
    page: StatusPageSource,
    is_ready: Callable[[], bool],
    *,
    stall_after: float = STALL_AFTER,
    page_timeout: float = PAGE_TIMEOUT,
    previews: PreviewSource | None = None,
) -> Runner:
    """Listen on `addr` (`host:port` or `:port`; port 0 picks a free one) and serve."""
    host, port = parse_addr(addr)
    heartbeat = Heartbeat()
    app = make_app(
        page,
        is_ready,
        heartbeat,
        stall_after=stall_after,
        page_timeout=page_timeout,
        previews=previews,
    )
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    heartbeat_task = asyncio.create_task(heartbeat.run(), name="rudder:heartbeat")
    result = Runner(runner, heartbeat_task)
    log.info(
        "serving /metrics, /healthz, /readyz and the status page on %s:%d",
        host or "*",
        result.port,
    )
    return result
