"""Assembles the running operator: API client, discovery, chart source, reconciler, queue,
and hands them to the kopf wiring."""

from __future__ import annotations

import asyncio
import logging

from rudder import controller
from rudder.chart.source import ChartSource
from rudder.config import OperatorConfig
from rudder.kube.client import ClientSettings, connect
from rudder.kube.discovery import Discovery, invalidate_on_changes
from rudder.reconcile.manager import Manager
from rudder.reconcile.reconciler import Reconciler

log = logging.getLogger(__name__)


async def run_operator(config: OperatorConfig) -> None:
    kube = await connect(
        ClientSettings(qps=config.kube_api_qps, burst=config.kube_api_burst),
        kubeconfig=config.kubeconfig,
    )
    discovery = Discovery(kube)
    charts = ChartSource(
        cache_dir=config.chart_cache_dir,
        max_cache_bytes=config.chart_cache_size,
        max_compressed=config.max_chart_size,
        max_uncompressed=config.max_chart_uncompressed,
    )
    reconciler = Reconciler(kube, discovery, charts, config)

    def make_manager() -> Manager:
        manager = Manager(reconciler, concurrency=config.concurrency)
        reconciler.wake = manager.wake
        return manager

    api_changes = asyncio.create_task(invalidate_on_changes(discovery, kube))
    host, _, port = config.health_addr.rpartition(":")
    log.info("rudder starting (field manager %r)", config.field_manager)
    try:
        await controller.run(
            make_manager,
            kube,
            namespaces=config.namespaces,
            label_selector=config.label_selector,
            liveness_endpoint=f"http://{host or '0.0.0.0'}:{port}/healthz",  # noqa: S104
        )
    finally:
        api_changes.cancel()
        await reconciler.sources.stop()
        await kube.close()
