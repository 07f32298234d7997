"""index.yaml as rudder keeps it, and chart URLs resolved as Helm resolves them (pure)."""

from __future__ import annotations

import pytest
import yaml

from rudder.chart.repo_index import (
    InvalidIndex,
    NoSuchChart,
    NoSuchVersion,
    display_url,
    parse_index,
    resolve_url,
    same_origin,
)

HEX = "ab" * 32


def index(*entries: dict[str, object]) -> bytes:
    charts: dict[str, list[dict[str, object]]] = {}
    for entry in entries:
        charts.setdefault(str(entry["name"]), []).append(entry)
    return yaml.safe_dump({"apiVersion": "v1", "entries": charts}).encode()


def entry(version: str, **extra: object) -> dict[str, object]:
    return {"name": "web", "version": version, "urls": [f"web-{version}.tgz"], **extra}


def test_only_what_is_needed_is_kept_newest_first() -> None:
    parsed = parse_index(
        index(
            entry("1.0.0", digest=HEX, description="long text", maintainers=[{"name": "x"}]),
            entry("1.10.0", digest=f"sha256:{HEX.upper()}"),
            entry("1.2.0"),
            entry("not-semver"),
            {"name": "web", "version": "9.9.9"},  # no urls: nothing to download
        )
    )
    versions = [e.version for e in parsed.charts["web"]]
    assert versions == ["1.10.0", "1.2.0", "1.0.0", "not-semver"]
    by_version = {e.version: e for e in parsed.charts["web"]}
    assert by_version["1.0.0"].digest == f"sha256:{HEX}"  # Helm writes the bare hex
    assert by_version["1.10.0"].digest == f"sha256:{HEX}"
    assert by_version["1.2.0"].digest is None


def test_find_exact_range_and_missing() -> None:
    parsed = parse_index(index(entry("1.0.0"), entry("1.1.0"), entry("2.0.0-rc.1")))
    assert parsed.find("web", "1.0.0", allow_range=False).version == "1.0.0"
    assert parsed.find("web", "v1.0.0", allow_range=False).version == "1.0.0"
    assert parsed.find("web", "^1", allow_range=True).version == "1.1.0"
    assert parsed.find("web", "2.0.0-rc.1", allow_range=False).version == "2.0.0-rc.1"
    with pytest.raises(NoSuchVersion):
        parsed.find("web", "1.2.0", allow_range=False)
    with pytest.raises(NoSuchVersion):
        parsed.find("web", "^2", allow_range=True)
    with pytest.raises(NoSuchChart):
        parsed.find("api", "1.0.0", allow_range=False)


@pytest.mark.parametrize(
    "data",
    [
        b"{",
        b"- a list",
        b"entries: {}",
        yaml.safe_dump({"apiVersion": "v1", "entries": []}).encode(),
    ],
)
def test_what_is_not_an_index_is_refused(data: bytes) -> None:
    with pytest.raises(InvalidIndex):
        parse_index(data)


@pytest.mark.parametrize(
    ("repository", "reference", "resolved"),
    [
        # Helm's own cases (repo.ResolveReferenceURL)
        ("http://localhost:8123/charts/", "nginx-0.2.0.tgz",
         "http://localhost:8123/charts/nginx-0.2.0.tgz"),
        ("http://localhost:8123/charts", "nginx-0.2.0.tgz",
         "http://localhost:8123/charts/nginx-0.2.0.tgz"),
        ("http://localhost:8123/charts?with=queryparameter", "nginx-0.2.0.tgz",
         "http://localhost:8123/charts/nginx-0.2.0.tgz?with=queryparameter"),
        ("http://localhost:8123", "https://charts.example.com/nginx-0.2.0.tgz",
         "https://charts.example.com/nginx-0.2.0.tgz"),
        ("https://example.com/a/b", "../c/x.tgz", "https://example.com/a/c/x.tgz"),
        ("https://example.com/a/b", "/top/x.tgz", "https://example.com/top/x.tgz"),
        ("https://example.com/a", "index.yaml", "https://example.com/a/index.yaml"),
        ("https://example.com", "index.yaml", "https://example.com/index.yaml"),
    ],
)  # fmt: skip
def test_urls_resolve_as_helm_resolves_them(repository: str, reference: str, resolved: str) -> None:
    assert resolve_url(repository, reference) == resolved


def test_same_origin_is_scheme_host_and_port() -> None:
    assert same_origin("https://a.example/x", "https://A.example:443/y")
    assert not same_origin("https://a.example/x", "http://a.example/x")
    assert not same_origin("https://a.example/x", "https://b.example/x")
    assert not same_origin("http://127.0.0.1:8080/", "http://127.0.0.1:8081/")


def test_display_urls_carry_no_secrets() -> None:
    assert display_url("https://u:p@host.example:8443/c/x.tgz?sig=abc") == (
        "https://host.example:8443/c/x.tgz?…"
    )
