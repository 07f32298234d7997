"""The release codec against Helm's own output and its own round trip."""

from __future__ import annotations

import base64
import copy
import gzip
import json
import traceback
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rudder.release.codec import (
    RELEASE_SECRET_TYPE,
    Chart,
    ChartFile,
    ChartMetadata,
    GoTime,
    Hook,
    HookExecution,
    Info,
    Release,
    ReleaseFormatError,
    decode_release,
    encode_release,
    go_json,
    release_from_json,
    release_from_secret,
    release_json,
    release_secret,
    release_to_json,
    secret_name,
)

FIXTURES = Path(__file__).parent / "fixtures" / "releases"
CLI_DRY_RUN = FIXTURES / "showcase-dry-run.helm4.json"


def cli_release_json() -> bytes:
    raw = CLI_DRY_RUN.read_bytes()
    assert raw.endswith(b"\n")  # Go's json.Encoder adds exactly one newline
    return raw[:-1]


# --- what the Helm CLI wrote ----------------------------------------------------------------


def test_release_written_by_helm_re_encodes_byte_for_byte() -> None:
    raw = cli_release_json()
    assert release_json(release_from_json(json.loads(raw))) == raw


def test_release_written_by_helm_decodes_to_its_fields() -> None:
    release = release_from_json(json.loads(cli_release_json()))
    assert (release.name, release.namespace, release.version) == ("demo", "apps", 1)
    assert release.status == "pending-install"
    assert release.apply_method == "ssa"
    assert release.info is not None
    assert release.info.notes.startswith("demo is installed in apps.")
    assert release.info.first_deployed == release.info.last_deployed
    assert release.chart is not None
    assert release.chart.metadata is not None
    metadata = release.chart.metadata
    assert (metadata.name, metadata.version, metadata.app_version) == ("showcase", "1.2.3", "4.5")
    assert metadata.annotations == {"example.com/a": "first", "example.com/z": "last"}
    assert release.chart.files is None
    assert release.chart.schema is None
    templates = {t.name: t.data for t in release.chart.templates or []}
    assert templates["templates/NOTES.txt"].startswith(b"{{ .Release.Name }} is installed")
    assert release.config["config"]["z"] == [1, 2.5, None, 1e-7, 1e21, 123456789.125]
    assert release.config["extra"] == {"name": None}  # Helm keeps the user's null
    assert [(h.name, h.weight, h.events) for h in release.hooks] == [
        ("demo-pre-install", -5, ["pre-install", "pre-upgrade"]),
        ("demo-post-install", 0, ["post-install"]),
    ]
    assert release.hooks[0].delete_policies == ["before-hook-creation"]
    assert release.hooks[0].last_run == HookExecution()


# --- Go's JSON ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "go_text"),
    [
        (0.25, "0.25"),
        (100.0, "100"),
        (-0.0, "-0"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (1.5e300, "1.5e+300"),
        (0.000001, "0.000001"),
        (1e-7, "1e-7"),
        (1.5e-9, "1.5e-9"),
        (2e-10, "2e-10"),
        (123456789.125, "123456789.125"),
        (1e16, "10000000000000000"),
    ],
)
def test_floats_are_written_as_go_writes_them(value: float, go_text: str) -> None:
    assert go_json(value) == go_text.encode()


def test_strings_are_escaped_as_go_escapes_them() -> None:
    text = '<a href="x">&</a>\u2028\u2029\x01\x7f\b\f\n\r\té😀\\'
    expected = (
        r'"\u003ca href=\"x\"\u003e\u0026\u003c/a\u003e\u2028\u2029\u0001'
        + "\x7f"
        + r"\b\f\n\r\t"
        + "é😀"
        + r'\\"'
    )
    assert go_json(text) == expected.encode()


def test_map_fields_are_written_with_sorted_keys_and_struct_fields_in_go_order() -> None:
    release = Release(name="r", version=2, namespace="ns", config={"b": {"y": 1, "x": 2}, "a": 0})
    assert release_json(release) == (
        b'{"name":"r","config":{"a":0,"b":{"x":2,"y":1}},"version":2,"namespace":"ns"}'
    )


def test_empty_fields_are_left_out_as_helm_does() -> None:
    hook = Hook(name="h")
    release = Release(name="r", version=1, namespace="", info=Info(), hooks=[hook])
    # Hook.last_run has no omitempty, and its phase is always written.
    assert release_to_json(release) == {
        "name": "r",
        "info": {},
        "hooks": [{"name": "h", "last_run": {"phase": ""}}],
        "version": 1,
    }


def test_chart_fields_without_omitempty_are_written_as_null_or_go_zero_time() -> None:
    assert release_to_json(Release(name="r", version=1, namespace="n", chart=Chart()))["chart"] == {
        "metadata": None,
        "lock": None,
        "templates": None,
        "values": None,
        "schema": None,
        "schemamodtime": "0001-01-01T00:00:00Z",
        "files": None,
    }


# --- time -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-23T20:09:11.457949674Z",
        "2024-02-29T23:59:59Z",
        "2024-01-02T03:04:05.1+02:00",
        "2024-01-02T03:04:05.000000001-05:30",
    ],
)
def test_go_times_keep_their_nanoseconds_and_offset(text: str) -> None:
    assert GoTime.parse(text).format() == text


def test_helm3_empty_times_read_as_no_time_and_are_then_left_out() -> None:
    # Helm 3 writes a zero time as "" (and Helm 4's chart a zero time as year 1).
    document = {
        "name": "r",
        "info": {"first_deployed": "2024-01-01T00:00:00Z", "deleted": "", "status": "deployed"},
        "hooks": [{"name": "h", "last_run": {"started_at": "", "completed_at": "", "phase": ""}}],
        "version": 1,
    }
    release = release_from_json(document)
    assert release.info is not None
    assert release.info.deleted is None
    assert release.hooks[0].last_run == HookExecution()
    assert release_to_json(release)["info"] == {
        "first_deployed": "2024-01-01T00:00:00Z",
        "status": "deployed",
    }


# --- round trips ----------------------------------------------------------------------------

_OFFSETS = [UTC, timezone(timedelta(hours=2)), timezone(-timedelta(hours=5, minutes=30))]
go_times = st.builds(
    GoTime,
    st.datetimes(
        min_value=datetime(2, 1, 1),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from(_OFFSETS),
    ),
    st.integers(0, 999),
)
# Go holds every JSON number as a float64; Python reads an integral literal back as an
# exact int, which equals the float it was written from only below 2**53 (and from 1e21 on,
# where Go writes an exponent). The JSON text round-trips for every float (tested below).
exact_floats = st.floats(allow_nan=False, allow_infinity=False).filter(
    lambda f: abs(f) < 2**53 or abs(f) >= 1e21
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64) | exact_floats | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
json_objects = st.dictionaries(st.text(max_size=5), json_values, max_size=3)
extras = st.dictionaries(st.text(max_size=4).map(lambda k: "x-" + k), json_values, max_size=2)
texts = st.text(max_size=12)
text_lists = st.lists(texts, max_size=3)
chart_files = st.builds(
    ChartFile,
    name=texts,
    data=st.binary(max_size=20),
    mod_time=st.none() | go_times,
    extra=extras,
)
charts = st.builds(
    Chart,
    metadata=st.none()
    | st.builds(
        ChartMetadata,
        name=texts,
        version=texts,
        app_version=texts,
        api_version=texts,
        keywords=text_lists,
        maintainers=st.lists(json_objects, max_size=2),
        deprecated=st.booleans(),
        annotations=st.dictionaries(texts, texts, max_size=3),
        dependencies=st.lists(json_objects, max_size=2),
        extra=extras,
    ),
    lock=st.none() | json_objects,
    templates=st.none() | st.lists(chart_files, max_size=3),
    values=st.none() | json_objects,
    schema=st.none() | st.binary(max_size=20),
    schema_mod_time=st.none() | go_times,
    files=st.none() | st.lists(chart_files, max_size=2),
    mod_time=st.none() | go_times,
    extra=extras,
)
hooks = st.builds(
    Hook,
    name=texts,
    kind=texts,
    path=texts,
    manifest=texts,
    events=text_lists,
    last_run=st.builds(
        HookExecution,
        started_at=st.none() | go_times,
        completed_at=st.none() | go_times,
        phase=texts,
        extra=extras,
    ),
    weight=st.integers(-(2**31), 2**31),
    delete_policies=text_lists,
    output_log_policies=text_lists,
    extra=extras,
)
releases = st.builds(
    Release,
    name=texts,
    version=st.integers(0, 10**6),
    namespace=texts,
    info=st.none()
    | st.builds(
        Info,
        first_deployed=st.none() | go_times,
        last_deployed=st.none() | go_times,
        deleted=st.none() | go_times,
        description=texts,
        status=texts,
        notes=texts,
        extra=extras,
    ),
    chart=st.none() | charts,
    config=json_objects,
    manifest=texts,
    hooks=st.lists(hooks, max_size=2),
    apply_method=st.sampled_from(["", "ssa", "csa"]),
    extra=extras,
)


@settings(max_examples=150, deadline=None)
@given(releases)
def test_encode_then_decode_gives_the_release_back(release: Release) -> None:
    assert decode_release(encode_release(release)) == release


@settings(max_examples=100, deadline=None)
@given(json_values)
def test_go_json_is_json_of_the_same_value(value: Any) -> None:
    assert json.loads(go_json(value)) == value


@settings(max_examples=100, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_every_float_is_written_so_that_it_reads_back_as_the_same_number(value: float) -> None:
    text = go_json(value)
    assert float(json.loads(text)) == value
    if value != 0:  # Python reads "-0" as the int 0, which has no sign to write back
        assert go_json(json.loads(text)) == text


def test_encoding_is_base64_of_gzip_of_the_json() -> None:
    release = Release(name="r", version=1, namespace="n", info=Info(status="deployed"))
    raw = base64.b64decode(encode_release(release))
    assert raw[:3] == b"\x1f\x8b\x08"
    assert gzip.decompress(raw) == release_json(release)
    # Deterministic: the same release always encodes to the same text.
    assert encode_release(release) == encode_release(release)


def test_uncompressed_json_is_accepted_like_helm_accepts_it() -> None:
    plain = base64.b64encode(cli_release_json()).decode()
    assert decode_release(plain) == release_from_json(json.loads(cli_release_json()))


def test_keys_unknown_to_this_helm_survive_a_rewrite() -> None:
    document = json.loads(cli_release_json())
    document["future_field"] = {"k": [1, 2]}
    document["info"]["resources"] = {"v1/Pod": []}
    document["chart"]["metadata"]["future"] = "x"
    document["hooks"][0]["last_run"]["exit_code"] = 3
    again = json.loads(
        release_json(decode_release(base64.b64encode(json.dumps(document).encode()).decode()))
    )
    assert again == document


# --- the Secret -----------------------------------------------------------------------------


def _release(status: str = "deployed") -> Release:
    return Release(
        name="web",
        version=3,
        namespace="apps",
        info=Info(status=status, description="Upgrade complete"),
        config={"password": "hunter2-SECRET"},
        labels={"team": "a"},
    )


def test_release_secret_is_what_helms_driver_writes() -> None:
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    secret = release_secret(
        _release(), extra_labels={"rudder.dev/owner": "x"}, now=now, namespace="store"
    )
    assert secret["type"] == RELEASE_SECRET_TYPE == "helm.sh/release.v1"
    assert secret["metadata"]["name"] == secret_name("web", 3) == "sh.helm.release.v1.web.v3"
    assert secret["metadata"]["namespace"] == "store"
    assert secret["metadata"]["labels"] == {
        "team": "a",
        "rudder.dev/owner": "x",
        "createdAt": str(int(now.timestamp())),
        "name": "web",
        "owner": "helm",
        "status": "deployed",
        "version": "3",
    }
    # Double base64 on the wire: the API's over Helm's.
    inner = base64.b64decode(secret["data"]["release"]).decode()
    # Labels live on the Secret, not in the JSON.
    assert decode_release(inner) == replace(_release(), labels={})


def test_an_update_is_stamped_modified_at_instead_of_created_at() -> None:
    now = datetime(2025, 1, 2, tzinfo=UTC)
    labels = release_secret(_release(), update=True, now=now)["metadata"]["labels"]
    assert labels["modifiedAt"] == str(int(now.timestamp()))
    assert "createdAt" not in labels
    assert labels["status"] == "deployed"


@pytest.mark.parametrize("label", ["owner", "status", "createdAt", "modifiedAt"])
def test_helms_own_labels_cannot_be_set_as_extra_labels(label: str) -> None:
    with pytest.raises(ValueError, match=label):
        release_secret(_release(), extra_labels={label: "x"})


def test_release_from_secret_keeps_custom_labels_only() -> None:
    secret = release_secret(_release(), extra_labels={"rudder.dev/owner": "x"}, update=True)
    release = release_from_secret(secret)
    assert release.labels == {"team": "a", "rudder.dev/owner": "x"}
    assert release.config == {"password": "hunter2-SECRET"}
    assert release.status == "deployed"


# --- errors never show values ---------------------------------------------------------------


def _encoded(document: bytes) -> str:
    return base64.b64encode(gzip.compress(document)).decode()


@pytest.mark.parametrize(
    "document",
    [
        b'{"name":"r","config":{"password":"hunter2-SECRET"',
        b'{"name":"r","config":{"password":"hunter2-SECRET"},"version":"hunter2-SECRET"}',
        b'{"name":"r","config":"hunter2-SECRET"}',
        b'{"name":"r","info":{"last_deployed":"hunter2-SECRET"}}',
        b'{"name":"r","chart":{"schema":"hunter2-SECRET!"}}',
        b"\xff hunter2-SECRET",
    ],
)
def test_errors_name_the_field_but_never_show_a_value(document: bytes) -> None:
    with pytest.raises(ReleaseFormatError) as caught:
        decode_release(_encoded(document))
    shown = "".join(traceback.format_exception(caught.value))
    assert "hunter2" not in shown


def test_data_that_is_not_base64_or_gzip_is_a_format_error() -> None:
    with pytest.raises(ReleaseFormatError, match="base64"):
        decode_release("not base64!")
    truncated = base64.b64encode(gzip.compress(b'{"name":"r"}')[:12]).decode()
    with pytest.raises(ReleaseFormatError, match="gzip"):
        decode_release(truncated)


# --- records the CLIs wrote on a cluster ----------------------------------------------------


def test_an_installed_helm4_record_re_encodes_byte_for_byte() -> None:
    raw = (FIXTURES / "showcase-install.helm4.json").read_bytes()
    release = release_from_json(json.loads(raw))
    assert release_json(release) == raw
    assert release.status == "deployed"
    assert [h.last_run.phase for h in release.hooks] == ["Succeeded", "Succeeded"]
    assert all(h.last_run.started_at and h.last_run.completed_at for h in release.hooks)
    # Helm records the default delete policy on a hook it ran.
    assert release.hooks[1].delete_policies == ["before-hook-creation"]


def test_a_helm3_record_decodes_and_is_rewritten_in_helm4_form() -> None:
    raw = (FIXTURES / "showcase-install.helm3.json").read_bytes()
    document = json.loads(raw)
    release = release_from_json(document)
    assert (release.name, release.version, release.status) == ("demo", 1, "deployed")
    assert release.info is not None
    assert release.info.deleted is None  # Helm 3 wrote ""
    assert release.info.first_deployed == GoTime.parse(document["info"]["first_deployed"])
    assert release.apply_method == ""
    # What Helm 4 writes for the same record: no empty times, its chart time fields.
    expected = copy.deepcopy(document)
    del expected["info"]["deleted"]
    expected["chart"] = {
        **{k: v for k, v in document["chart"].items() if k != "files"},
        "schemamodtime": "0001-01-01T00:00:00Z",
        "files": document["chart"]["files"],
    }
    assert json.loads(release_json(release)) == expected
    assert list(json.loads(release_json(release))["chart"]) == list(expected["chart"])
