"""What a new revision stores: rendered now with the cluster's Capabilities (and
post-rendered, as Helm stores it), or copied from a rollback's target revision; which of
the chart's crds/ to apply, and the wait until they are Established."""

from __future__ import annotations

import asyncio
import copy
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rudder.chart.render import Renderer, RenderRequest
from rudder.kube.client import JSON
from rudder.kube.discovery import Discovery
from rudder.kube.ssa import Applier, ObjectRef
from rudder.reconcile.deploy_failure import CRDNotEstablished, DeployError
from rudder.reconcile.plan import PlanError, crd_documents
from rudder.release.chart_record import chart_from_archive
from rudder.release.codec import Chart, Hook
from rudder.release.manifest import (
    Manifest,
    assemble_manifest,
    parse_document,
    release_notes,
    sort_manifests,
    split_manifests,
)

if TYPE_CHECKING:
    from rudder.reconcile.deploy import DeployRequest

# Helm waits this long for a CRD of crds/ to be Established; rudder at most its timeout.
CRD_ESTABLISHED_TIMEOUT = 60.0


@dataclass(frozen=True)
class Content:
    """What the new revision stores: rendered now, or copied from a rollback's target."""

    manifest: str
    hooks: list[Hook]
    notes: str
    chart: Any
    config: dict[str, Any]
    manifests: list[Manifest]
    crds: list[JSON]


async def revision_content(
    request: DeployRequest, revision: int, discovery: Discovery, renderer: Renderer
) -> Content:
    if request.rollback_to is not None:
        # Helm's rollback: the target revision's chart, values, manifest and hooks,
        # copied into a new revision; crds/ are not touched.
        target = request.rollback_to.release
        return Content(
            manifest=target.manifest,
            hooks=list(target.hooks),
            notes=target.info.notes if target.info else "",
            chart=target.chart,
            config=target.config,
            manifests=[
                parse_document(document, f"manifest-{index}")
                for index, document in enumerate(split_manifests(target.manifest))
            ],
            crds=[],
        )
    snapshot = await discovery.snapshot()
    rendered = await renderer.render(
        request.chart,
        request.values,
        RenderRequest(
            release_name=request.place.release_name,
            namespace=request.place.target_namespace,
            revision=revision,
            is_install=request.is_install,
            kube_version=snapshot.kube_version,
            api_versions=snapshot.api_versions,
            impersonate=request.impersonate,
        ),
    )
    if request.post_render is not None:
        rendered = await request.post_render(rendered)
    hooks, manifests = sort_manifests(rendered)
    try:
        crds = _crds(request.chart_archive, request.chart) if request.crds_policy != "Skip" else []
    except PlanError as error:
        raise DeployError(error.reason, request.redact(error.message)) from error
    return Content(
        manifest=assemble_manifest(manifests),
        hooks=list(hooks),
        notes=release_notes(rendered, request.chart_name),
        chart=_chart_record(request.chart_archive, request.chart),
        config=request.values,
        manifests=list(manifests),
        crds=crds,
    )


# Once per chart, not per release: the chart source keeps one archive and one loaded chart
# per digest, so they key these caches (compared by identity first, hashed once).
@functools.lru_cache(maxsize=32)
def _chart_record(archive: bytes, chart: Any) -> Chart:
    """The chart as the release record stores it (immutable, so shared)."""
    return chart_from_archive(archive, chart)


@functools.lru_cache(maxsize=32)
def _parsed_crds(archive: bytes, chart: Any) -> tuple[JSON, ...]:
    return tuple(crd_documents(chart.crds))


def _crds(archive: bytes, chart: Any) -> list[JSON]:
    """The chart's crds/ documents, parsed once; each caller gets its own copy to stamp."""
    return copy.deepcopy(list(_parsed_crds(archive, chart)))


async def crds_to_apply(
    request: DeployRequest, crds: Sequence[JSON], applier: Applier
) -> list[JSON]:
    """crds/ policy Create never replaces a CRD that is already there."""
    if request.crds_policy != "Create" or not crds:
        return list(crds)
    lives = await asyncio.gather(*(applier.get(ObjectRef.of(crd)) for crd in crds))
    return [crd for crd, live in zip(crds, lives, strict=True) if live is None]


async def wait_established(applier: Applier, crds: Sequence[ObjectRef], seconds: float) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    for ref in crds:
        while True:
            live = await applier.get(ref)
            conditions = (live or {}).get("status", {}).get("conditions") or []
            if any(
                c.get("type") == "Established" and c.get("status") == "True" for c in conditions
            ):
                break
            if asyncio.get_running_loop().time() > deadline:
                why = "; ".join(
                    f"{c.get('type')}={c.get('status')}: {c.get('message', '')}"
                    for c in conditions
                    if c.get("status") != "True"
                )
                raise CRDNotEstablished(
                    f"{ref} was not Established within {seconds:.0f}s"
                    + (f" ({why})" if why else "")
                )
            await asyncio.sleep(0.5)
