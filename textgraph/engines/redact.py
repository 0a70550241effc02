"""Keep secrets out of messages, logs, traces and reprs."""

from __future__ import annotations

import re

_KEY_LIKE = re.compile(r"\b(sk-(?:ant-|proj-)?)[A-Za-z0-9_\-*]{6,}")


def redact(text: str, *secrets: str | None) -> str:
    """Replace each secret, and anything shaped like an API key, with ***."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _KEY_LIKE.sub(lambda m: f"{m.group(1)}***", text)
