"""Hooks as Helm 4 runs them: order, delete policies, completion judgement, and the
sequence of cluster steps (with a recording stand-in for the cluster; the real API server
is in e2e/test_hooks_runner.py)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from rudder.kube.discovery import Resource
from rudder.kube.ssa import Applier, ObjectRef
from rudder.reconcile.hook_events import action_message
from rudder.reconcile.hook_runner import HookFailed, HookRunner, execution_order, has_delete_policy
from rudder.reconcile.hook_target import (
    HookError,
    HookObject,
    job_status,
    pod_status,
    status_reader,
)
from rudder.release.codec import GoTime, Hook, HookExecution
from rudder.release.manifest import sort_manifests


def hook(
    name: str,
    *,
    kind: str = "Job",
    weight: int = 0,
    events: tuple[str, ...] = ("pre-install",),
    policies: tuple[str, ...] = (),
) -> Hook:
    return Hook(
        name=name,
        kind=kind,
        path=f"chart/templates/{name}.yaml",
        manifest=f"apiVersion: v1\nkind: {kind}\nmetadata:\n  name: {name}\n",
        events=list(events),
        weight=weight,
        delete_policies=list(policies),
    )


# --- order ----------------------------------------------------------------------------------


def test_order_is_weight_then_name_for_the_event_only() -> None:
    hooks = [
        hook("b", weight=1),
        hook("other-event", weight=-9, events=("post-install",)),
        hook("c", weight=-5),
        hook("a", weight=1),
        hook("z", weight=0),
    ]
    assert [hooks[i].name for i in execution_order(hooks, "pre-install")] == ["c", "z", "a", "b"]
    assert execution_order(hooks, "pre-upgrade") == []


def test_names_compare_as_go_strings() -> None:
    # Go compares bytes: "B" < "a" < "a-b" < "ab".
    hooks = [hook("ab"), hook("a-b"), hook("a"), hook("B")]
    assert [hooks[i].name for i in execution_order(hooks, "pre-install")] == ["B", "a", "a-b", "ab"]


def test_equal_weight_and_name_keep_the_sorters_kind_order() -> None:
    rendered = {
        "c/templates/hooks.yaml": "\n---\n".join(
            f"apiVersion: v1\nkind: {kind}\nmetadata:\n  name: same\n"
            f"  annotations:\n    helm.sh/hook: pre-install"
            for kind in ("Job", "ConfigMap", "ServiceAccount", "Widget")
        )
    }
    hooks, _ = sort_manifests(rendered)
    ordered = [hooks[i].kind for i in execution_order(hooks, "pre-install")]
    assert ordered == ["ServiceAccount", "ConfigMap", "Job", "Widget"]


def test_a_hook_listing_its_event_twice_runs_twice() -> None:
    # `helm.sh/hook: test,test-success` records ["test", "test"]; Helm runs it twice.
    hooks = [hook("t", events=("test", "test")), hook("u", events=("test",), weight=1)]
    assert execution_order(hooks, "test") == [0, 0, 1]


def test_crds_are_never_deleted_by_policy() -> None:
    assert has_delete_policy(hook("j", policies=("hook-succeeded",)), "hook-succeeded")
    assert not has_delete_policy(hook("j", policies=("hook-failed",)), "hook-succeeded")
    crd = hook("c", kind="CustomResourceDefinition", policies=("before-hook-creation",))
    assert not has_delete_policy(crd, "before-hook-creation")


# --- completion judgement -------------------------------------------------------------------


def job(conditions: list[dict[str, str]], **status: Any) -> dict[str, Any]:
    return {
        "spec": {"completions": 2, "parallelism": 1},
        "status": {**status, "conditions": conditions},
    }


def test_a_started_job_is_not_done() -> None:
    started = {"spec": {}, "status": {"active": 1, "startTime": "2025-01-01T00:00:00Z"}}
    assert job_status(started).status == "InProgress"
    assert not job_status(started).done
    assert job_status({}).message == "Job in progress"


def test_job_complete_and_failed_conditions() -> None:
    complete = job_status(job([{"type": "Complete", "status": "True"}], succeeded=2))
    assert (complete.status, complete.message) == ("Current", "Job Completed. succeeded: 2/2")
    assert complete.done
    assert not complete.failed
    failed = job_status(job([{"type": "Failed", "status": "True"}], failed=1))
    assert (failed.status, failed.message) == ("Failed", "Job Failed. failed: 1/2")
    assert failed.done
    assert failed.failed


def test_job_conditions_that_are_not_true_do_not_count() -> None:
    status = job_status(
        job([{"type": "Failed", "status": "False"}, {"type": "Complete", "status": "Unknown"}])
    )
    assert status.status == "InProgress"
    # Newer job controllers add these before the terminal condition; Helm ignores them.
    interim = job([{"type": "SuccessCriteriaMet", "status": "True"}])
    assert job_status(interim).status == "InProgress"


def test_first_true_terminal_condition_wins() -> None:
    both = job([{"type": "Failed", "status": "True"}, {"type": "Complete", "status": "True"}])
    assert job_status(both).status == "Failed"


def test_job_completions_default_to_parallelism_then_one() -> None:
    done = [{"type": "Complete", "status": "True"}]
    assert job_status({"status": {"conditions": done, "succeeded": 1}}).message.endswith("1/1")
    parallel = {"spec": {"parallelism": 3}, "status": {"conditions": done, "succeeded": 3}}
    assert job_status(parallel).message.endswith("3/3")
    nulls = {"spec": {"completions": None}, "status": {"conditions": done}}
    assert job_status(nulls).message == "Job Completed. succeeded: 0/1"


def test_pod_is_judged_by_phase_only() -> None:
    running_ready = {
        "metadata": {"name": "p"},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    assert pod_status(running_ready).status == "InProgress"
    succeeded = pod_status({"metadata": {"name": "p"}, "status": {"phase": "Succeeded"}})
    assert (succeeded.status, succeeded.message) == ("Current", "pod p succeeded")
    failed = pod_status({"metadata": {"name": "p"}, "status": {"phase": "Failed"}})
    assert (failed.status, failed.message, failed.failed) == ("Failed", "pod p failed", True)


def test_only_batch_jobs_and_core_pods_are_waited_for() -> None:
    assert status_reader("batch", "Job") is job_status
    assert status_reader("", "Pod") is pod_status
    assert status_reader("", "ConfigMap") is None
    assert status_reader("example.com", "Job") is None


def test_action_wording() -> None:
    assert action_message("pre-install", "x") == "failed pre-install: x"
    assert action_message("post-install", "x") == "failed post-install: x"
    assert action_message("pre-upgrade", "x") == "pre-upgrade hooks failed: x"
    assert action_message("post-upgrade", "x") == "post-upgrade hooks failed: x"
    for event in ("pre-rollback", "post-rollback", "pre-delete", "post-delete", "test"):
        assert action_message(event, "x") == "x"


# --- the sequence, against a recording stand-in ---------------------------------------------


@dataclass
class FakeTarget:
    """Records what the runner asks of the cluster; fails where told to."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    fail_wait: set[str] = field(default_factory=set)
    fail_apply: set[str] = field(default_factory=set)
    fail_delete: set[str] = field(default_factory=set)
    fail_resolve: set[str] = field(default_factory=set)
    seconds: list[float] = field(default_factory=list)

    async def resolve(self, hook: Hook) -> HookObject:
        if hook.name in self.fail_resolve:
            raise HookError("no matches for kind")
        ref = ObjectRef("v1", hook.kind, "ns", hook.name)
        return HookObject(
            {"metadata": {"name": hook.name}}, ref, Resource("", "v1", hook.kind, "x", True)
        )

    async def apply(self, target: HookObject) -> None:
        self.calls.append(("apply", target.ref.name))
        if target.ref.name in self.fail_apply:
            raise HookError("admission webhook denied the request")

    async def delete(self, target: HookObject, seconds: float) -> None:
        self.calls.append(("delete", target.ref.name))
        self.seconds.append(seconds)
        if target.ref.name in self.fail_delete:
            raise HookError("forbidden")

    async def wait(self, target: HookObject, seconds: float) -> None:
        self.calls.append(("wait", target.ref.name))
        self.seconds.append(seconds)
        if target.ref.name in self.fail_wait:
            raise HookError(f"resource Job/ns/{target.ref.name} not ready. status: Failed")


class Clock:
    def __init__(self) -> None:
        self.ticks = 0

    def __call__(self) -> GoTime:
        self.ticks += 1
        return GoTime(datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=self.ticks))


APPLIER = cast(Applier, object())


async def run(
    fake: FakeTarget,
    hooks: list[Hook],
    event: str = "pre-install",
    *,
    limit: float = 60,
    recorded: list[list[Hook]] | None = None,
) -> list[Hook]:
    async def record(snapshot: list[Hook]) -> None:
        if recorded is not None:
            recorded.append(snapshot)

    runner = HookRunner(lambda applier, namespace: fake, clock=Clock())
    return await runner.run(
        hooks,
        event,
        namespace="ns",
        release_name="r",
        release_namespace="ns",
        timeout=limit,
        applier=APPLIER,
        record=record,
    )


async def test_each_hook_is_replaced_applied_and_waited_in_order() -> None:
    fake = FakeTarget()
    hooks = [hook("second", weight=2), hook("first", weight=1), hook("elsewhere", events=("test",))]
    result = await run(fake, hooks)
    assert fake.calls == [
        ("delete", "first"),
        ("apply", "first"),
        ("wait", "first"),
        ("delete", "second"),
        ("apply", "second"),
        ("wait", "second"),
    ]
    assert [h.name for h in result] == ["second", "first", "elsewhere"]  # given order kept
    second, first, elsewhere = result
    assert first.delete_policies == second.delete_policies == ["before-hook-creation"]
    assert first.last_run.phase == second.last_run.phase == "Succeeded"
    times = [first.last_run.started_at, first.last_run.completed_at, second.last_run.started_at]
    assert None not in times
    assert times == sorted(t for t in times if t is not None)
    # A hook of another event is left exactly as it was: no default policy, no run.
    assert elsewhere == hooks[2]


async def test_progress_is_recorded_as_each_hook_starts() -> None:
    recorded: list[list[Hook]] = []
    await run(FakeTarget(), [hook("a", weight=1), hook("b", weight=2)], recorded=recorded)
    assert [[h.last_run.phase for h in snapshot] for snapshot in recorded] == [
        ["Running", ""],
        ["Succeeded", "Running"],
    ]


async def test_a_recording_failure_only_warns() -> None:
    async def broken(_: list[Hook]) -> None:
        raise RuntimeError("etcd is down")

    runner = HookRunner(lambda applier, namespace: FakeTarget(), clock=Clock())
    result = await runner.run(
        [hook("a")],
        "pre-install",
        namespace="ns",
        release_name="r",
        release_namespace="ns",
        timeout=5,
        applier=APPLIER,
        record=broken,
    )
    assert result[0].last_run.phase == "Succeeded"


async def test_hook_succeeded_deletes_after_all_ran_last_first() -> None:
    fake = FakeTarget()
    hooks = [
        hook("a", weight=1, policies=("hook-succeeded",)),
        hook("b", weight=2, policies=("hook-succeeded", "before-hook-creation")),
        hook("c", weight=3, policies=("hook-failed",)),
    ]
    await run(fake, hooks)
    assert fake.calls == [
        ("apply", "a"),
        ("wait", "a"),
        ("delete", "b"),
        ("apply", "b"),
        ("wait", "b"),
        ("apply", "c"),
        ("wait", "c"),
        ("delete", "b"),
        ("delete", "a"),
    ]


async def test_a_failed_hook_stops_the_sequence_and_cleans_up_by_policy() -> None:
    fake = FakeTarget(fail_wait={"b"})
    hooks = [
        hook("a", weight=1, policies=("hook-succeeded",)),
        hook("keep", weight=2, policies=("hook-failed",)),
        hook("b", weight=3, policies=("hook-failed",)),
        hook("never", weight=4),
    ]
    with pytest.raises(HookFailed) as caught:
        await run(fake, hooks)
    failure = caught.value
    assert fake.calls == [
        ("apply", "a"),
        ("wait", "a"),
        ("apply", "keep"),
        ("wait", "keep"),
        ("apply", "b"),
        ("wait", "b"),
        ("delete", "b"),  # its own hook-failed
        ("delete", "a"),  # earlier hooks' hook-succeeded, in run order
    ]
    assert failure.hook.name == "b"
    assert failure.event == "pre-install"
    assert failure.message == "resource Job/ns/b not ready. status: Failed"
    phases = {h.name: h.last_run.phase for h in failure.hooks}
    assert phases == {"a": "Succeeded", "keep": "Succeeded", "b": "Failed", "never": ""}
    assert failure.hook.last_run.completed_at is not None
    assert failure.hooks[3] == hooks[3]  # not reached: not even the default policy


async def test_cleanup_errors_after_a_failure_do_not_hide_it() -> None:
    fake = FakeTarget(fail_wait={"b"}, fail_delete={"a", "b"})
    hooks = [hook("a", policies=("hook-succeeded",)), hook("b", policies=("hook-failed",))]
    with pytest.raises(HookFailed) as caught:
        await run(fake, hooks)
    assert caught.value.hook.name == "b"
    assert "not ready" in caught.value.message


async def test_a_hook_the_server_refuses_fails_without_cleanup() -> None:
    fake = FakeTarget(fail_apply={"b"})
    hooks = [
        hook("a", policies=("hook-succeeded",)),
        hook("b", weight=1, policies=("hook-failed",)),
    ]
    with pytest.raises(HookFailed) as caught:
        await run(fake, hooks)
    assert caught.value.message == (
        "warning: Hook pre-install chart/templates/b.yaml failed: "
        "admission webhook denied the request"
    )
    assert caught.value.hook.last_run.phase == "Failed"
    assert ("delete", "a") not in fake.calls
    assert ("delete", "b") not in fake.calls
    assert ("wait", "b") not in fake.calls


async def test_a_failed_before_hook_creation_delete_fails_before_the_run() -> None:
    previous = HookExecution(phase="Succeeded")
    fake = FakeTarget(fail_delete={"a"})
    with pytest.raises(HookFailed) as caught:
        await run(fake, [replace(hook("a"), last_run=previous)])
    assert caught.value.message == "forbidden"
    assert caught.value.hook.last_run == previous  # never started this time
    assert fake.calls == [("delete", "a")]


async def test_an_unknown_kind_fails_the_hook_before_it_starts() -> None:
    fake = FakeTarget(fail_resolve={"w"})
    with pytest.raises(HookFailed) as caught:
        await run(fake, [hook("w", kind="Widget", policies=("hook-succeeded",))])
    assert caught.value.message == (
        "unable to build kubernetes object for pre-install hook chart/templates/w.yaml: "
        "no matches for kind"
    )
    assert caught.value.hook.last_run.phase == ""
    assert fake.calls == []


async def test_a_failing_hook_succeeded_delete_fails_the_action() -> None:
    fake = FakeTarget(fail_delete={"a"})
    with pytest.raises(HookFailed) as caught:
        await run(fake, [hook("a", policies=("hook-succeeded",))])
    assert caught.value.hook.last_run.phase == "Succeeded"
    assert caught.value.message == "forbidden"


async def test_each_wait_gets_the_whole_timeout_and_zero_means_thirty_seconds() -> None:
    fake = FakeTarget()
    await run(fake, [hook("a"), hook("b")], limit=7)
    assert fake.seconds == [7, 7, 7, 7]
    fake = FakeTarget()
    await run(fake, [hook("a")], limit=0)
    assert fake.seconds == [30, 30]


async def test_unknown_events_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown hook event"):
        await run(FakeTarget(), [hook("a")], event="test-success")
