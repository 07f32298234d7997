"""Post-render what a chart rendered: the HelmRelease's post-renderers, in order.

    renderer = PostRenderer(sandbox, plugins, kustomize_module, policy)
    job = await renderer.prepare(spec, plugin_requests, owner)   # pulls plugins; may raise
    files = await renderer.run(job, rendered)                    # before sorting, as Helm

`prepare` happens with the chart pull, before any write; `run` is part of computing the
revision's content, so a failure of either leaves the release and the cluster as they
were. kustomize is a Wasm module too (kustomize's own Go code, built for WASI), run in the
same sandbox with the kustomization in its config: one sandbox, one message format.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from rudder.chart.errors import ChartError
from rudder.chart.source import ChartRequest
from rudder.model import HelmReleaseSpec, PostRendererSpec, WasmLimits
from rudder.postrender.checks import OutputPolicy, check_additions, check_objects, with_origin
from rudder.postrender.errors import POST_RENDER_FAILED, PostRenderError
from rudder.postrender.message import input_message, output_manifests
from rudder.postrender.plugin_artifact import Plugin, RuntimeConfig
from rudder.postrender.plugins import PluginSource
from rudder.postrender.sandbox import Sandbox
from rudder.postrender.stream import (
    JSONObject,
    annotated,
    as_files,
    dump_stream,
    groups,
    merge_files,
    parse_stream,
    passed_by,
)
from rudder.release.manifest import NOTES_SUFFIX, ManifestError
from rudder.release.store import Owner

KUSTOMIZE: Final = "kustomize"


@dataclass(frozen=True)
class Step:
    plugin: Plugin
    where: str  # "spec.postRenderers[1] (add-label 0.1.0)": names it in every message
    args: tuple[str, ...]
    config: Mapping[str, str]
    encoding: str
    limits: WasmLimits


@dataclass(frozen=True)
class PostRenderJob:
    """Everything a deploy needs to post-render, its plugins already pulled."""

    steps: tuple[Step, ...]
    strategy: str
    owner: Owner


def _as_group_files(
    job: PostRenderJob, group_name: str, objects: list[JSONObject]
) -> dict[str, str]:
    labelled = with_origin(objects, job.owner.name, job.owner.namespace)
    return as_files(labelled, group_name)


def inputs_digest(values_digest: str, spec: HelmReleaseSpec) -> str:
    """The values digest, covering the post-renderers when there are any: a change of
    post-renderers (or of a plugin's digest) is then a change of inputs, an upgrade. Without
    post-renderers it is the values digest itself, so existing releases see no change."""
    if not spec.post_renderers:
        return values_digest
    canonical = json.dumps(
        {
            "values": values_digest,
            "strategy": spec.post_render_strategy,
            "postRenderers": [_canonical(item) for item in spec.post_renderers],
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _canonical(item: PostRendererSpec) -> object:
    if item.kustomize is not None:
        return {"kustomize": item.kustomize.kustomization()}
    assert item.wasm is not None
    wasm = item.wasm
    # What changes the output: not the limits, nor the tag written beside the digest.
    reference = wasm.reference
    return {
        "wasm": {
            "ref": f"{reference.registry}/{reference.repository}@{reference.digest}",
            "args": list(wasm.args),
            "config": dict(wasm.config),
            "encoding": wasm.manifests_encoding,
        }
    }


class PostRenderer:
    def __init__(
        self,
        sandbox: Sandbox,
        plugins: PluginSource,
        kustomize_module: Path | None,
        policy: OutputPolicy | None = None,
    ) -> None:
        self.sandbox = sandbox
        self.plugins = plugins
        self.policy = policy or OutputPolicy()
        self._kustomize_path = kustomize_module
        self._kustomize: Plugin | None = None
        self._kustomize_lock = asyncio.Lock()

    async def prepare(
        self, spec: HelmReleaseSpec, requests: Sequence[ChartRequest | None], owner: Owner
    ) -> PostRenderJob | None:
        """The job for `spec`'s post-renderers (None without any). `requests[i]` pulls the
        plugin of `spec.postRenderers[i]` (None for kustomize). Raises ChartError (a plugin
        artifact), PostRenderError (no kustomize module)."""
        if not spec.post_renderers:
            return None
        steps = []
        for index, (item, request) in enumerate(zip(spec.post_renderers, requests, strict=True)):
            field = f"spec.postRenderers[{index}]"
            if item.kustomize is not None:
                plugin = await self._kustomize_plugin(field)
                config = {"kustomization": json.dumps(item.kustomize.kustomization())}
                steps.append(Step(plugin, f"{field} (kustomize)", (), config, "text", WasmLimits()))
                continue
            assert item.wasm is not None
            assert request is not None
            try:
                plugin = await self.plugins.get(request)
            except ChartError as error:
                raise ChartError(error.reason, f"{field}: {error.message}") from None
            config = {**plugin.runtime.config, **item.wasm.config}
            where = f"{field} ({plugin.name} {plugin.version})"
            steps.append(
                Step(
                    plugin,
                    where,
                    item.wasm.args,
                    config,
                    item.wasm.manifests_encoding,
                    item.wasm.limits,
                )
            )
        return PostRenderJob(tuple(steps), spec.post_render_strategy, owner)

    async def run(self, job: PostRenderJob, rendered: Mapping[str, str]) -> dict[str, str]:
        """The rendered files after the post-renderers (NOTES.txt kept as it was). Every
        step, with the reading and checking of its output, runs on a sandbox worker."""
        parts = [{path: text for path, text in rendered.items() if path.endswith(NOTES_SUFFIX)}]
        for group in await asyncio.to_thread(groups, rendered, job.strategy):
            if not group.documents:
                continue
            if not group.post_render:
                parts.append(passed_by(group))
                continue
            objects = await asyncio.to_thread(annotated, group)
            for step in job.steps:
                objects = await self.sandbox.submit(
                    functools.partial(self._run_step, step, objects)
                )
            parts.append(await asyncio.to_thread(_as_group_files, job, group.name, objects))
        return merge_files(parts)

    def _run_step(self, step: Step, objects: list[JSONObject]) -> list[JSONObject]:
        """One post-renderer on one stream (blocking, on a sandbox worker)."""
        limits = self.sandbox.run_limits(
            step.plugin, step.limits.memory_pages, step.limits.timeout, step.limits.max_output_bytes
        )
        message = input_message(dump_stream(objects), step.args, step.encoding)
        output = self.sandbox.call(step.plugin, message, step.config, limits, step.where)
        manifests = output_manifests(output, step.where)
        try:
            result = parse_stream(manifests, step.where)
        except (ManifestError, UnicodeError, RecursionError) as error:
            raise PostRenderError(
                POST_RENDER_FAILED, f"{step.where}: the output is not valid YAML: {error}"
            ) from None
        check_objects(result, step.where)
        if objects and not result:
            raise PostRenderError(
                POST_RENDER_FAILED, f"{step.where}: the output has no objects (the input had)"
            )
        check_additions(objects, result, self.policy, step.where)
        return result

    async def _kustomize_plugin(self, field: str) -> Plugin:
        async with self._kustomize_lock:
            if self._kustomize is None:
                self._kustomize = await asyncio.to_thread(self._load_kustomize, field)
            return self._kustomize

    def _load_kustomize(self, field: str) -> Plugin:
        path = self._kustomize_path
        try:
            if path is None:
                raise FileNotFoundError("no module configured")
            wasm = path.read_bytes()
        except OSError as error:
            raise PostRenderError(
                POST_RENDER_FAILED,
                f"{field}: kustomize is not available in this operator ({path}: "
                f"{getattr(error, 'strerror', None) or error}; see --kustomize-module)",
            ) from None
        digest = "sha256:" + hashlib.sha256(wasm).hexdigest()
        return Plugin(KUSTOMIZE, "builtin", digest, wasm, digest, RuntimeConfig())
