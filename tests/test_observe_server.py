"""rudder.observe.server: a real server on 127.0.0.1:0 answering /metrics, /healthz, /readyz
and the status page."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from rudder.observe import metrics, server


class FakeSource:
    def __init__(self, releases: list[dict[str, Any]] | None = None, delay: float = 0.0) -> None:
        self.releases = releases or []
        self.delay = delay

    async def helmreleases(self) -> list[dict[str, Any]]:
        await asyncio.sleep(self.delay)
        return self.releases

    async def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return [{"reason": "Installed", "message": f"installed {name}", "type": "Normal"}]


HR = {
    "metadata": {"name": "<b>podinfo</b>", "namespace": "apps"},
    "status": {"conditions": [{"type": "Ready", "status": "True", "message": "deployed"}]},
}


class Ready:
    def __init__(self) -> None:
        self.value = False

    def __call__(self) -> bool:
        return self.value


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def test_endpoints(http: aiohttp.ClientSession) -> None:
    ready = Ready()
    runner = await server.start("127.0.0.1:0", FakeSource([HR]), ready)
    base = f"http://127.0.0.1:{runner.port}"
    try:
        async with http.get(f"{base}/healthz") as response:
            assert response.status == 200
            assert (await response.text()).startswith("ok")

        async with http.get(f"{base}/readyz") as response:
            assert response.status == 503
        ready.value = True
        async with http.get(f"{base}/readyz") as response:
            assert response.status == 200

        metrics.observe_request("GET", 200)
        async with http.get(f"{base}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
        assert "rudder_reconcile_total" in text
        assert 'rudder_kube_requests_total{code="200",verb="GET"}' in text
        assert "process_" in text or "python_info" in text

        openmetrics = {"Accept": "application/openmetrics-text; version=1.0.0"}
        async with http.get(f"{base}/metrics", headers=openmetrics) as response:
            assert response.headers["Content-Type"].startswith("application/openmetrics-text")
            assert (await response.text()).rstrip().endswith("# EOF")

        async with http.get(f"{base}/") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/html")
            csp = response.headers["Content-Security-Policy"]
            assert "default-src 'none'" in csp
            assert "script-src" not in csp  # no script allowed at all
            assert "form-action 'self'" in csp  # the overview's filter form submits to it
            page = await response.text()
        assert "&lt;b&gt;podinfo&lt;/b&gt;" in page
        assert "installed" not in page  # the overview reads no events
        link = "/releases/apps/%3Cb%3Epodinfo%3C%2Fb%3E"
        assert f'href="{link}"' in page

        async with http.get(f"{base}{link}") as response:
            assert response.status == 200
            assert "default-src 'none'" in response.headers["Content-Security-Policy"]
            detail = await response.text()
        assert "installed &lt;b&gt;podinfo&lt;/b&gt;" in detail

        async with http.get(f"{base}/releases/apps/missing") as response:
            assert response.status == 404
            assert "There is no HelmRelease apps/missing" in await response.text()
        async with http.get(f"{base}/nope") as response:
            assert response.status == 404
    finally:
        await runner.stop()

    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(f"{base}/healthz"):
            pass


async def test_readiness_callback_that_raises_is_not_ready(http: aiohttp.ClientSession) -> None:
    def broken() -> bool:
        raise RuntimeError("boom")

    runner = await server.start("127.0.0.1:0", FakeSource(), broken)
    try:
        async with http.get(f"http://127.0.0.1:{runner.port}/readyz") as response:
            assert response.status == 503
    finally:
        await runner.stop()


async def test_slow_source_times_out_with_503(http: aiohttp.ClientSession) -> None:
    runner = await server.start("127.0.0.1:0", FakeSource(delay=5), lambda: True, page_timeout=0.2)
    try:
        started = time.monotonic()
        async with http.get(f"http://127.0.0.1:{runner.port}/") as response:
            assert response.status == 503
            assert "took longer than" in await response.text()
        assert time.monotonic() - started < 3
        # Probes are unaffected by a slow page.
        async with http.get(f"http://127.0.0.1:{runner.port}/healthz") as response:
            assert response.status == 200
    finally:
        await runner.stop()


async def test_healthz_fails_when_the_heartbeat_stops() -> None:
    heartbeat = server.Heartbeat(interval=0.05)
    app = server.make_app(FakeSource(), lambda: True, heartbeat, stall_after=0.2)
    async with TestClient(TestServer(app)) as client:
        beating = asyncio.create_task(heartbeat.run())
        await asyncio.sleep(0.3)
        response = await client.get("/healthz")
        assert response.status == 200
        beating.cancel()  # the loop "stops running timers" for this app
        await asyncio.sleep(0.4)
        response = await client.get("/healthz")
        assert response.status == 503
        assert "stalled" in await response.text()


@pytest.mark.parametrize(
    ("addr", "expected"),
    [
        (":8080", (None, 8080)),
        ("10.1.2.3:9090", ("10.1.2.3", 9090)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:8080", ("::1", 8080)),
    ],
)
def test_parse_addr(addr: str, expected: tuple[str | None, int]) -> None:
    assert server.parse_addr(addr) == expected


@pytest.mark.parametrize("addr", ["8080", "host:", "host:http", ""])
def test_parse_addr_rejects(addr: str) -> None:
    with pytest.raises(ValueError, match="listen address"):
        server.parse_addr(addr)
