"""One module per action; `ACTIONS` maps each decision to the coroutine that carries it out.

An action returns the queue's `Outcome`, except UNLOCK, which changes the records and lets
the reconcile decide again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from rudder.reconcile.actions import finalize, release, remediate, steady
from rudder.reconcile.context import Context, Services
from rudder.reconcile.decide import Action
from rudder.reconcile.manager import Outcome

Run = Callable[[Services, Context], Awaitable[Outcome]]

ACTIONS: dict[Action, Run] = {
    Action.FORGET: finalize.forget,
    Action.LET_GO: finalize.let_go,
    Action.FINALIZE: finalize.finalize,
    Action.BLOCKED: steady.blocked,
    Action.SUSPENDED: steady.suspended,
    Action.REFUSE: steady.refuse,
    Action.WAIT: steady.wait,
    Action.STALL: steady.stall,
    Action.NONE: steady.in_sync,
    Action.INSTALL: release.install_or_upgrade,
    Action.UPGRADE: release.install_or_upgrade,
    Action.ROLLBACK: remediate.remediate,
    Action.UNINSTALL: remediate.remediate,
}
