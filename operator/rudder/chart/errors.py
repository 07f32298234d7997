"""Why a chart (or a post-renderer plugin) could not be obtained, in status words.

Every failure of the chart source is a `ChartError` with a reason from this module, a
message that names the chart reference (never credentials), and whether retrying can
help. The reconciler turns a non-retriable error into `Stalled` and backs off on the rest.
"""

from __future__ import annotations

from typing import Final

CHART_NOT_FOUND: Final = "ChartNotFound"
DIGEST_MISMATCH: Final = "DigestMismatch"
INVALID_MEDIA_TYPE: Final = "InvalidMediaType"
VERIFICATION_FAILED: Final = "VerificationFailed"
REGISTRY_UNAVAILABLE: Final = "RegistryUnavailable"
REGISTRY_AUTH_FAILED: Final = "RegistryAuthFailed"
CHART_TOO_LARGE: Final = "ChartTooLarge"
# An HTTP repository's index has the chart, but no version that is (or matches) spec's.
VERSION_NOT_FOUND: Final = "VersionNotFound"
# Not in the registry's hands: the archive itself is unsafe or not a chart.
INVALID_CHART: Final = "InvalidChart"
# The spec names a chart in a way rudder refuses (bad syntax, a tag without allowTag).
INVALID_CHART_REFERENCE: Final = "InvalidChartReference"
# Post-renderer plugins come from registries the same way, with reasons of their own.
PLUGIN_NOT_FOUND: Final = "PluginNotFound"
INVALID_PLUGIN: Final = "InvalidPlugin"  # not a postrenderer/v1 extism/v1 plugin, or unsafe

# Retrying cannot change the outcome of these without a change of spec or of the content.
_NOT_RETRIABLE: Final = frozenset(
    {
        DIGEST_MISMATCH,
        INVALID_MEDIA_TYPE,
        VERIFICATION_FAILED,
        CHART_TOO_LARGE,
        INVALID_CHART,
        INVALID_CHART_REFERENCE,
        INVALID_PLUGIN,
    }
)


class ChartError(Exception):
    """The chart could not be pulled, verified or loaded.

    `reason` is a CamelCase condition reason, `message` names the chart reference and is
    safe to show in status, events and logs, `retriable` says whether backing off and
    trying again can succeed without a change of spec.
    """

    def __init__(self, reason: str, message: str, retriable: bool | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retriable = reason not in _NOT_RETRIABLE if retriable is None else retriable

    def __repr__(self) -> str:
        return f"ChartError({self.reason!r}, {self.message!r}, retriable={self.retriable})"
