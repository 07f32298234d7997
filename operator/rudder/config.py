"""The operator's own settings (command-line flags), as one immutable object."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class OperatorConfig:
    kubeconfig: str | None = None
    namespaces: tuple[str, ...] = ()
    label_selector: str | None = None
    field_manager: str = "rudder"
    concurrency: int = 16
    # The API server's priority and fairness protects it; the client-side limit only keeps a
    # runaway in check. 200/400 held the N=1000 benchmark to 73 s at 0.66 busy (the limit,
    # not the machine, was the bottleneck); 400/800 took 38 s, near the API server's floor.
    kube_api_qps: float = 400.0
    kube_api_burst: int = 800
    chart_cache_dir: Path = field(default_factory=lambda: Path("/var/cache/rudder/charts"))
    chart_cache_size: int = 1024**3
    max_chart_size: int = 10 * 1024**2
    max_index_size: int = 64 * 1024**2  # an HTTP repository's index.yaml
    takeover_managers: tuple[str, ...] = ("helm",)
    drift_managers: tuple[str, ...] = ("kubectl", "kubectl-edit", "helm")
    metrics_addr: str = ":8080"
    leader_elect: bool = False
    leader_election_namespace: str = "rudder-system"
    leader_election_id: str = "rudder-leader"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    default_service_account: str | None = None
    no_cross_namespace_refs: bool = False
    # Post-renderers: the kustomize Wasm module, and the sandbox's maxima for every plugin.
    kustomize_module: Path | None = None
    post_renderer_max_memory: int = 256 * 1024**2
    post_renderer_timeout: float = 30.0
    post_renderer_max_output: int = 16 * 1024**2
    post_renderer_allow_network: bool = False
    post_renderer_workers: int = 2
    post_renderer_deny_kinds: tuple[str, ...] = ()
    post_renderer_deny_namespaces: tuple[str, ...] = ()
    max_plugin_size: int = 64 * 1024**2
    # spec.kubeConfig: let kubeconfigs run exec credential plugins / auth providers.
    allow_kubeconfig_exec: bool = False
    # The status page computes previews (rendered objects' contents) for whoever reaches it.
    page_previews: bool = True

    @property
    def max_chart_uncompressed(self) -> int:
        return self.max_chart_size * 10
