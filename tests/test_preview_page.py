"""The preview page and `rudder diff`'s input: autoescaped diffs, and one HelmRelease a file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rudder.cli.preview import InputError, read_helmrelease
from rudder.kube.ssa import ObjectRef
from rudder.observe.preview_page import MAX_LINES, diff_lines, render_preview
from rudder.reconcile.preview_diff import CHANGED, NoPreview, ObjectChange, Preview


def preview() -> Preview:
    ref = ObjectRef("v1", "ConfigMap", "app", "<b>x</b>")
    item = ObjectChange(
        ref,
        CHANGED,
        {"data": {"a": "<script>alert(1)</script>"}},
        {"data": {"a": "two"}},
        conflicts=(".data.a owned by <kubectl>",),
    )
    return Preview("upgrade", 2, "sha256:c", "sha256:v", (item,))


def test_the_page_shows_each_line_as_text_never_markup() -> None:
    status, html = render_preview(preview().view("app", "web"), "app", "web")
    assert status == 200
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert '<span class="add">+  a: two</span>' in html
    assert "ConfigMap app/&lt;b&gt;x&lt;/b&gt;" in html
    assert "conflict: .data.a owned by &lt;kubectl&gt;" in html
    assert "upgrade to revision 2" in html


def test_a_missing_helmrelease_is_404_and_nothing_to_do_says_why() -> None:
    assert render_preview(None, "app", "web")[0] == 404
    status, html = render_preview(NoPreview("none", "in sync").view("app", "web"), "app", "web")
    assert status == 200
    assert "nothing to preview (none): in sync" in html


def test_long_diffs_are_cut_and_counted() -> None:
    lines, more = diff_lines("\n".join(f"+{i}" for i in range(MAX_LINES + 7)))
    assert (len(lines), more) == (MAX_LINES, 7)
    assert lines[0] == ("add", "+0")


def test_diff_reads_exactly_one_helmrelease(tmp_path: Path) -> None:
    good = tmp_path / "hr.yaml"
    good.write_text(
        yaml.safe_dump(
            {"apiVersion": "rudder.dev/v1alpha1", "kind": "HelmRelease",
             "metadata": {"name": "web"}, "spec": {"chart": {"ref": "oci://r/c@sha256:0"}}}
        )
    )  # fmt: skip
    body = read_helmrelease(str(good), "team")
    assert body["metadata"] == {"name": "web", "namespace": "team"}
    two = tmp_path / "two.yaml"
    two.write_text(good.read_text() + "---\n" + good.read_text())
    for path, words in (
        (two, "exactly one"),
        (tmp_path / "nope.yaml", "No such file"),
    ):
        with pytest.raises(InputError, match=words):
            read_helmrelease(str(path), "team")
    other = tmp_path / "cm.yaml"
    other.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    with pytest.raises(InputError, match=r"not a rudder\.dev HelmRelease"):
        read_helmrelease(str(other), "team")
