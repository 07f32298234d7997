"""Kubernetes Events on HelmReleases: one per action and per failure, with a short reason and
a message a person can act on. Posting an event never fails a reconcile."""

from __future__ import annotations

import datetime
import logging
import uuid
from typing import Any

from rudder.kube.client import ApiError, KubeClient

log = logging.getLogger(__name__)
COMPONENT = "rudder"
MAX_MESSAGE = 1024


class EventRecorder:
    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube

    async def emit(self, obj: dict[str, Any], *, type_: str, reason: str, message: str) -> None:
        meta = obj.get("metadata", {})
        namespace = meta.get("namespace", "default")
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta.get('name', 'helmrelease')}.{uuid.uuid4().hex[:16]}",
                "namespace": namespace,
            },
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", "rudder.dev/v1alpha1"),
                "kind": obj.get("kind", "HelmRelease"),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:MAX_MESSAGE],
            "type": type_,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": COMPONENT,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            await self.kube.request("POST", f"/api/v1/namespaces/{namespace}/events", body=event)
        except ApiError as error:
            log.warning(
                "could not post event %s on %s/%s: %s", reason, namespace, meta.get("name"), error
            )

    async def normal(self, obj: dict[str, Any], reason: str, message: str) -> None:
        await self.emit(obj, type_="Normal", reason=reason, message=message)

    async def warning(self, obj: dict[str, Any], reason: str, message: str) -> None:
        await self.emit(obj, type_="Warning", reason=reason, message=message)
