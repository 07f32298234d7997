"""rudder.observe.logs: JSON lines parse and carry the extras; text lines append them; values
and credentials passed as extras never appear."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from rudder.observe.logs import configure_logging, is_sensitive

SECRET = "hunter2-do-not-print"


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def capture(fmt: str, level: str = "info") -> io.StringIO:
    stream = io.StringIO()
    configure_logging(fmt, level, stream=stream)
    return stream


def lines(stream: io.StringIO) -> list[str]:
    return [line for line in stream.getvalue().splitlines() if line]


@pytest.mark.usefixtures("restore_root")
def test_json_lines_parse_and_carry_extras() -> None:
    stream = capture("json")
    log = logging.getLogger("rudder.reconcile.test")
    log.info(
        "upgraded %s to revision %d",
        "podinfo",
        3,
        extra={
            "release": "podinfo",
            "namespace": "apps",
            "revision": 3,
            "duration": 4.25,
            "result": "success",
        },
    )
    log.debug("not shown at info")
    (line,) = lines(stream)
    record = json.loads(line)
    assert record["level"] == "info"
    assert record["logger"] == "rudder.reconcile.test"
    assert record["message"] == "upgraded podinfo to revision 3"
    assert record["time"].endswith("Z")
    assert len(record["time"]) == len("2025-01-01T12:00:00.000Z")
    assert {k: record[k] for k in ("release", "namespace", "revision", "duration", "result")} == {
        "release": "podinfo",
        "namespace": "apps",
        "revision": 3,
        "duration": 4.25,
        "result": "success",
    }


@pytest.mark.usefixtures("restore_root")
def test_json_exception_and_unserialisable_extra() -> None:
    stream = capture("json", "DEBUG")
    log = logging.getLogger("rudder.x")
    try:
        raise ValueError("bad <chart>")
    except ValueError:
        log.exception("render failed", extra={"path": object(), "message_id": "m1"})
    record = json.loads(lines(stream)[0])
    assert record["message"] == "render failed"
    assert "ValueError: bad <chart>" in record["error"]
    assert record["path"].startswith("<object object")
    assert record["message_id"] == "m1"


@pytest.mark.usefixtures("restore_root")
@pytest.mark.parametrize("fmt", ["json", "text"])
def test_values_and_secrets_in_extras_are_dropped(fmt: str) -> None:
    stream = capture(fmt)
    logging.getLogger("rudder.x").warning(
        "applied",
        extra={
            "release": "podinfo",
            "values": {"password": SECRET},
            "secretData": SECRET,
            "dockerconfig_secret": SECRET,
            "registryPassword": SECRET,
            "bearer_token": SECRET,
            "Authorization": SECRET,
            "details": {"chart": "web", "apiToken": SECRET, "nested": [{"values": SECRET}]},
        },
    )
    text = stream.getvalue()
    assert SECRET not in text
    assert "podinfo" in text
    if fmt == "json":
        record = json.loads(lines(stream)[0])
        assert record["details"] == {"chart": "web", "nested": [{}]}
        for key in ("values", "secretData", "registryPassword", "bearer_token", "Authorization"):
            assert key not in record


@pytest.mark.usefixtures("restore_root")
def test_text_format_appends_extras() -> None:
    stream = capture("text")
    logging.getLogger("rudder.y").info(
        "done", extra={"release": "podinfo", "revision": 2, "result": "requeue after"}
    )
    (line,) = lines(stream)
    assert " INFO rudder.y: done " in line
    assert line.endswith('release=podinfo revision=2 result="requeue after"')


@pytest.mark.usefixtures("restore_root")
def test_kopf_internals_are_left_out_and_reconfiguring_does_not_duplicate() -> None:
    configure_logging("text")
    stream = capture("json")
    logging.getLogger("kopf.objects").warning(
        "handler failed",
        extra={"settings": object(), "k8s_skip": True, "k8s_ref": {"name": "a", "kind": "X"}},
    )
    (line,) = lines(stream)
    record = json.loads(line)
    assert "settings" not in record
    assert "k8s_skip" not in record
    assert record["k8s_ref"] == {"name": "a", "kind": "X"}
    assert len(logging.getLogger().handlers) == 1


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="log format"):
        configure_logging("xml", "info")
    with pytest.raises(ValueError, match="log level"):
        configure_logging("json", "loud")


@pytest.mark.parametrize(
    ("key", "sensitive"),
    [
        ("values", True),
        ("Values", True),
        ("valuesDigest", False),
        ("release", False),
        ("clientSecret", True),
        ("PASSWORD", True),
        ("tokenRequest", True),
        ("credentials", True),
        ("revision", False),
    ],
)
def test_is_sensitive(key: str, sensitive: bool) -> None:
    assert is_sensitive(key) is sensitive
