"""`rudder diff` and `rudder approve`: the preview of a HelmRelease's next action, computed
here with the caller's own credentials — the operator's reconcile code, rendering with the
cluster's Capabilities and dry-running every object server-side — so it needs no operator
and writes nothing (approve writes one annotation).

Exit codes of diff, as `kubectl diff`: 0 no differences, 1 differences, 2 or more an error
(or nothing that can be previewed: an invalid spec, a chart that cannot be pulled).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from rudder.chart.source import ChartSource
from rudder.config import OperatorConfig
from rudder.kube.client import MERGE_PATCH, KubeClient
from rudder.kube.discovery import Discovery
from rudder.model import APPROVE_ANNOTATION
from rudder.reconcile.preview_diff import NoPreview, Preview
from rudder.reconcile.reconciler import Reconciler
from rudder.reconcile.target import HELMRELEASES

NO_DIFFERENCES, DIFFERENCES, ERROR = 0, 1, 2
# Nothing to preview, and that is fine (in sync, suspended); other actions are errors.
QUIET_ACTIONS = frozenset({"none", "suspended"})
COLOURS = {"+": "\033[32m", "-": "\033[31m", "@": "\033[36m"}
RESET = "\033[0m"


@dataclass(frozen=True)
class PreviewSettings:
    kubeconfig: Mapping[str, Any] | None  # merged, with the chosen context current
    field_manager: str = "rudder"  # the operator's --field-manager
    kustomize_module: Path | None = None  # for postRenderers[].kustomize
    cache_dir: Path = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rudder"


class InputError(Exception):
    """The file or the HelmRelease cannot be previewed as given."""


async def diff(
    kube: KubeClient,
    settings: PreviewSettings,
    namespace: str,
    name: str | None,
    file: str | None,
    *,
    colour: bool,
    out: TextIO = sys.stdout,
) -> int:
    """`rudder diff NAME | -f FILE`."""
    try:
        body = await _helmrelease(kube, namespace, name, file)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return ERROR
    result = await compute(kube, settings, body)
    meta = body["metadata"]
    where = f"{meta['namespace']}/{meta['name']}"
    if isinstance(result, NoPreview):
        quiet = result.action in QUIET_ACTIONS
        print(
            f"{where}: nothing to preview ({result.action}): {result.message}",
            file=out if quiet else sys.stderr,
        )
        return NO_DIFFERENCES if quiet else ERROR
    show(result, where, out, colour=colour)
    if result.refused:  # the action would fail: a CI job must not pass it
        print(f"error: the API server refuses {len(result.refused)} object(s)", file=sys.stderr)
        return ERROR
    return DIFFERENCES if result.differs else NO_DIFFERENCES


async def approve(
    kube: KubeClient,
    settings: PreviewSettings,
    namespace: str,
    name: str,
    *,
    yes: bool,
    colour: bool,
    out: TextIO = sys.stdout,
    answer: TextIO = sys.stdin,
) -> int:
    """`rudder approve NAME`: show the preview, ask, and approve the digest rudder holds the
    action for — only if the preview computed here is that same one."""
    path = HELMRELEASES.format(namespace=namespace, name=name)
    body = await kube.get(path)
    held = ((body.get("status") or {}).get("preview") or {}).get("digest")
    where = f"{namespace}/{name}"
    result = await compute(kube, settings, body)
    if isinstance(result, NoPreview):
        out.write(f"{where}: nothing to approve ({result.action}): {result.message}\n")
        return 1
    show(result, where, out, colour=colour)
    if not held:
        out.write(f"✗ {where} holds no preview for approval (is approval manual?)\n")
        return 1
    if held != result.digest:
        out.write(
            f"✗ the preview changed since rudder computed it (rudder's {held}, now "
            f"{result.digest}); wait for rudder to compute it again (`rudder reconcile`)\n"
        )
        return 1
    if not yes:
        out.write(f"Approve {result.action} of {where} ({result.digest})? [y/N] ")
        out.flush()
        if answer.readline().strip().lower() not in ("y", "yes"):
            out.write("not approved\n")
            return 1
    patch = {"metadata": {"annotations": {APPROVE_ANNOTATION: result.digest}}}
    await kube.request("PATCH", path, body=patch, content_type=MERGE_PATCH)
    out.write(f"✔ approved {result.digest} for helmrelease.rudder.dev/{name}\n")
    return 0


async def compute(
    kube: KubeClient, settings: PreviewSettings, body: dict[str, Any]
) -> Preview | NoPreview:
    """The operator's own preview, run here on the caller's client."""
    with _kubeconfig_file(settings.kubeconfig) as kubeconfig:
        config = OperatorConfig(
            kubeconfig=kubeconfig,
            field_manager=settings.field_manager,
            chart_cache_dir=settings.cache_dir / "charts",
            kustomize_module=settings.kustomize_module,
        )
        charts = ChartSource(
            cache_dir=config.chart_cache_dir,
            max_cache_bytes=config.chart_cache_size,
            max_compressed=config.max_chart_size,
            max_uncompressed=config.max_chart_uncompressed,
        )
        reconciler = Reconciler(kube, Discovery(kube), charts, config)
        try:
            return await reconciler.preview(body)
        finally:
            reconciler.services.deployer.renderer.close()
            await reconciler.clusters.close()


def show(preview: Preview, where: str, out: TextIO, *, colour: bool) -> None:
    out.write(
        f"{where}: {preview.action} to revision {preview.revision}: {preview.summary()}\n"
        f"preview digest {preview.digest}\n"
    )
    for hook in preview.hooks:
        out.write(f"hook {hook}\n")
    for item, text in preview.diffs():
        for conflict in item.conflicts:
            out.write(f"# {item.ref}: conflict: {preview.redact(conflict)}\n")
        if item.error:
            out.write(f"# {item.ref}: the dry-run refused it: {preview.redact(item.error)}\n")
        for line in text.splitlines(keepends=True):
            mark = COLOURS.get(line[:1]) if colour and not line.startswith(("+++", "---")) else None
            out.write(f"{mark}{line.rstrip(chr(10))}{RESET}\n" if mark else line)


def wants_colour(out: TextIO, setting: str) -> bool:
    if setting != "auto":
        return setting == "always"
    return out.isatty() and not os.environ.get("NO_COLOR")


async def _helmrelease(
    kube: KubeClient, namespace: str, name: str | None, file: str | None
) -> dict[str, Any]:
    if file is None:
        assert name is not None
        return await kube.get(HELMRELEASES.format(namespace=namespace, name=name))
    given = read_helmrelease(file, namespace)
    meta = given["metadata"]
    live = await kube.get_or_none(HELMRELEASES.format(**meta))
    if live is None:
        # Not created yet: as the API server would store it (generation 1, no status).
        return {**given, "metadata": {**meta, "generation": 1}}
    # The HelmRelease as it would be once this file is applied: the file's spec, the live
    # object's identity and status (its release, its revisions, its attempts) — and a new
    # generation when the spec differs, as the API server would give it.
    spec = given.get("spec") or {}
    if spec == live.get("spec"):
        return live
    meta = live.get("metadata") or {}
    return {
        **live,
        "spec": spec,
        "metadata": {**meta, "generation": int(meta.get("generation") or 0) + 1},
    }


def read_helmrelease(file: str, namespace: str) -> dict[str, Any]:
    """The one HelmRelease in `file` (`-`: stdin), its namespace defaulted; InputError."""
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text()
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except (OSError, yaml.YAMLError) as error:
        raise InputError(f"{file}: {error}") from error
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise InputError(f"{file}: expected exactly one HelmRelease")
    given = documents[0]
    api_version = str(given.get("apiVersion", ""))
    if given.get("kind") != "HelmRelease" or not api_version.startswith("rudder.dev/"):
        raise InputError(f"{file}: not a rudder.dev HelmRelease")
    meta = given.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name"):
        raise InputError(f"{file}: metadata.name is missing")
    placed = {**meta, "name": str(meta["name"]), "namespace": meta.get("namespace") or namespace}
    return {**given, "metadata": placed}


@contextlib.contextmanager
def _kubeconfig_file(merged: Mapping[str, Any] | None) -> Iterator[str | None]:
    """Helm's engine (rendering, `lookup`) reads a kubeconfig file: the caller's, with the
    chosen context current, in a private temporary file."""
    if merged is None:
        yield None  # in a pod: the in-cluster configuration
        return
    with tempfile.TemporaryDirectory(prefix="rudder-diff-") as directory:
        path = Path(directory) / "kubeconfig"
        path.touch(mode=0o600)
        path.write_text(yaml.safe_dump(dict(merged)))
        yield str(path)
