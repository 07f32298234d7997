"""Charts from classic HTTP repositories through ChartSource, against a real HTTP server
(aiohttp, in this process): the index cache and its 304s, version ranges, digests, URL
resolution, credentials and the tenant access check.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from http_repo_fixture import RepoServer, chart_archive, index_yaml, sha256_hex
from rudder.chart import http_repo
from rudder.chart.errors import (
    CHART_NOT_FOUND,
    CHART_TOO_LARGE,
    DIGEST_MISMATCH,
    REGISTRY_AUTH_FAILED,
    REGISTRY_UNAVAILABLE,
    VERSION_NOT_FOUND,
    ChartError,
)
from rudder.chart.http_repo import HttpChart
from rudder.chart.http_transport import RepoCredentials
from rudder.chart.source import ChartRequest, ChartSource

MiB = 1024 * 1024
USER, PASSWORD = "reader", "s3cret-repo-password"


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("charts")
    return {
        version: chart_archive(root, "hello", version, greeting=f"v{version}")
        for version in ("1.0.0", "1.1.0", "2.0.0-rc.1", "2.0.0")
    }


def publish(server: RepoServer, archives: dict[str, bytes], *, digests: bool = True) -> None:
    entries = []
    for version, data in archives.items():
        server.put(f"charts/hello-{version}.tgz", data)
        entry: dict[str, object] = {
            "name": "hello",
            "version": version,
            "urls": [f"charts/hello-{version}.tgz"],
        }
        if digests:
            entry["digest"] = sha256_hex(data)
        entries.append(entry)
    server.put("index.yaml", index_yaml(entries))


Servers = Callable[..., Awaitable[RepoServer]]


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    """Start repositories (`await servers(basic=...)`); all are stopped afterwards."""
    started: list[RepoServer] = []

    async def start(**options: Any) -> RepoServer:
        server = await RepoServer(**options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


@pytest.fixture
async def repo(archives: dict[str, bytes], servers: Servers) -> RepoServer:
    server = await servers()
    publish(server, archives)
    return server


def source(directory: Path, **options: float) -> ChartSource:
    return ChartSource(
        directory,
        max_cache_bytes=100 * MiB,
        max_compressed=int(options.pop("compressed", 10 * MiB)),
        max_uncompressed=100 * MiB,
        index_ttl=options.pop("index_ttl", 0.0),
        **options,  # type: ignore[arg-type]
    )


def request(
    repository: str,
    version: str,
    digest: str | None = None,
    *,
    allow_range: bool = False,
    credentials: RepoCredentials | None = None,
    **changes: object,
) -> ChartRequest:
    chart = HttpChart(repository, "hello", version, digest, allow_range=allow_range)
    chart = dataclasses.replace(chart, **changes)  # type: ignore[arg-type]
    return ChartRequest(ref=chart.subject, http=chart, repo_credentials=credentials)


def digest(data: bytes) -> str:
    return f"sha256:{sha256_hex(data)}"


# --- pinned by digest -------------------------------------------------------------------------


async def test_a_pinned_chart_is_downloaded_once_then_served_from_the_cache(
    repo: RepoServer, archives: dict[str, bytes], tmp_path: Path
) -> None:
    wanted = digest(archives["1.1.0"])
    loaded = await source(tmp_path).get(request(repo.url, "1.1.0", wanted))
    assert loaded.digest == wanted
    assert (loaded.metadata.name, loaded.metadata.version) == ("hello", "1.1.0")
    assert loaded.archive == archives["1.1.0"]
    assert len(repo.requests_for("charts/hello-1.1.0.tgz")) == 1
    # A new process with the same cache directory: no request at all (like IfNotPresent).
    before = len(repo.seen)
    again = await source(tmp_path).get(request(repo.url, "1.1.0", wanted))
    assert again.digest == wanted
    assert len(repo.seen) == before


async def test_the_archive_shares_the_oci_charts_cache(
    repo: RepoServer, archives: dict[str, bytes], tmp_path: Path
) -> None:
    charts = source(tmp_path)
    wanted = digest(archives["1.0.0"])
    await charts.get(request(repo.url, "1.0.0", wanted))
    assert charts.cache.get(wanted) == archives["1.0.0"]


async def test_a_digest_the_index_contradicts_is_refused_before_downloading(
    repo: RepoServer, archives: dict[str, bytes], tmp_path: Path
) -> None:
    with pytest.raises(ChartError) as raised:
        await source(tmp_path).get(request(repo.url, "1.0.0", digest(archives["1.1.0"])))
    assert raised.value.reason == DIGEST_MISMATCH
    assert "index gives" in raised.value.message
    assert repo.requests_for("charts/hello-1.0.0.tgz") == []


async def test_an_archive_not_matching_the_spec_digest_is_refused_and_not_cached(
    archives: dict[str, bytes], tmp_path: Path, servers: Servers
) -> None:
    server = await servers()
    publish(server, archives, digests=False)
    # The repository swapped the archive under the same version.
    server.put("charts/hello-1.0.0.tgz", archives["2.0.0"])
    charts = source(tmp_path)
    with pytest.raises(ChartError) as raised:
        await charts.get(request(server.url, "1.0.0", digest(archives["1.0.0"])))
    assert raised.value.reason == DIGEST_MISMATCH
    assert charts.cache.total_bytes == 0  # refused bytes are not cached under any digest


async def test_an_archive_not_matching_the_index_digest_is_refused(
    archives: dict[str, bytes], tmp_path: Path, servers: Servers
) -> None:
    server = await servers()
    publish(server, archives)
    server.put("charts/hello-2.0.0.tgz", archives["1.0.0"])  # index still says 2.0.0's
    with pytest.raises(ChartError) as raised:
        await source(tmp_path).get(request(server.url, "^2", allow_range=True))
    assert raised.value.reason == DIGEST_MISMATCH
    assert f"expected {digest(archives['2.0.0'])}" in raised.value.message


# --- the index: conditional requests, parsed once ----------------------------------------------


async def test_the_index_is_revalidated_with_a_conditional_request_and_parsed_once(
    repo: RepoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parses = []
    real = http_repo.parse_index
    monkeypatch.setattr(http_repo, "parse_index", lambda data: parses.append(1) or real(data))
    charts = source(tmp_path)
    for _ in range(3):  # three HelmReleases, or three reconciles of one
        pinned = await charts.pin(request(repo.url, ">=1.0.0 <2.0.0", allow_range=True))
        assert pinned.http is not None
        assert pinned.http.version == "1.1.0"
    index_requests = repo.requests_for("index.yaml")
    assert [seen.status for seen in index_requests] == [200, 304, 304]
    assert index_requests[0].if_none_match is None
    assert index_requests[1].if_none_match is not None
    assert len(parses) == 1


async def test_within_the_ttl_the_index_is_not_asked_again(
    repo: RepoServer, tmp_path: Path
) -> None:
    charts = source(tmp_path, index_ttl=60.0)
    for _ in range(5):
        await charts.pin(request(repo.url, "^1", allow_range=True))
    assert len(repo.requests_for("index.yaml")) == 1


async def test_a_new_index_is_read_and_the_range_moves(
    repo: RepoServer, archives: dict[str, bytes], tmp_path: Path
) -> None:
    charts = source(tmp_path)
    first = await charts.pin(request(repo.url, "^1", allow_range=True))
    assert first.http is not None
    assert first.http.version == "1.1.0"
    newer = chart_archive(tmp_path / "newer", "hello", "1.2.0", greeting="newer")
    repo.put("charts/hello-1.2.0.tgz", newer)
    repo.put(
        "index.yaml",
        index_yaml(
            [{"name": "hello", "version": "1.2.0", "urls": ["charts/hello-1.2.0.tgz"]}]
            + [{"name": "hello", "version": v, "urls": [f"charts/hello-{v}.tgz"]} for v in archives]
        ),
    )
    second = await charts.pin(request(repo.url, "^1", allow_range=True))
    assert second.http is not None
    assert (second.http.version, second.http.digest) == ("1.2.0", digest(newer))
    assert second.http.url == f"{repo.url}/charts/hello-1.2.0.tgz"


async def test_an_index_over_the_limit_is_refused(repo: RepoServer, tmp_path: Path) -> None:
    charts = source(tmp_path, max_index_bytes=100)
    with pytest.raises(ChartError) as raised:
        await charts.pin(request(repo.url, "^1", allow_range=True))
    assert raised.value.reason == CHART_TOO_LARGE
    assert raised.value.retriable  # the repository may shrink it; the spec is fine
    assert "--max-index-size" in raised.value.message


async def test_an_index_that_is_not_one_is_a_repository_failure(
    repo: RepoServer, tmp_path: Path
) -> None:
    repo.put("index.yaml", b"<html>maintenance</html>")
    with pytest.raises(ChartError) as raised:
        await source(tmp_path).pin(request(repo.url, "^1", allow_range=True))
    assert raised.value.reason == REGISTRY_UNAVAILABLE
    assert raised.value.retriable


# --- version ranges ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wanted", "version"),
    [
        ("^1", "1.1.0"),
        ("~1.0", "1.0.0"),
        (">=1.0.0 <3.0.0", "2.0.0"),
        ("1.x", "1.1.0"),
        ("*", "2.0.0"),
        (">=2.0.0-rc.0 <2.0.0", "2.0.0-rc.1"),  # a prerelease only when the range names one
        ("<1.1.0 || >=2.0.0", "2.0.0"),
    ],
)
async def test_a_range_resolves_to_the_newest_match_and_its_digest(
    repo: RepoServer, archives: dict[str, bytes], tmp_path: Path, wanted: str, version: str
) -> None:
    charts = source(tmp_path)
    pinned = await charts.pin(request(repo.url, wanted, allow_range=True))
    assert pinned.http is not None
    assert pinned.http.version == version
    assert pinned.http.digest == digest(archives[version])
    assert pinned.digest == digest(archives[version])
    loaded = await charts.get(pinned)
    assert loaded.metadata.version == version


async def test_an_unsatisfiable_range_is_version_not_found(
    repo: RepoServer, tmp_path: Path
) -> None:
    with pytest.raises(ChartError) as raised:
        await source(tmp_path).pin(request(repo.url, "^3", allow_range=True))
    assert raised.value.reason == VERSION_NOT_FOUND
    assert raised.value.retriable  # a later index may have one


async def test_a_chart_the_index_lacks_is_chart_not_found(
    repo: RepoServer, archives: dict[str, bytes], tmp_path: Path
) -> None:
    wanted = request(repo.url, "1.0.0", digest(archives["1.0.0"]), name="absent")
    with pytest.raises(ChartError) as raised:
        await source(tmp_path).get(wanted)
    assert raised.value.reason == CHART_NOT_FOUND


async def test_a_range_over_an_index_without_digests_downloads_once_per_index(
    archives: dict[str, bytes], tmp_path: Path, servers: Servers
) -> None:
    server = await servers()
    publish(server, archives, digests=False)
    charts = source(tmp_path)
    for _ in range(3):
        pinned = await charts.pin(request(server.url, "^1", allow_range=True))
        assert pinned.digest == digest(archives["1.1.0"])
        await charts.get(pinned)
    assert len(server.requests_for("charts/hello-1.1.0.tgz")) == 1


# --- where the archive is, and who gets the credentials ------------------------------------------


async def test_absolute_chart_urls_get_credentials_only_with_pass_credentials(
    archives: dict[str, bytes], tmp_path: Path, servers: Servers
) -> None:
    index_host = await servers(basic=(USER, PASSWORD))
    chart_host = await servers()  # another port: another origin
    data = archives["1.0.0"]
    chart_host.put("dl/hello-1.0.0.tgz", data)
    index_host.put(
        "index.yaml",
        index_yaml(
            [
                {
                    "name": "hello",
                    "version": "1.0.0",
                    "digest": sha256_hex(data),
                    "urls": [f"{chart_host.url}/dl/hello-1.0.0.tgz"],
                }
            ]
        ),
    )
    credentials = RepoCredentials(username=USER, password=PASSWORD)
    wanted = request(index_host.url, "1.0.0", digest(data), credentials=credentials)
    loaded = await source(tmp_path / "a").get(wanted)
    assert loaded.digest == digest(data)
    assert index_host.requests_for("index.yaml")[0].authorization is not None
    assert chart_host.requests_for("dl/hello-1.0.0.tgz")[0].authorization is None

    passing = request(
        index_host.url, "1.0.0", digest(data), credentials=credentials, pass_credentials=True
    )
    await source(tmp_path / "b").get(passing)
    assert chart_host.requests_for("dl/hello-1.0.0.tgz")[1].authorization is not None


async def test_a_chart_host_that_wants_credentials_says_why_it_got_none(
    archives: dict[str, bytes], tmp_path: Path, servers: Servers
) -> None:
    index_host = await servers(basic=(USER, PASSWORD))
    chart_host = await servers(basic=(USER, PASSWORD))
    data = archives["1.0.0"]
    chart_host.put("hello.tgz", data)
    url = f"{chart_host.url}/hello.tgz"
    entry = {"name": "hello", "version": "1.0.0", "digest": sha256_hex(data), "urls": [url]}
    index_host.put("index.yaml", index_yaml([entry]))
    credentials = RepoCredentials(username=USER, password=PASSWORD)
    with pytest.raises(ChartError) as raised:
        await source(tmp_path).get(
            request(index_host.url, "1.0.0", digest(data), credentials=credentials)
        )
    assert raised.value.reason == REGISTRY_AUTH_FAILED
    assert "passCredentials" in raised.value.message


async def test_relative_urls_resolve_against_the_repository_path_and_keep_its_query(
    archives: dict[str, bytes], tmp_path: Path, servers: Servers
) -> None:
    server = await servers()
    data = archives["1.0.0"]
    server.put("stable/charts/hello.tgz", data)
    entry = {"name": "hello", "version": "1.0.0", "urls": ["charts/hello.tgz"]}
    server.put("stable/index.yaml", index_yaml([entry]))
    charts = source(tmp_path)
    pinned = await charts.pin(request(f"{server.url}/stable?sig=abc", "1.0.0", allow_range=True))
    assert pinned.http is not None
    assert pinned.http.url == f"{server.url}/stable/charts/hello.tgz?sig=abc"
    assert pinned.status_fields("") == {"repository": f"{server.url}/stable?…"}
    # An exact version pinned by digest: the URL is known once the index was asked.
    exact = request(f"{server.url}/stable?sig=abc", "1.0.0", pinned.digest)
    assert (await charts.get(exact)).url == f"{server.url}/stable/charts/hello.tgz?sig=abc"


# --- authentication -----------------------------------------------------------------------------


async def test_basic_and_bearer_credentials_are_sent_and_refusals_named(
    archives: dict[str, bytes], tmp_path: Path, servers: Servers
) -> None:
    server = await servers(basic=(USER, PASSWORD), token="t0ken-value")
    publish(server, archives)
    wanted = digest(archives["1.0.0"])
    for credentials in (
        RepoCredentials(username=USER, password=PASSWORD),
        RepoCredentials(token="t0ken-value"),
    ):
        loaded = await source(tmp_path / credentials.username).get(
            request(server.url, "1.0.0", wanted, credentials=credentials)
        )
        assert loaded.digest == wanted
    for credentials, why in (
        (None, "requires credentials (set spec.chart.secretRef)"),
        (RepoCredentials(username=USER, password="wrong"), "refused the credentials"),
    ):
        with pytest.raises(ChartError) as raised:
            await source(tmp_path / "x").get(
                request(server.url, "1.0.0", wanted, credentials=credentials)
            )
        assert raised.value.reason == REGISTRY_AUTH_FAILED
        assert why in raised.value.message
        assert PASSWORD not in raised.value.message
        assert "wrong" not in raised.value.message


async def test_credentials_stay_out_of_reprs_and_messages(tmp_path: Path) -> None:
    credentials = RepoCredentials(username=USER, password=PASSWORD, token="tok")
    wanted = request("http://127.0.0.1:9", "1.0.0", "sha256:" + "0" * 64, credentials=credentials)
    assert PASSWORD not in repr(wanted)
    assert "tok" not in repr(credentials)
    with pytest.raises(ChartError) as raised:
        await source(tmp_path).get(wanted)
    assert raised.value.reason == REGISTRY_UNAVAILABLE
    assert PASSWORD not in str(raised.value)


async def test_an_archive_over_the_size_limit_is_chart_too_large(
    repo: RepoServer, archives: dict[str, bytes], tmp_path: Path
) -> None:
    with pytest.raises(ChartError) as raised:
        await source(tmp_path, compressed=100).get(
            request(repo.url, "1.0.0", digest(archives["1.0.0"]))
        )
    assert raised.value.reason == CHART_TOO_LARGE
    assert not raised.value.retriable


# --- tenant mode ----------------------------------------------------------------------------------


async def test_a_tenant_gets_a_cached_archive_only_from_a_repository_that_served_it(
    archives: dict[str, bytes], tmp_path: Path, servers: Servers
) -> None:
    private = await servers(basic=(USER, PASSWORD))
    decoy = await servers()  # another tenant's repository, claiming the digest
    publish(private, archives)
    wanted = digest(archives["1.0.0"])
    decoy.put("hello.tgz", archives["2.0.0"])
    claim = {"name": "hello", "version": "1.0.0", "digest": wanted[7:], "urls": ["hello.tgz"]}
    decoy.put("index.yaml", index_yaml([claim]))
    charts = source(tmp_path)
    owner = dataclasses.replace(
        request(
            private.url,
            "1.0.0",
            wanted,
            credentials=RepoCredentials(username=USER, password=PASSWORD),
        ),
        identity="system:serviceaccount:a:app",
        check_access=True,
    )
    assert (await charts.get(owner)).digest == wanted
    downloads = len(private.requests_for("charts/hello-1.0.0.tgz"))
    assert (await charts.get(owner)).digest == wanted  # proven: no second download
    assert len(private.requests_for("charts/hello-1.0.0.tgz")) == downloads

    intruder = dataclasses.replace(
        request(decoy.url, "1.0.0", wanted),
        identity="system:serviceaccount:b:app",
        check_access=True,
    )
    with pytest.raises(ChartError) as raised:
        await charts.get(intruder)
    assert raised.value.reason == DIGEST_MISMATCH

    no_access = dataclasses.replace(owner, repo_credentials=None)
    with pytest.raises(ChartError) as refused:
        await charts.get(no_access)
    assert refused.value.reason == REGISTRY_AUTH_FAILED
