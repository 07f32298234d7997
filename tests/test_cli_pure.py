"""The command line's pure parts: kubectl's table, and kubectl's kubeconfig rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rudder.cli.kubeconfig import KubeconfigError, Target, resolve
from rudder.cli.table import render


def test_columns_are_padded_and_empty_cells_say_none() -> None:
    text = render(["NAME", "READY"], [["shop", "True"], ["a-longer-name", ""]])
    assert text.splitlines() == [
        "NAME            READY",
        "shop            True",
        "a-longer-name   <none>",
    ]


def write(path: Path, current: str, contexts: dict[str, str | None]) -> Path:
    path.write_text(yaml.safe_dump({
        "current-context": current,
        "contexts": [{"name": name, "context": {"cluster": "c", "user": "u",
                      **({"namespace": ns} if ns else {})}} for name, ns in contexts.items()],
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443",
                                               "certificate-authority": "ca.crt"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
    }))  # fmt: skip
    return path


def test_the_context_and_namespace_are_kubectls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = write(tmp_path / "a.yaml", "ctx-a", {"ctx-b": "from-a"})
    two = write(tmp_path / "b.yaml", "ctx-b", {"ctx-a": "ns-a", "ctx-b": "from-b"})
    monkeypatch.setenv("KUBECONFIG", f"{one}:{two}")
    # The first file's current context; the first definition of each context.
    target = resolve()
    assert (target.context, target.namespace) == ("ctx-a", "ns-a")
    assert resolve(context="ctx-b").namespace == "from-a"
    assert resolve(str(two)).namespace == "from-b"  # --kubeconfig alone
    assert target.config is not None
    [cluster] = target.config["clusters"]
    assert cluster["cluster"]["certificate-authority"] == str(tmp_path / "ca.crt")
    with pytest.raises(KubeconfigError, match='context "nope" does not exist'):
        resolve(context="nope")


def test_without_a_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubeconfigError, match="no kubeconfig"):
        resolve()
    with pytest.raises(KubeconfigError, match="does not exist"):
        resolve(str(tmp_path / "missing"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert resolve() == Target(None, None, "default")  # in a pod (no namespace file here)
