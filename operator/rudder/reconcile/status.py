"""The HelmRelease status a reconcile wants, and the one write (or none) that gets it there.

Conditions follow kstatus: `Reconciling` is present only while True (work in progress or a
retry scheduled), `Stalled` only while True (nothing will change without a change of spec
or of the world), `Ready` always, and `observedGeneration` is written with them. A draft
starts from the current status; `patch()` is None when nothing differs, so an idle
reconcile writes nothing.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
from typing import Any

from rudder.model import (
    Condition,
    conditions_from_status,
    conditions_to_status,
    remove_condition,
    set_condition,
)

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


class StatusDraft:
    def __init__(self, current: dict[str, Any] | None, generation: int) -> None:
        self.current = copy.deepcopy(current or {})
        self.fields: dict[str, Any] = copy.deepcopy(current or {})
        self.generation = generation
        self.conditions: list[Condition] = conditions_from_status(self.current)
        self._now = now()
        self.writing = asyncio.Lock()

    # -- conditions ----------------------------------------------------------------------

    def condition(self, type_: str, status: str, reason: str, message: str) -> None:
        self.conditions = set_condition(
            self.conditions,
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                observed_generation=self.generation,
            ),
            self._now,
        )

    def drop(self, type_: str) -> None:
        self.conditions = remove_condition(self.conditions, type_)

    def get(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def progressing(self, message: str) -> None:
        """Work is under way: Reconciling=True, Ready=Unknown."""
        self.condition(RECONCILING, "True", "Progressing", message)
        self.drop(STALLED)
        self.condition(READY, "Unknown", "Progressing", message)

    def ready(self, reason: str, message: str) -> None:
        self.condition(READY, "True", reason, message)
        self.drop(RECONCILING)
        self.drop(STALLED)

    def failed(self, reason: str, message: str, *, stalled: bool) -> None:
        """Ready=False; Stalled when retrying cannot help, else Reconciling (a retry is due)."""
        self.condition(READY, "False", reason, message)
        if stalled:
            self.condition(STALLED, "True", reason, message)
            self.drop(RECONCILING)
        else:
            self.condition(RECONCILING, "True", "RetryScheduled", f"{reason}: {message}")
            self.drop(STALLED)

    # -- fields --------------------------------------------------------------------------

    def set(self, key: str, value: Any) -> None:
        if value is None:
            self.fields.pop(key, None)
        else:
            self.fields[key] = value

    def desired(self) -> dict[str, Any]:
        desired = dict(self.fields)
        desired["observedGeneration"] = self.generation
        desired["conditions"] = conditions_to_status(self.conditions)
        return desired

    def patch(self, desired: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """A merge patch from `current` to `desired` (default: what the draft wants now), or
        None when the status is already that."""
        if desired is None:
            desired = self.desired()
        if desired == self.current:
            return None
        return merge_patch(self.current, desired)


def merge_patch(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386: what turns `current` into `desired`. Objects merge on the server, so a key
    gone at any depth must be sent as null, not just left out."""
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        old = current.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            if value != old:
                patch[key] = merge_patch(old, value)
        elif value != old or key not in current:
            patch[key] = value
    for key in current:
        if key not in desired:
            patch[key] = None
    return patch
