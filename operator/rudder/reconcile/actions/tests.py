"""`helm test` for a new revision: run its test hooks as the release's identity, record
their last_run in that revision, and say how it went."""

from __future__ import annotations

import dataclasses

from rudder.observe import metrics
from rudder.reconcile.context import Context, Services
from rudder.reconcile.deploy import DeployResult
from rudder.reconcile.hook_runner import HookFailed
from rudder.release.codec import Hook

TEST = "test"


async def run_tests(services: Services, ctx: Context, result: DeployResult) -> tuple[bool, str]:
    tests = [hook for hook in result.release.hooks if TEST in hook.events]
    if not tests:
        return True, "the chart has no tests"
    store = ctx.clients.store
    record = result.record

    async def save(hooks: list[Hook]) -> None:
        nonlocal record
        record = await store.update(record, dataclasses.replace(result.release, hooks=hooks))

    try:
        hooks = await services.deployer.hook_runner.run(
            result.release.hooks,
            TEST,
            namespace=ctx.identity.target_namespace,
            release_name=ctx.identity.release_name,
            release_namespace=ctx.identity.storage_namespace,
            timeout=ctx.spec.test.timeout,
            applier=ctx.clients.applier,
            record=save,
        )
    except HookFailed as failed:
        await save(failed.hooks)
        message = f"test {failed.hook.name} failed: {failed.message}"
        metrics.record_action(TEST, "failure")
        await services.events.warning(ctx.target.body, "TestFailed", message)
        return False, message
    await save(hooks)
    message = f"{len(tests)} test(s) passed for revision {result.release.version}"
    metrics.record_action(TEST, "success")
    await services.events.normal(ctx.target.body, "TestSucceeded", message)
    return True, message
