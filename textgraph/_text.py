"""Text helpers shared by displays and prompts: one-line previews, clipped texts."""

from __future__ import annotations


def shorten(text: object, limit: int = 80) -> str:
    """`text` on one line (whitespace collapsed), cut to `limit` characters with an ellipsis."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters with an ellipsis, line breaks kept (for prompts)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
