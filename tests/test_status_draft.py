"""The status a reconcile writes: kstatus conditions, and one merge patch or none.

What a user sees is `status` on the HelmRelease after the patch; what the API server sees
is the number of writes. So the tests apply each patch the way the API server applies a
JSON merge patch (RFC 7386) and look at the result, and check that a reconcile that finds
everything as it was writes nothing.
"""

from __future__ import annotations

import copy
import datetime
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rudder.model import MAX_CONDITION_MESSAGE
from rudder.reconcile import status as status_module
from rudder.reconcile.status import StatusDraft

T0 = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=7, seconds=30)
T0_TEXT = "2026-03-01T12:00:00Z"
T1_TEXT = "2026-03-01T12:07:30Z"

JSON = dict[str, Any]
Step = Callable[[StatusDraft], None]


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies `application/merge-patch+json`."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def draft_at(
    monkeypatch: pytest.MonkeyPatch, moment: datetime.datetime, current: JSON | None, gen: int
) -> StatusDraft:
    monkeypatch.setattr(status_module, "now", lambda: moment)
    return StatusDraft(current, gen)


def written(current: JSON | None, draft: StatusDraft) -> JSON:
    """The status stored after the draft's write (none if it has no patch), read back as JSON."""
    patch = draft.patch()
    stored = (current or {}) if patch is None else apply_merge_patch(current or {}, patch)
    result: JSON = json.loads(json.dumps(stored))
    return result


def conditions(status: JSON) -> dict[str, JSON]:
    entries = status.get("conditions") or []
    assert len({entry["type"] for entry in entries}) == len(entries), "a type listed twice"
    return {entry["type"]: entry for entry in entries}


def status_of(status: JSON) -> dict[str, str]:
    return {type_: entry["status"] for type_, entry in conditions(status).items()}


STALLED_FAILURE: JSON = {
    "observedGeneration": 1,
    "conditions": [
        {
            "type": "Ready",
            "status": "False",
            "reason": "RenderFailed",
            "message": "boom",
            "observedGeneration": 1,
            "lastTransitionTime": T0_TEXT,
        },
        {
            "type": "Stalled",
            "status": "True",
            "reason": "RenderFailed",
            "message": "boom",
            "observedGeneration": 1,
            "lastTransitionTime": T0_TEXT,
        },
    ],
}

IN_PROGRESS: JSON = {
    "observedGeneration": 1,
    "conditions": [
        {
            "type": "Reconciling",
            "status": "True",
            "reason": "Progressing",
            "message": "Running install",
            "observedGeneration": 1,
            "lastTransitionTime": T0_TEXT,
        },
        {
            "type": "Ready",
            "status": "Unknown",
            "reason": "Progressing",
            "message": "Running install",
            "observedGeneration": 1,
            "lastTransitionTime": T0_TEXT,
        },
    ],
}


# --- kstatus conventions --------------------------------------------------------------------


def test_progressing_is_reconciling_true_and_ready_unknown_and_drops_stalled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    draft = draft_at(monkeypatch, T1, STALLED_FAILURE, 2)
    draft.progressing("Running upgrade of web")
    after = written(STALLED_FAILURE, draft)
    assert status_of(after) == {"Ready": "Unknown", "Reconciling": "True"}
    found = conditions(after)
    assert found["Reconciling"]["reason"] == "Progressing"
    assert found["Reconciling"]["message"] == "Running upgrade of web"
    assert found["Ready"]["reason"] == "Progressing"


def test_ready_drops_reconciling_and_stalled(monkeypatch: pytest.MonkeyPatch) -> None:
    for current in (STALLED_FAILURE, IN_PROGRESS):
        draft = draft_at(monkeypatch, T1, current, 1)
        draft.ready("UpgradeSucceeded", "Release web revision 2 is ready")
        after = written(current, draft)
        assert status_of(after) == {"Ready": "True"}
        ready = conditions(after)["Ready"]
        assert (ready["reason"], ready["message"]) == (
            "UpgradeSucceeded",
            "Release web revision 2 is ready",
        )


def test_a_failure_retrying_cannot_fix_is_stalled_and_not_reconciling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    draft = draft_at(monkeypatch, T1, IN_PROGRESS, 1)
    draft.failed("RenderFailed", "template: web/templates/x.yaml:3: bad", stalled=True)
    after = written(IN_PROGRESS, draft)
    assert status_of(after) == {"Ready": "False", "Stalled": "True"}
    found = conditions(after)
    assert found["Ready"]["reason"] == found["Stalled"]["reason"] == "RenderFailed"
    assert found["Stalled"]["message"] == "template: web/templates/x.yaml:3: bad"


def test_a_failure_that_will_be_retried_is_reconciling_and_not_stalled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    draft = draft_at(monkeypatch, T1, STALLED_FAILURE, 1)
    draft.failed("RegistryUnavailable", "503 from registry", stalled=False)
    after = written(STALLED_FAILURE, draft)
    assert status_of(after) == {"Ready": "False", "Reconciling": "True"}
    reconciling = conditions(after)["Reconciling"]
    assert reconciling["reason"] == "RetryScheduled"
    assert reconciling["message"] == "RegistryUnavailable: 503 from registry"
    assert conditions(after)["Ready"]["reason"] == "RegistryUnavailable"


TRANSITIONS: list[tuple[str, Step]] = [
    ("progressing", lambda d: d.progressing("working")),
    ("ready", lambda d: d.ready("InstallSucceeded", "ready")),
    ("stalled", lambda d: d.failed("InvalidSpec", "bad spec", stalled=True)),
    ("retrying", lambda d: d.failed("KubernetesAPIError", "503", stalled=False)),
]


@settings(max_examples=150, deadline=None)
@given(
    start=st.sampled_from([{}, STALLED_FAILURE, IN_PROGRESS]),
    steps=st.lists(st.sampled_from(TRANSITIONS), min_size=1, max_size=6),
    generation=st.integers(min_value=1, max_value=50),
)
def test_any_sequence_of_transitions_leaves_a_kstatus_conformant_status(
    start: JSON, steps: list[tuple[str, Step]], generation: int
) -> None:
    draft = StatusDraft(start, generation)
    for _, step in steps:
        step(draft)
    after = written(start, draft)
    found = status_of(after)  # also: no type twice
    assert "Ready" in found
    assert not ("Reconciling" in found and "Stalled" in found)
    # Reconciling and Stalled are abnormal-true conditions: present only while True.
    assert found.get("Reconciling", "True") == "True"
    assert found.get("Stalled", "True") == "True"
    assert after["observedGeneration"] == generation
    assert {c["observedGeneration"] for c in conditions(after).values()} == {generation}
    # The last transition decides what Ready says.
    expected_ready = {"progressing": "Unknown", "ready": "True", "stalled": "False"}
    assert found["Ready"] == expected_ready.get(steps[-1][0], "False")


def test_a_new_generation_is_written_even_when_nothing_else_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = draft_at(monkeypatch, T0, {}, 1)
    first.ready("InstallSucceeded", "ready")
    stored = written({}, first)

    second = draft_at(monkeypatch, T1, stored, 2)
    second.ready("InstallSucceeded", "ready")
    after = written(stored, second)
    assert second.patch() is not None
    assert after["observedGeneration"] == 2
    assert conditions(after)["Ready"]["observedGeneration"] == 2
    assert conditions(after)["Ready"]["lastTransitionTime"] == T0_TEXT


# --- an idle reconcile writes nothing -------------------------------------------------------


@pytest.mark.parametrize(("name", "step"), TRANSITIONS, ids=[name for name, _ in TRANSITIONS])
def test_repeating_the_same_outcome_later_writes_nothing(
    monkeypatch: pytest.MonkeyPatch, name: str, step: Step
) -> None:
    def reconcile(draft: StatusDraft) -> None:
        draft.set("lastAttempted", {"generation": 3, "chartDigest": "sha256:aa"})
        draft.set("history", [{"revision": 1, "status": "deployed"}])
        draft.set("failures", None)
        step(draft)

    first = draft_at(monkeypatch, T0, {"unrelated": "kept"}, 3)
    reconcile(first)
    assert first.patch() is not None
    stored = written({"unrelated": "kept"}, first)

    again = draft_at(monkeypatch, T1, stored, 3)
    reconcile(again)
    assert again.patch() is None
    assert written(stored, again) == stored


def test_an_over_long_message_repeated_writes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    message = "x" * (MAX_CONDITION_MESSAGE + 100)
    first = draft_at(monkeypatch, T0, {}, 1)
    first.failed("RenderFailed", message, stalled=True)
    stored = written({}, first)
    assert len(conditions(stored)["Stalled"]["message"]) == MAX_CONDITION_MESSAGE

    again = draft_at(monkeypatch, T1, stored, 1)
    again.failed("RenderFailed", message, stalled=True)
    assert again.patch() is None


def test_a_draft_that_changes_nothing_has_no_patch(monkeypatch: pytest.MonkeyPatch) -> None:
    draft = draft_at(monkeypatch, T1, STALLED_FAILURE, 1)
    assert draft.patch() is None
    draft.set("failures", None)  # removing what is not there
    draft.drop("Reconciling")
    assert draft.patch() is None


def test_a_patch_is_sent_when_only_a_field_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    draft = draft_at(monkeypatch, T1, STALLED_FAILURE, 1)
    draft.set("lastHandledRequestedAt", "2026-03-01T12:05:00Z")
    after = written(STALLED_FAILURE, draft)
    assert after == {**STALLED_FAILURE, "lastHandledRequestedAt": "2026-03-01T12:05:00Z"}


# --- removal --------------------------------------------------------------------------------


def test_set_none_removes_a_field_with_a_merge_patch_null(monkeypatch: pytest.MonkeyPatch) -> None:
    current = {**STALLED_FAILURE, "failures": 3, "drift": [{"kind": "ConfigMap"}], "x": "y"}
    draft = draft_at(monkeypatch, T1, current, 1)
    draft.set("failures", None)
    draft.set("drift", None)
    patch = draft.patch()
    assert patch is not None
    assert patch["failures"] is None
    assert patch["drift"] is None
    after = apply_merge_patch(current, patch)
    assert "failures" not in after
    assert "drift" not in after
    assert after["x"] == "y"  # fields the draft did not touch stay


def test_a_dropped_condition_is_gone_after_the_patch(monkeypatch: pytest.MonkeyPatch) -> None:
    # Conditions are a list: the patch replaces it whole, so a dropped one disappears.
    draft = draft_at(monkeypatch, T1, STALLED_FAILURE, 1)
    draft.ready("InstallSucceeded", "ready")
    after = written(STALLED_FAILURE, draft)
    assert "Stalled" not in conditions(after)


@pytest.mark.parametrize(
    ("current", "changes"),
    [
        ({"a": 1}, {"a": None}),
        ({"a": 1}, {"a": 2, "b": [1, 2]}),
        ({"chart": {"version": "1.0.0"}}, {"chart": {"version": "1.1.0", "appVersion": "2"}}),
        ({"history": [1, 2, 3]}, {"history": [3]}),
    ],
)
def test_the_patch_applied_to_the_current_status_gives_the_desired_one(
    monkeypatch: pytest.MonkeyPatch, current: JSON, changes: JSON
) -> None:
    draft = draft_at(monkeypatch, T1, current, 4)
    for key, value in changes.items():
        draft.set(key, value)
    draft.ready("InstallSucceeded", "ready")
    assert written(current, draft) == json.loads(json.dumps(draft.desired()))


def test_a_key_removed_inside_a_field_is_removed_by_the_patch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What the readiness wait writes, then what the finished upgrade writes.
    waiting = {
        **IN_PROGRESS,
        "resources": {"counts": {"InProgress": 1, "Current": 2}, "notReady": [{"name": "web"}]},
    }
    draft = draft_at(monkeypatch, T1, waiting, 1)
    draft.set("resources", {"counts": {"Current": 3}, "notReady": []})
    draft.ready("UpgradeSucceeded", "ready")
    after = written(waiting, draft)
    assert after["resources"] == {"counts": {"Current": 3}, "notReady": []}
    # And so the next, idle reconcile finds nothing to write.
    again = draft_at(monkeypatch, T1, after, 1)
    again.set("resources", {"counts": {"Current": 3}, "notReady": []})
    again.ready("UpgradeSucceeded", "ready")
    assert again.patch() is None


# --- lastTransitionTime ---------------------------------------------------------------------


def ready_at_t0(message: str = "Release web revision 1 is ready") -> JSON:
    return {
        "observedGeneration": 1,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "InstallSucceeded",
                "message": message,
                "observedGeneration": 1,
                "lastTransitionTime": T0_TEXT,
            }
        ],
    }


def test_a_new_message_with_the_same_status_keeps_the_transition_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    current = ready_at_t0()
    draft = draft_at(monkeypatch, T1, current, 1)
    draft.ready("InstallSucceeded", "Release web revision 1 is ready; 3 objects")
    after = written(current, draft)
    ready = conditions(after)["Ready"]
    assert ready["message"] == "Release web revision 1 is ready; 3 objects"
    assert ready["lastTransitionTime"] == T0_TEXT


def test_a_new_reason_with_the_same_status_keeps_the_transition_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The rule (model.set_condition): the time moves when the status moves, nothing else.
    current = ready_at_t0()
    draft = draft_at(monkeypatch, T1, current, 2)
    draft.ready("UpgradeSucceeded", "Release web revision 2 is ready")
    ready = conditions(written(current, draft))["Ready"]
    assert ready["reason"] == "UpgradeSucceeded"
    assert ready["lastTransitionTime"] == T0_TEXT


def test_a_status_flip_moves_the_transition_time(monkeypatch: pytest.MonkeyPatch) -> None:
    current = ready_at_t0()
    draft = draft_at(monkeypatch, T1, current, 2)
    draft.failed("UpgradeFailed", "timed out", stalled=False)
    after = conditions(written(current, draft))
    assert after["Ready"]["status"] == "False"
    assert after["Ready"]["lastTransitionTime"] == T1_TEXT
    assert after["Reconciling"]["lastTransitionTime"] == T1_TEXT  # appeared now


def test_a_condition_stored_without_a_transition_time_gets_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    current = ready_at_t0()
    del current["conditions"][0]["lastTransitionTime"]
    draft = draft_at(monkeypatch, T1, current, 1)
    draft.ready("InstallSucceeded", "Release web revision 1 is ready")
    assert conditions(written(current, draft))["Ready"]["lastTransitionTime"] == T1_TEXT


def test_a_condition_dropped_and_set_again_gets_a_new_transition_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = draft_at(monkeypatch, T0, IN_PROGRESS, 1)
    first.ready("InstallSucceeded", "ready")
    stored = written(IN_PROGRESS, first)
    assert "Reconciling" not in conditions(stored)

    later = draft_at(monkeypatch, T1, stored, 2)
    later.progressing("Running upgrade")
    assert conditions(written(stored, later))["Reconciling"]["lastTransitionTime"] == T1_TEXT


def test_the_draft_starts_from_the_current_status_and_keeps_its_other_conditions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    current = ready_at_t0()
    current["conditions"].append(
        {
            "type": "Released",
            "status": "True",
            "reason": "InstallSucceeded",
            "message": "revision 1",
            "observedGeneration": 1,
            "lastTransitionTime": T0_TEXT,
        }
    )
    current["release"] = {"revision": 1}
    draft = draft_at(monkeypatch, T1, current, 1)
    assert draft.get("Released") is not None
    draft.progressing("Running upgrade")
    after = written(current, draft)
    assert conditions(after)["Released"] == current["conditions"][1]
    assert after["release"] == {"revision": 1}
    # The caller's dict is not changed by the draft.
    assert status_of(current) == {"Ready": "True", "Released": "True"}
