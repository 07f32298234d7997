"""The operator's own settings (command-line flags), as one immutable object."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?|[kMGT]B?|B)?\s*$")
_FACTORS = {
    None: 1,
    "B": 1,
    "K": 1024,
    "Ki": 1024,
    "k": 1000,
    "kB": 1000,
    "M": 1024**2,
    "Mi": 1024**2,
    "MB": 1000**2,
    "G": 1024**3,
    "Gi": 1024**3,
    "GB": 1000**3,
    "T": 1024**4,
    "Ti": 1024**4,
    "TB": 1000**4,
}


def parse_size(text: str) -> int:
    """'1Gi', '10Mi', '500MB', '4096' -> bytes."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (use e.g. 512Mi, 1Gi, 10MB)")
    number, unit = match.groups()
    return int(float(number) * _FACTORS[unit])


@dataclass(frozen=True)
class OperatorConfig:
    kubeconfig: str | None = None
    namespaces: tuple[str, ...] = ()
    label_selector: str | None = None
    field_manager: str = "rudder"
    concurrency: int = 16
    kube_api_qps: float = 200.0
    kube_api_burst: int = 400
    chart_cache_dir: Path = field(default_factory=lambda: Path("/var/cache/rudder/charts"))
    chart_cache_size: int = 1024**3
    max_chart_size: int = 10 * 1024**2
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

    @property
    def max_chart_uncompressed(self) -> int:
        return self.max_chart_size * 10
