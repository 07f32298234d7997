"""kopf wiring, and nothing else: watch events in, `Manager.observe` out.

Only low-level event handlers are registered, so kopf itself writes nothing to the API:
no progress or diff-base annotations, no finalizers of its own, no handler-log events,
no peering objects. rudder owns finalizers, status and events (see reconcile/).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any

import kopf

from rudder.kube.client import KubeClient
from rudder.kube.shared_watch import kept_form
from rudder.reconcile.manager import Manager

GROUP, VERSION, PLURAL = "rudder.dev", "v1alpha1", "helmreleases"


def operator_settings(settings: kopf.OperatorSettings, *, label_selector: str | None) -> None:
    """Make kopf a silent watcher: everything it would write, rudder does itself."""
    settings.posting.enabled = False
    settings.scanning.disabled = True
    settings.peering.standalone = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.error_backoffs = [1, 2, 5, 10, 20]
    if label_selector:
        settings.watching.label_selectors[GROUP, VERSION, PLURAL] = label_selector


def build_registry(
    manager_factory: Callable[[], Manager],
    kube: KubeClient,
    *,
    label_selector: str | None,
) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    holder: dict[str, Manager] = {}

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        operator_settings(settings, label_selector=label_selector)
        holder["manager"] = manager_factory()

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(kube)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def helmrelease_event(event: kopf.RawEvent, **_: Any) -> None:
        manager = holder.get("manager")
        if manager is None:
            return
        # Kept until the next event, for all HelmReleases: the slimmer the better.
        body = kept_form(dict(event["object"]))
        manager.observe(body, deleted=event.get("type") == "DELETED")

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        manager = holder.pop("manager", None)
        if manager is not None:
            await manager.stop()

    return registry


def connection_info(kube: KubeClient) -> kopf.ConnectionInfo:
    """kopf connects with exactly the credentials rudder's own client uses."""
    config = kube.api.configuration
    header = config.api_key.get("BearerToken") or config.api_key.get("authorization")
    token = header.split(" ", 1)[-1] if header else None
    return kopf.ConnectionInfo(
        server=str(config.host),
        ca_path=config.ssl_ca_cert,
        insecure=not config.verify_ssl,
        scheme="Bearer" if token else None,
        token=token,
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
    )


async def run(
    manager_factory: Callable[[], Manager],
    kube: KubeClient,
    *,
    namespaces: Collection[str],
    label_selector: str | None,
) -> None:
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    registry = build_registry(manager_factory, kube, label_selector=label_selector)
    await kopf.operator(
        registry=registry,
        standalone=True,
        clusterwide=not namespaces,
        namespaces=list(namespaces),
    )
