"""Why post-rendering failed, in the words status conditions use.

A post-render failure happens before anything is applied or recorded, so the previous
revision and the cluster stay as they were. A plugin that could not be obtained is a
`ChartError` (the artifact's reasons: PluginNotFound, InvalidPlugin, VerificationFailed,
RegistryUnavailable, ...), not one of these.
"""

from __future__ import annotations

from typing import Final

POST_RENDER_FAILED: Final = "PostRenderFailed"  # the plugin's error, or output refused
POST_RENDER_TIMEOUT: Final = "PostRenderTimeout"
POST_RENDER_LIMIT_EXCEEDED: Final = "PostRenderLimitExceeded"  # memory or output size


class PostRenderError(Exception):
    """`message` names the post-renderer (spec.postRenderers[i] and the plugin) and is safe
    for status: it never quotes the manifests, which may hold values from Secrets."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    @property
    def retriable(self) -> bool:
        """A timeout may pass on a less busy machine; the rest repeat on the same input."""
        return self.reason == POST_RENDER_TIMEOUT
