"""The command line's pure parts: kubectl's table, and the namespace of the context."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rudder.cli.kubeconfig import context_namespace
from rudder.cli.table import render


def test_columns_are_padded_and_empty_cells_say_none() -> None:
    text = render(["NAME", "READY"], [["shop", "True"], ["a-longer-name", ""]])
    assert text.splitlines() == [
        "NAME            READY",
        "shop            True",
        "a-longer-name   <none>",
    ]


def kubeconfig(tmp_path: Path, namespace: str | None) -> Path:
    context: dict[str, str] = {"cluster": "c", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump({
        "current-context": "mine",
        "contexts": [{"name": "other", "context": {"namespace": "x"}},
                     {"name": "mine", "context": context}],
    }))  # fmt: skip
    return path


def test_the_namespace_is_the_current_contexts_else_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert context_namespace(str(kubeconfig(tmp_path, "team-a"))) == "team-a"
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path, None)))
    assert context_namespace() == "default"
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert context_namespace() == "default"
