"""Assembles the running operator: API client, discovery, chart source, reconciler, queue,
the metrics/health/status-page server, and hands them to the kopf wiring."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from typing import Any

import aiohttp

from rudder import controller
from rudder.chart.source import ChartSource
from rudder.config import OperatorConfig
from rudder.kube.client import ApiError, ClientSettings, KubeClient, connect
from rudder.kube.discovery import Discovery, invalidate_on_changes
from rudder.kube.election import ElectionSettings, LeaderElector
from rudder.kube.shared_watch import SharedWatches
from rudder.kube.watch import log_unexpected_end
from rudder.observe import metrics, server, statuspage
from rudder.observe.preview_page import PreviewView
from rudder.reconcile.manager import Manager
from rudder.reconcile.reconciler import Reconciler

log = logging.getLogger(__name__)

PAGE_QPS, PAGE_BURST = 5.0, 10


class PageSource:
    """The status pages' data: HelmReleases as the watch last delivered them (no API call),
    and one HelmRelease's recent events (one list call, on its own page only)."""

    def __init__(self, kube: KubeClient, previewer: Reconciler) -> None:
        self.kube = kube
        self.previewer = previewer  # on the pages' own rate limit, never the reconciles'
        self.manager: Manager | None = None

    async def preview(self, namespace: str, name: str) -> PreviewView | None:
        """Computed now from the cached HelmRelease, as its identity; writes nothing."""
        body = statuspage.find(await self.helmreleases(), namespace, name)
        if body is None:
            return None
        try:
            result = await self.previewer.preview(dict(body))
        except (ApiError, OSError, aiohttp.ClientError) as error:
            return PreviewView(namespace, name, message=f"could not compute the preview: {error}")
        finally:
            # Previews are rare: a remote cluster's connection is not kept for them.
            await self.previewer.clusters.forget((namespace, name))
        return result.view(namespace, name)

    async def helmreleases(self) -> list[dict[str, Any]]:
        return self.manager.bodies() if self.manager else []

    async def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        try:
            listed = await self.kube.get(
                f"/api/v1/namespaces/{namespace}/events",
                # The apiVersion too: Flux's HelmReleases are kind HelmRelease as well.
                fieldSelector=(
                    "involvedObject.apiVersion=rudder.dev/v1alpha1,"
                    f"involvedObject.kind=HelmRelease,involvedObject.name={name}"
                ),
            )
        except ApiError:
            return []
        items: list[dict[str, Any]] = listed.get("items", [])
        return items


async def run_operator(config: OperatorConfig) -> None:
    kube = await connect(
        ClientSettings(qps=config.kube_api_qps, burst=config.kube_api_burst),
        kubeconfig=config.kubeconfig,
    )
    kube.observers.append(metrics.observe_request)
    discovery = Discovery(kube)
    charts = ChartSource(
        cache_dir=config.chart_cache_dir,
        max_cache_bytes=config.chart_cache_size,
        max_compressed=config.max_chart_size,
        max_uncompressed=config.max_chart_uncompressed,
        max_index_bytes=config.max_index_size,
    )
    # One list+watch per collection and identity, shared by every reconcile.
    watches = SharedWatches()
    reconciler = Reconciler(kube, discovery, charts, config, watches)
    # Page views read events with a budget of their own, never the reconciles'.
    pages = kube.with_own_limit(PAGE_QPS, PAGE_BURST)
    # Previews read directly: they are rare, and a remote cluster is closed after each one.
    page = PageSource(pages, Reconciler(pages, discovery, charts, config))

    def make_manager() -> Manager:
        manager = Manager(reconciler, concurrency=config.concurrency, gone=reconciler.forget)
        reconciler.wake = manager.wake
        page.manager = manager
        return manager

    elector: LeaderElector | None = None
    if config.leader_elect:
        elector = LeaderElector(
            kube,
            ElectionSettings(
                namespace=config.leader_election_namespace,
                name=config.leader_election_id,
                identity=f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}",
                lease_duration=config.lease_duration,
                renew_deadline=config.renew_deadline,
                retry_period=config.retry_period,
            ),
        )

    def ready() -> bool:
        # A standby is ready too: it is doing its job, and a rolling update of a
        # leader-elected Deployment waits for new pods, which start as standbys.
        return page.manager is not None or (elector is not None and not elector.leading)

    previews = page if config.page_previews else None
    http = await server.start(config.metrics_addr, page, ready, previews=previews)
    api_changes = asyncio.create_task(invalidate_on_changes(discovery, kube))
    # It only ends when cancelled; if a bug ever ends it, stale Capabilities must not be silent.
    api_changes.add_done_callback(log_unexpected_end)
    log.info(
        "rudder starting (field manager %r, metrics on %s)",
        config.field_manager,
        config.metrics_addr,
    )

    async def operate() -> None:
        await controller.run(
            make_manager,
            kube,
            namespaces=config.namespaces,
            label_selector=config.label_selector,
        )

    try:
        if elector is None:
            await operate()
        else:
            if not await elector.run(operate):
                # Never reconcile without the Lease: exit and come back as a standby.
                raise SystemExit(1)
    finally:
        api_changes.cancel()
        await reconciler.sources.stop()
        await reconciler.clusters.close()
        await page.previewer.clusters.close()
        await watches.close()
        await http.stop()
        await kube.close()
