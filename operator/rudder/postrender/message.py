"""The postrenderer/v1 message of a Wasm plugin, in the form Helm's fix proposes (pure).

Helm 4.2.3 sends `{"manifests": <bytes.Buffer>}`, which encodes as `{}` (helm/helm#31832):
no Wasm post-renderer can work there. The fix proposed upstream sends the manifests as YAML
text, `{"manifests": "<yaml>", "extraArgs": [...]}`, and reads `{"manifests": "<yaml>"}`.
A plugin written against a `[]byte` message reads and writes base64 instead: the input
encoding is the HelmRelease's choice, and output is accepted in either form (a YAML stream
of Kubernetes objects always holds a ':', which base64 never does).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from typing import Final

from rudder.postrender.errors import POST_RENDER_FAILED, PostRenderError

_BASE64: Final = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def input_message(manifests: str, args: Sequence[str], encoding: str = "text") -> bytes:
    text = base64.b64encode(manifests.encode()).decode() if encoding == "base64" else manifests
    return json.dumps({"manifests": text, "extraArgs": list(args)}).encode()


def output_manifests(output: bytes, where: str) -> str:
    """The YAML text of a plugin's output message."""
    try:
        message = json.loads(output)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise PostRenderError(
            POST_RENDER_FAILED, f"{where}: the output is not a JSON message"
        ) from None
    manifests = message.get("manifests") if isinstance(message, dict) else None
    if not isinstance(manifests, str):
        raise PostRenderError(
            POST_RENDER_FAILED,
            f"{where}: the output message has no manifests string "
            '(expected {"manifests": "<yaml>"})',
        )
    if _BASE64.fullmatch(manifests):
        try:
            return base64.b64decode(manifests, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise PostRenderError(
                POST_RENDER_FAILED, f"{where}: the output manifests are not YAML nor base64 YAML"
            ) from None
    return manifests
