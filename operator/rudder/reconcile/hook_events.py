"""Helm's hook events (`release.HookEvent`), and how each action words a failed hook."""

from __future__ import annotations

from rudder.release.manifest import HOOK_EVENTS

PRE_INSTALL = "pre-install"
POST_INSTALL = "post-install"
PRE_DELETE = "pre-delete"
POST_DELETE = "post-delete"
PRE_UPGRADE = "pre-upgrade"
POST_UPGRADE = "post-upgrade"
PRE_ROLLBACK = "pre-rollback"
POST_ROLLBACK = "post-rollback"
TEST = "test"
EVENTS = frozenset(HOOK_EVENTS.values())


def action_message(event: str, message: str) -> str:
    """The error an action reports for a failed hook, worded as Helm 4's actions word it.

    install: `failed pre-install: ...`; upgrade: `pre-upgrade hooks failed: ...`; rollback,
    uninstall and test pass the hook's error on unchanged.
    """
    if event in (PRE_INSTALL, POST_INSTALL):
        return f"failed {event}: {message}"
    if event in (PRE_UPGRADE, POST_UPGRADE):
        return f"{event} hooks failed: {message}"
    return message
