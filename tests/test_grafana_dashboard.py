"""deploy/grafana/rudder.json: every query names only metrics rudder exports, as exported
(counters with _total, histograms by _bucket/_sum/_count)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

# Imported for their metric definitions (the process-wide registry).
import rudder.chart.metrics
import rudder.observe.metrics
import rudder.postrender.metrics  # noqa: F401

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "rudder.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported() -> set[str]:
    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("rudder_"):
            names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
    return names


def test_every_query_names_a_metric_rudder_exports() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for query in queries for name in re.findall(r"\brudder_[a-z_]+", query)}
    assert used, "the dashboard queries nothing"
    assert used <= exported(), sorted(used - exported())
    # The subjects each have a panel.
    for subject in ("condition", "reconcile", "actions", "conflicts", "drift", "kube_requests",
                    "chart_cache"):  # fmt: skip
        assert any(subject in name for name in used), subject


def test_panel_ids_are_unique_and_titled() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert all(p["title"] for p in panels)
