"""spec.chart's HTTP repository form: what parses, and errors that name the field."""

from __future__ import annotations

import re
from typing import Any

import pytest

from rudder import model
from rudder.model import HttpRepositoryChart, SpecError, parse_spec

DIGEST = "sha256:" + "0123456789abcdef" * 4
REPO = "https://charts.example.com/stable"


def chart(**fields: Any) -> dict[str, Any]:
    return {"chart": {"repository": REPO, "name": "podinfo", "version": "6.14.1",
                      "digest": DIGEST, **fields}}  # fmt: skip


def parse(spec: dict[str, Any]) -> model.HelmReleaseSpec:
    return parse_spec(spec, name="web", namespace="apps")


def test_an_exact_version_pinned_by_digest() -> None:
    spec = parse(chart(secretRef={"name": "auth"}, certSecretRef={"name": "ca"}))
    assert spec.chart.http == HttpRepositoryChart(REPO, "podinfo", "6.14.1", DIGEST)
    assert (spec.chart.ref, spec.chart.reference) == ("", None)
    assert (spec.chart.secret_ref, spec.chart.cert_secret_ref) == ("auth", "ca")


def test_a_version_range_needs_no_digest() -> None:
    spec = parse(
        {
            "chart": {
                "repository": REPO,
                "name": "podinfo",
                "version": ">=6 <7",
                "allowVersionRange": True,
                "passCredentials": True,
            }
        }
    )
    assert spec.chart.http is not None
    assert spec.chart.http.allow_version_range
    assert spec.chart.http.pass_credentials
    assert spec.chart.http.digest is None


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"chart": {}}, "spec.chart.ref", "spec.chart.repository"),
        (chart(ref=f"oci://r.example/c/p@{DIGEST}"), "spec.chart", "not both"),
        (chart(name=None), "spec.chart.name", "required"),
        (chart(version=None), "spec.chart.version", "required"),
        (chart(digest=None), "spec.chart.digest", "allowVersionRange"),
        (chart(digest="sha256:abc"), "spec.chart.digest", "64"),
        (chart(version=">=6"), "spec.chart.version", "allowVersionRange"),
        (chart(version="6.14"), "spec.chart.version", "not an exact version"),
        (chart(allowVersionRange=True), "spec.chart.digest", "cannot pin a version range"),
        (chart(digest=None, version=">=6 <", allowVersionRange=True), "spec.chart.version", ""),
        (chart(repository="ftp://charts.example.com"), "spec.chart.repository", "http"),
        (chart(repository="https://u:p@charts.example.com"), "spec.chart.repository", "secretRef"),
        (chart(allowTag=True), "spec.chart.allowTag", "OCI"),
        (chart(insecure=True), "spec.chart.insecure", "OCI"),
        (chart(verify={"cosign": {}}), "spec.chart.verify", "OCI"),
        ({"chart": {"ref": f"oci://r.example/c/p@{DIGEST}", "version": "1.0.0"}},
         "spec.chart.version", "spec.chart.repository"),
        ({"chart": {"ref": f"oci://r.example/c/p@{DIGEST}", "passCredentials": True}},
         "spec.chart.passCredentials", "repository"),
    ],
)  # fmt: skip
def test_errors_name_the_field(spec: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(SpecError) as refused:
        parse(spec)
    assert refused.value.field == field
    assert words in refused.value.message


def test_the_credentials_are_never_echoed() -> None:
    with pytest.raises(SpecError) as refused:
        parse(chart(repository="https://user:hunter2@charts.example.com"))
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize("version", ["1.2.3", "v1.2.3", "1.2.3-rc.1", "1.2.3+build.7", "0.0.0"])
def test_exact_versions_match_the_crd_pattern(version: str) -> None:
    assert re.fullmatch(model.EXACT_VERSION_PATTERN, version)
    assert parse(chart(version=version)).chart.http is not None


@pytest.mark.parametrize("version", ["1.2", "^1.2.3", "1.2.x", ">=1", "01.2.3", "1.2.3 || 2"])
def test_ranges_do_not_match_the_exact_version_pattern(version: str) -> None:
    assert not re.fullmatch(model.EXACT_VERSION_PATTERN, version)
